"""Who is at the other end of an operator-port request: the peer's address, as the
checks of POST /simulate and browser calls (``--simulate-from-anywhere``,
``--talk-from``) need it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web


def peer_ip(request: web.Request) -> Any:
    """The peer's address (an ipaddress object; IPv4-mapped IPv6 as IPv4), or None."""
    import ipaddress

    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if not peer:
        return None
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def bearer_token(request: web.Request, query: bool = False) -> str:
    """The token of ``Authorization: Bearer <token>`` (or, with ``query``, of
    ``?token=``, which is how a browser page carries it); empty when none is given."""
    # RFC 7235: the scheme is case-insensitive ("bearer", "BEARER"); spaces or a tab follow it
    parts = request.headers.get("Authorization", "").split(None, 1)
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip()
    return request.query.get("token", "") if query else ""


def is_loopback(request: web.Request) -> bool:
    ip = peer_ip(request)
    return ip is not None and ip.is_loopback


def cross_site(request: web.Request) -> str | None:
    """Why this request looks like another site's page talking to serve through the
    caller's browser; None when it does not.

    A browser lets any page it shows send requests to 127.0.0.1 (a POST with a
    "simple" body needs no preflight), and DNS rebinding lets a page read the answers
    under its own host name. So: a loopback peer must name this machine in ``Host``
    (an address, ``localhost`` or the machine's own name), and a request that changes
    something (any method but GET/HEAD, or a WebSocket upgrade) must not carry an
    ``Origin`` other than serve's own. Tools that are not browsers (curl, probes,
    Prometheus) send no ``Origin`` and are unaffected."""
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    host = request.headers.get("Host", "")
    name = urlsplit(f"//{host}").hostname or ""
    if is_loopback(request) and name:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            own = {"localhost", socket.gethostname().lower()}
            if name not in own and not name.endswith(".localhost"):
                return (f"Host {name[:100]!r} is not a name of this machine: serve answers a caller on this "
                        "machine only by address, localhost or the machine's own name (a web page that "
                        "renamed itself to reach serve is refused)")
    changes = request.method not in ("GET", "HEAD") or request.headers.get("Upgrade", "").lower() == "websocket"
    origin = request.headers.get("Origin")
    if changes and origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != host.lower():
            return (f"a request from the page of another site (Origin {origin[:100]!r}) is refused: only serve's "
                    "own pages, or clients that are not browsers, may start calls")
    return None
