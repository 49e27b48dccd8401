"""serve's warm MCP connections, lent to its job processes over a unix socket.

Without this every job process connected its agent's MCP servers itself: one
server process per (job process x agent), and a call landing on a process that
had warmed another agent paid the handshake on the caller's time. Now the serve
process keeps one connection per distinct server block (``McpPool``), and a job
process reaches it through the ``Gateway``: ``GatewayPool.acquire`` is one local
request (the tools of every server, as listed), a tool call one more. A server
block with ``shared: false`` is never lent: each call connects its own.

The socket lives in serve's private state folder (0700) and every request carries
a per-serve token (``gateway.json``, 0600): nothing but serve's own job processes
can use the connections, whose headers and environment hold secrets.

A key the pool no longer holds (the spec changed and the old server block was
closed while a call of the older generation still runs) is answered 404; the
job then connects that block itself, so a call keeps the generation it started
with, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets as token_source
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .connection import ConnState, McpUnavailable
from .pins import ToolPins

if TYPE_CHECKING:
    from aiohttp import web
    from mcp.types import CallToolResult

    from ..spec.loader import LoadedSpec
    from .connection import McpConnection
    from .pool import Acquired, McpPool

log = logging.getLogger("voice_runtime.mcp")

ADDRESS_FILE = "gateway.json"
UP_WAIT_S = 30.0  # a long poll for a server to come back lasts at most this
SOCKET_PATH_MAX = 100  # bytes; a unix socket path holds at most 107


def _tool_dumps(conn: McpConnection) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in conn.tools]


def _describe(conn: McpConnection) -> dict[str, Any]:
    return {"known": True, "state": conn.state.value, "error": conn.error, "tools": _tool_dumps(conn),
            "pinned": conn.pins.pinned, "changed": conn.pins.changed}


class Gateway:
    """The serve side: a small aiohttp app on a unix socket over serve's pool.
    ``spec_of(agent)`` is the agent's accepted spec now, so a job of a new spec
    can have its servers connected on first use (serve warms them on reload)."""

    def __init__(self, pool: McpPool, state_dir: Path, spec_of: Callable[[str], LoadedSpec | None]) -> None:
        self.pool = pool
        self.state_dir = state_dir
        self.spec_of = spec_of
        self.token = token_source.token_urlsafe(32)
        self._runner: web.AppRunner | None = None
        self._socket_dir: str | None = None
        self.path = ""

    async def start(self) -> None:
        from aiohttp import web

        path = str(self.state_dir / "mcp.sock")
        if len(os.fsencode(path)) > SOCKET_PATH_MAX:  # a long TMPDIR: a short private folder instead
            self._socket_dir = tempfile.mkdtemp(prefix="vr-", dir="/tmp")
            path = os.path.join(self._socket_dir, "mcp.sock")
        app = web.Application(middlewares=[self._auth()], client_max_size=64 * 1024 * 1024)
        app.add_routes([web.post("/v1/acquire", self._acquire), web.post("/v1/call", self._call),
                        web.get("/v1/up/{key}", self._up)])
        # handler_cancellation: a job that gives up on a call (the caller interrupted,
        # the process ended) closes its request, which cancels the call to the server
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, path).start()
        os.chmod(path, 0o600)
        self.path = path
        address = self.state_dir / ADDRESS_FILE
        fd = os.open(address, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"socket": path, "token": self.token}, fh)

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._socket_dir is not None:
            import shutil

            shutil.rmtree(self._socket_dir, ignore_errors=True)

    # -- handlers ------------------------------------------------------------------

    def _auth(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def check(request: web.Request, handler: Any) -> Any:
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.json_response({"error": "not one of this serve's job processes"}, status=401)
            return await handler(request)

        return check

    async def _acquire(self, request: web.Request) -> web.Response:
        """{agent, servers: {name: key}} -> each server's state and tools; keys the
        pool lacks are connected first if they belong to the agent's current spec."""
        from aiohttp import web

        body = await _json_object(request)
        wanted = body.get("servers")
        if not isinstance(wanted, dict) or not all(isinstance(v, str) for v in wanted.values()):
            return web.json_response({"error": '"servers" must map server names to keys'}, status=400)
        conns = self.pool.by_key()
        if any(key not in conns for key in wanted.values()):
            loaded = self.spec_of(str(body.get("agent", "")))
            if loaded is not None:
                await self.pool.acquire(loaded)
                conns = self.pool.by_key()
        else:
            await self.pool.started(wanted.values())
        servers = {name: _describe(conns[key]) if key in conns else {"known": False} for name, key in wanted.items()}
        return web.json_response({"servers": servers})

    async def _call(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = await _json_object(request)
        tool, arguments = body.get("tool"), body.get("arguments") or {}
        if not isinstance(tool, str) or not isinstance(arguments, dict):
            return web.json_response({"error": '"tool" must be a name and "arguments" an object'}, status=400)
        conn = self.pool.by_key().get(str(body.get("key", "")))
        if conn is None:
            return web.json_response({"unknown": True}, status=404)
        try:
            result = await conn.call(tool, arguments)
        except McpUnavailable as exc:
            return web.json_response({"unavailable": str(exc)}, status=503)
        except asyncio.TimeoutError:
            return web.json_response({"timeout": True}, status=504)
        except Exception as exc:  # noqa: BLE001 - the job reports it as the tool's failure
            return web.json_response({"error": f"{type(exc).__name__}: {conn.redact(str(exc))}"}, status=500)
        return web.json_response({"result": result.model_dump(mode="json", by_alias=True, exclude_none=True)})

    async def _up(self, request: web.Request) -> web.Response:
        """A long poll: answers once the server is up (with its tools), or 204."""
        from aiohttp import web

        conn = self.pool.by_key().get(request.match_info["key"])
        if conn is None:
            return web.json_response({"unknown": True}, status=404)
        if conn.state is not ConnState.UP:
            came = asyncio.Event()
            loop = asyncio.get_running_loop()

            def back(_: Any) -> None:
                loop.call_soon_threadsafe(came.set)

            conn.on_up.append(back)
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(came.wait(), timeout=UP_WAIT_S)
            finally:
                with contextlib.suppress(ValueError):
                    conn.on_up.remove(back)
        if conn.state is not ConnState.UP:
            return web.Response(status=204)
        return web.json_response(_describe(conn))


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# -- the job side ----------------------------------------------------------------------


@dataclass
class _Client:
    """One job's HTTP client to the gateway (made in the job's own event loop)."""

    socket: str
    token: str
    _session: Any = None

    def session(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.socket), base_url="http://serve",
                headers={"Authorization": f"Bearer {self.token}"}, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.session().post(path, json=body) as response:
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                return response.status, {"error": f"serve's gateway answered {response.status}: "
                                                  f"{(await response.text())[:200]}"}

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class RemoteConnection:
    """A server connection held by serve, as ``McpConnection`` looks to a session:
    name, spec block, state, tools, pins, ``call`` and ``on_up``."""

    def __init__(self, name: str, server: Any, key: str, info: dict[str, Any], client: _Client,
                 fallback: Callable[[str], Any]) -> None:
        from mcp.types import Tool

        self.name, self.server, self.key = name, server, key
        self.state = ConnState(info["state"])
        self.error: str | None = info.get("error")
        self.tools = [Tool.model_validate(t) for t in info.get("tools") or []]
        self.pins = ToolPins(name, pin_tools=server.pin_tools)
        self.pins.pinned, self.pins.changed = info.get("pinned"), list(info.get("changed") or [])
        self.on_up: list[Callable[[Any], None]] = []
        self._client = client
        self._fallback = fallback  # connects this block in the job when serve no longer holds it
        self._local: McpConnection | None = None
        self._watch: asyncio.Task[None] | None = None
        if self.state is not ConnState.UP:
            self._watch = asyncio.ensure_future(self._wait_up())

    @property
    def transport(self) -> str:
        """How serve reaches the server (``stdio``, ``http``, ``sse``): the hop to
        serve is a detail of this process."""
        from .transports import transport_name

        return transport_name(self.server)

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        from mcp.types import CallToolResult

        if self._local is not None:
            return await self._local.call(tool, arguments)
        status, body = await self._client.post("/v1/call", {"key": self.key, "tool": tool, "arguments": arguments})
        if status == 200:
            return CallToolResult.model_validate(body["result"])
        if status == 503:
            self.state, self.error = ConnState.DOWN, body.get("unavailable")
            if self._watch is None or self._watch.done():
                self._watch = asyncio.ensure_future(self._wait_up())
            raise McpUnavailable(self.error or "not connected")
        if status == 504:
            raise asyncio.TimeoutError
        if status == 404:  # serve closed this block (a newer generation): the call keeps its own
            log.info("MCP server %s: serve no longer holds this version of it; connecting it for this call", self.name)
            self._local = await self._fallback(self.name)
            return await self._local.call(tool, arguments)
        raise RuntimeError(body.get("error") or f"gateway answered {status}")

    async def _wait_up(self) -> None:
        """While the server is down, wait (long poll) for serve to reconnect it,
        then hand the new tools to the session as a reconnect would."""
        from mcp.types import Tool

        while self.state is not ConnState.UP:
            try:
                async with self._client.session().get(f"/v1/up/{self.key}") as response:
                    if response.status == 404:
                        return
                    if response.status != 200:
                        continue
                    info = await response.json()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - serve is going away with this job
                return
            self.tools = [Tool.model_validate(t) for t in info.get("tools") or []]
            self.pins.pinned, self.pins.changed = info.get("pinned"), list(info.get("changed") or [])
            self.state, self.error = ConnState.UP, None
            for callback in list(self.on_up):
                callback(self)

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._local is not None:
            await self._local.aclose()


@dataclass
class GatewayPool:
    """What a job process uses instead of a pool of its own: serve's connections
    through the gateway, and its own connections for ``shared: false`` blocks and
    for blocks serve no longer holds. Closed with the job."""

    client: _Client
    local: McpPool = field(default_factory=lambda: _local_pool())
    remote: list[RemoteConnection] = field(default_factory=list)

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> GatewayPool | None:
        try:
            address = json.loads((state_dir / ADDRESS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls(_Client(address["socket"], address["token"]))

    async def acquire(self, loaded: LoadedSpec) -> Acquired:
        from . import pins
        from .pool import Acquired, server_key

        servers = loaded.spec.mcp_servers
        shared = {name: server_key(loaded, name) for name, s in servers.items() if s.shared}
        infos: dict[str, Any] = {}
        if shared:
            try:
                status, body = await self.client.post("/v1/acquire", {"agent": loaded.name, "servers": shared})
            except (OSError, asyncio.TimeoutError, __import__("aiohttp").ClientError) as exc:
                status, body = 0, {"error": str(exc)}
            infos = body.get("servers", {}) if status == 200 else {}
            if status != 200:  # the call still gets its tools: it connects the servers itself
                log.warning("agent %s: serve's MCP connections are out of reach (%s); this call connects its own",
                            loaded.name, body.get("error") or status)
        own = [name for name in servers if not (infos.get(name) or {}).get("known")]
        acquired = Acquired({}, lock=pins.read_tool_lock(loaded) if servers else None)
        if own:
            mine = await self.local.acquire(loaded, only=set(own))
            acquired.connections.update(mine.connections)
            acquired.unavailable.update(mine.unavailable)

        async def fallback(name: str) -> McpConnection:
            return (await self.local.acquire(loaded, only={name})).connections[name]

        for name, key in shared.items():
            info = infos.get(name) or {}
            if not info.get("known"):
                continue
            conn = RemoteConnection(name, servers[name], key, info, self.client, fallback)
            self.remote.append(conn)
            acquired.connections[name] = conn  # type: ignore[assignment]
            if conn.state is not ConnState.UP:
                acquired.unavailable[name] = conn.error or conn.state.value
        # in the spec's order, as a pool of its own would give them
        acquired.connections = {name: acquired.connections[name] for name in servers if name in acquired.connections}
        return acquired

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.remote), return_exceptions=True)
        await self.local.aclose()
        await self.client.aclose()


def _local_pool() -> McpPool:
    from .pool import McpPool

    return McpPool()
