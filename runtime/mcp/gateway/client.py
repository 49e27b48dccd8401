"""The job side of the gateway: one connection to serve's socket per job
(``_Client``), serve's server connections as a session sees them
(``RemoteConnection``), and the pool a job process uses instead of its own
(``GatewayPool``: serve's connections, and its own for ``shared: false`` blocks and
blocks serve no longer holds)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .. import elicitation, progress
from ..connection import CallTimeout, ConnState, McpUnavailable
from ..listing import Rejected
from ..pins import ToolPins
from .wire import ADDRESS_FILE, CALL_MARGIN_S, MAX_LINE_BYTES, Status, encode

if TYPE_CHECKING:
    from mcp.types import CallToolResult

    from ..elicitation import Elicitor

    from ...spec.loader import LoadedSpec
    from ..connection import McpConnection
    from ..pool import Acquired, McpPool

log = logging.getLogger("voice_runtime.mcp")


class GatewayRefused(McpUnavailable):
    """Serve refused a job's request: the server block or tool is not its agent's to
    use. The call reports the tool as unavailable."""


def _rejected(info: dict[str, Any]) -> list[Rejected]:
    return [Rejected(str(r.get("name", "")), str(r.get("reason", ""))) for r in info.get("rejected") or []
            if isinstance(r, dict)]


def _capabilities(info: dict[str, Any]) -> Any:
    from mcp.types import ServerCapabilities

    raw = info.get("capabilities")
    try:
        return ServerCapabilities.model_validate(raw) if isinstance(raw, dict) else None
    except ValueError:
        return None


@dataclass
class _Client:
    """One job's connection to the gateway (opened in the job's own event loop)."""

    socket: str
    token: str
    job_id: str  # serve checks it is the job it launched on this process
    _writer: asyncio.StreamWriter | None = None
    _reader_task: asyncio.Task[None] | None = None
    _waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _progress: dict[int, Callable[[str], None]] = field(default_factory=dict)  # request id -> its listener
    _elicitors: dict[int, Elicitor] = field(default_factory=dict)  # call id -> who answers its server's question
    _asked: dict[int, asyncio.Task[None]] = field(default_factory=dict)  # call id -> its question being answered
    _ids: Any = field(default_factory=lambda: __import__("itertools").count(1))
    _lock: asyncio.Lock | None = None

    async def _connect(self) -> asyncio.StreamWriter:
        if self._writer is not None and not self._writer.is_closing():
            return self._writer
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                reader, writer = await asyncio.open_unix_connection(self.socket, limit=MAX_LINE_BYTES)
                writer.write(f"{self.token} {self.job_id}\n".encode())
                self._writer = writer
                self._reader_task = asyncio.ensure_future(self._read(reader))
        assert self._writer is not None
        return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        error: BaseException = ConnectionError("serve's gateway closed the connection")
        try:
            while line := await reader.readline():
                message = json.loads(line)
                if message.get("op") == "progress":  # a line about a call still running: not its answer
                    listener = self._progress.get(message.get("id"))
                    if listener is not None and isinstance(message.get("message"), str):
                        listener(message["message"])
                    continue
                if message.get("op") == "question":  # the server asks this call's caller: answered beside the reading
                    self._put(message.get("id"), message.get("question"))
                    continue
                if message.get("op") == "unasked":  # serve stopped waiting (elicitation_timeout, the call ended)
                    asked = self._asked.pop(message.get("id"), None)
                    if asked is not None:
                        asked.cancel()
                    continue
                waiter = self._waiting.pop(message.get("id"), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
                elif message.get("id") is None and Status.of(message.get("status")) in (Status.NOT_A_JOB, Status.REFUSED):
                    error = PermissionError(message.get("error"))
        except (ConnectionError, ValueError, asyncio.LimitOverrunError) as exc:
            error = exc
        finally:
            # the next request opens a new connection: never one nobody reads
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(error)
            self._waiting.clear()
            for asked in self._asked.values():
                asked.cancel()
            self._asked.clear()

    def _put(self, rid: Any, raw: Any) -> None:
        """Serve's question during call ``rid``, to that call's elicitor; the answer goes back as
        ``{"op": "answer", "id", "answer"}`` (a question of no call of ours is declined)."""
        from ..elicitation import Answer, Question

        elicitor = self._elicitors.get(rid) if isinstance(rid, int) else None

        async def answer() -> None:
            try:
                result = (await elicitor(Question.from_wire(raw)) if elicitor is not None
                          else Answer("decline", reason="no caller of this process made that call"))
            except (KeyError, TypeError, ValueError):
                result = Answer("cancel", reason="serve sent a question that is not one")
            finally:
                self._asked.pop(rid, None)
            if self._writer is not None and not self._writer.is_closing():
                self._writer.write(encode({"op": "answer", "id": rid, "answer": result.as_wire()}))

        task = asyncio.ensure_future(answer())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if isinstance(rid, int):
            self._asked[rid] = task

    async def request(self, op: str, body: dict[str, Any], timeout: float | None = None,
                      on_progress: Callable[[str], None] | None = None,
                      on_question: Elicitor | None = None) -> tuple[Status, dict[str, Any]]:
        """``timeout``: a bound of the job's own on top of serve's (serve applies the
        server's ``timeout`` to the call itself). ``on_progress``: told each progress or
        task status line serve relays while the request runs. ``on_question``: answers
        a question the server asks during this call (serve attributes it to this call)."""
        if timeout is not None:
            async with asyncio.timeout(timeout):
                return await self.request(op, body, on_progress=on_progress, on_question=on_question)
        writer = await self._connect()
        rid = next(self._ids)
        answer = self._waiting[rid] = asyncio.get_running_loop().create_future()
        if on_progress is not None:
            self._progress[rid] = on_progress
            body = {**body, "progress": True}
        if on_question is not None:
            self._elicitors[rid] = on_question
            body = {**body, "questions": True}
        writer.write(encode({"id": rid, "op": op, **body}))
        try:
            message = await answer
        except asyncio.CancelledError:
            self._waiting.pop(rid, None)
            if not writer.is_closing():
                writer.write(encode({"op": "cancel", "id": rid}))
            raise
        finally:
            self._progress.pop(rid, None)
            self._elicitors.pop(rid, None)
        return Status.of(message.get("status", Status.ERROR)), message

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task


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
        self.rejected = _rejected(info)
        self.capabilities = _capabilities(info)
        self.pins = ToolPins(name, pin_tools=server.pin_tools)
        self.pins.pinned, self.pins.changed = info.get("pinned"), list(info.get("changed") or [])
        self.on_up: list[Callable[[Any], None]] = []
        self._client = client
        self._fallback = fallback  # connects this block in the job when serve no longer holds it
        self._local: McpConnection | None = None
        self._watch: asyncio.Task[None] | None = None
        self.refused: str | None = info.get("refused")  # serve lends this block to no call of this agent
        if self.state is not ConnState.UP and self.refused is None:
            self._watch = asyncio.ensure_future(self._wait_up())

    @property
    def transport(self) -> str:
        """How serve reaches the server (``stdio``, ``http``, ``sse``): the hop to
        serve is a detail of this process."""
        from ..transports import transport_name

        return transport_name(self.server)

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        from mcp.types import CallToolResult

        if self._local is not None:
            return await self._local.call(tool, arguments)
        if self.refused is not None:
            raise GatewayRefused(self.refused)
        status, body = await self._client.request("call", {"key": self.key, "tool": tool, "arguments": arguments},
                                                  timeout=self.server.resolved_max_timeout + CALL_MARGIN_S,
                                                  on_progress=progress.current(), on_question=elicitation.current())
        if status is Status.OK:
            from mcp.types import TextContent

            return CallToolResult(content=[TextContent(type="text", text=str(body.get("text", "")))],
                                  is_error=bool(body.get("is_error")))
        if status is Status.UNKNOWN:  # serve closed this block (a newer generation): the call keeps its own
            log.info("MCP server %s: serve no longer holds this version of it; connecting it for this call", self.name)
            self._local = await self._fallback(self.name)
            return await self._local.call(tool, arguments)
        self._raise_for(status, body)

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> str:
        """A prompt as text, from serve's warm connection."""
        if self._local is not None:
            return await self._local.get_prompt(name, arguments)
        return await self._fetch("prompt", {"name": name, "arguments": arguments})

    async def read_resource(self, uri: str) -> str:
        """A resource as text, from serve's warm connection."""
        if self._local is not None:
            return await self._local.read_resource(uri)
        return await self._fetch("resource", {"uri": uri})

    async def _fetch(self, op: str, body: dict[str, Any]) -> str:
        if self.refused is not None:
            raise GatewayRefused(self.refused)
        status, answer = await self._client.request(op, {"key": self.key, **body},
                                                    timeout=self.server.timeout + CALL_MARGIN_S)
        if status is Status.OK:
            return str(answer.get("text", ""))
        self._raise_for(status, answer)

    def _raise_for(self, status: Status, body: dict[str, Any]) -> NoReturn:
        """What the job's own connection would have raised for a failure serve worded."""
        if status is Status.UNAVAILABLE:
            self.state, self.error = ConnState.DOWN, body.get("unavailable")
            if self._watch is None or self._watch.done():
                self._watch = asyncio.ensure_future(self._wait_up())
            raise McpUnavailable(self.error or "not connected")
        if status is Status.TIMEOUT:
            reason = body.get("timeout")
            raise CallTimeout(reason if isinstance(reason, str) else "")
        if status is Status.RPC_ERROR and isinstance(body.get("rpc_error"), dict):
            from mcp.shared.exceptions import MCPError

            error = body["rpc_error"]
            raise MCPError(int(error.get("code", 0)), str(error.get("message", "")))
        if status is Status.REFUSED:  # not a tool this agent's model is shown: the server itself is fine
            raise GatewayRefused(body.get("refused") or "refused by serve")
        raise RuntimeError(body.get("error") or f"gateway answered {status}")

    async def _wait_up(self) -> None:
        """While the server is down, wait (long poll) for serve to reconnect it,
        then hand the new tools to the session as a reconnect would."""
        from mcp.types import Tool

        while self.state is not ConnState.UP:
            try:
                status, info = await self._client.request("up", {"key": self.key})
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - serve is going away with this job
                return
            if status in (Status.REFUSED, Status.UNKNOWN):
                return
            if status is not Status.OK:
                continue
            self.tools = [Tool.model_validate(t) for t in info.get("tools") or []]
            self.rejected = _rejected(info)
            self.capabilities = _capabilities(info)
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
    def from_state_dir(cls, state_dir: Path, job_id: str) -> GatewayPool | None:
        """``job_id``: the job this process runs (serve lends only to that job's agent)."""
        try:
            address = json.loads((state_dir / ADDRESS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls(_Client(address["socket"], address["token"], job_id))

    async def acquire(self, loaded: LoadedSpec) -> Acquired:
        from .. import pins
        from ..pool import Acquired, server_key

        servers = loaded.spec.mcp_servers
        shared = {name: server_key(loaded, name) for name, s in servers.items() if s.pooled}
        infos: dict[str, Any] = {}
        if shared:
            try:
                status, body = await self.client.request("acquire", {"agent": loaded.name, "servers": shared})
            except (OSError, ValueError) as exc:
                status, body = None, {"error": str(exc) or type(exc).__name__}
            infos = body.get("servers", {}) if status is Status.OK else {}
            if status is not Status.OK:  # the call still gets its tools: it connects the servers itself
                log.warning("agent %s: serve's MCP connections are out of reach (%s); this call connects its own",
                            loaded.name, body.get("error") or status)
        refused = {name: str(info["refused"]) for name, info in infos.items() if info.get("refused")}
        # a block serve refused is unavailable to this call, not connected here instead
        own = [name for name in servers if not (infos.get(name) or {}).get("known") and name not in refused]
        acquired = Acquired({}, lock=pins.read_tool_lock(loaded) if servers else None)
        if own:
            mine = await self.local.acquire(loaded, only=set(own))
            acquired.connections.update(mine.connections)
            acquired.unavailable.update(mine.unavailable)

        async def fallback(name: str) -> McpConnection:
            return (await self.local.acquire(loaded, only={name})).connections[name]

        for name, key in shared.items():
            info = infos.get(name) or {}
            if name in refused:
                info = {"state": ConnState.DOWN.value, "error": f"refused by serve: {refused[name]}",
                        "refused": refused[name]}
                log.warning("agent %s: serve refused MCP server %s to this call: %s", loaded.name, name, refused[name])
            elif not info.get("known"):
                continue
            conn = RemoteConnection(name, servers[name], key, info, self.client, fallback)
            self.remote.append(conn)
            acquired.connections[name] = conn  # type: ignore[assignment]
            if conn.state is not ConnState.UP:
                acquired.unavailable[name] = conn.error or conn.state.value
        # in the spec's order, as a pool of its own would give them
        acquired.connections = {name: acquired.connections[name] for name in servers if name in acquired.connections}
        return acquired

    async def warm(self, specs: Iterable[LoadedSpec]) -> None:
        """Nothing to do ahead: serve connects every accepted spec's shared servers
        when it accepts the spec; a ``shared: false`` block belongs to the call that
        acquires it."""

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.remote), return_exceptions=True)
        await self.local.aclose()
        await self.client.aclose()


def _local_pool() -> McpPool:
    from ..pool import McpPool

    return McpPool()
