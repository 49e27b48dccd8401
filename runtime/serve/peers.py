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


def is_loopback(request: web.Request) -> bool:
    ip = peer_ip(request)
    return ip is not None and ip.is_loopback
