"""One MCP server connection: connect within a deadline, call with a timeout,
notice when it died and reconnect with jittered backoff.

The mcp SDK's transports are anyio context managers that must be entered and
exited by the same task, so each connection has an owner task that holds them
open until ``aclose()``; calls come from any task.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..terminal import printable

if TYPE_CHECKING:
    from collections.abc import Callable

    from mcp import ClientSession
    from mcp.types import CallToolResult, Tool

    from ..spec.models import HttpServer, StdioServer

log = logging.getLogger("voice_runtime.mcp")

# What a stdio server inherits besides the spec's `env:` (the mcp SDK adds PATH,
# HOME, USER, SHELL, TERM, LOGNAME). Never the runtime's whole environment: it
# holds API keys.
_LOCALE_VARS = ("LANG", "LC_ALL", "TZ")
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
# A server must stay up this long before a loss resets the backoff: one that dies
# right after every start is a crash loop, retried ever more slowly.
STABLE_AFTER = 10.0
# Largest message accepted on a streamable HTTP event stream (the SDK's default is
# 1 MiB, and a 1 MB tool result arrives twice: as text and as structured content).
# Results are capped to max_result_chars after they arrive.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


# A stdio server's stderr is kept for the last lines of error messages, not forever.
STDERR_MAX_BYTES = 1024 * 1024
STDERR_KEEP_BYTES = 16 * 1024
STDERR_CHECK_SECONDS = 1.0


class ServerGone(Exception):
    """The transport ended while the connection was up."""


class McpUnavailable(Exception):
    """The server cannot be used right now; the message says why, for humans."""


@dataclass
class ServerHealth:
    name: str
    transport: str
    state: str  # "idle", "connecting", "up", "down", "closed"
    error: str | None
    tools: list[str]
    handshake_ms: float | None
    protocol_version: str | None
    reconnects: int
    changed_tools: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "transport": self.transport, "state": self.state, "error": self.error,
            "tools": self.tools, "handshake_ms": None if self.handshake_ms is None else round(self.handshake_ms, 1),
            "protocol_version": self.protocol_version, "reconnects": self.reconnects,
            "changed_tools": self.changed_tools,
        }


def tool_digest(tool: Tool) -> str:
    """What a model is told about a tool; a change after the first listing is a
    possible "rug pull" (a server swapping in new instructions mid-deployment)."""
    text = json.dumps(
        {"name": tool.name, "description": tool.description or "", "schema": tool.input_schema or {}},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class McpConnection:
    def __init__(
        self, name: str, server: StdioServer | HttpServer, *, base_dir: Path | None = None,
        redact: Callable[[str], str] | None = None,
        backoff: tuple[float, float] = (BACKOFF_START, BACKOFF_MAX),
    ) -> None:
        self.name = name
        self.backoff_start, self.backoff_max = backoff
        # the reconnect waits since the server was last stable (latest 100): a crash loop slowing down
        self.retry_delays: list[float] = []
        # errors can quote a URL or header that holds a ${VAR} secret
        self._redact = redact or (lambda text: text)
        self.server = server
        self.base_dir = base_dir or Path.cwd()
        self.state = "idle"
        self.error: str | None = None
        self.tools: list[Tool] = []
        self.handshake_ms: float | None = None
        self.protocol_version: str | None = None
        self.reconnects = 0
        self._generation = 0  # successful connects so far
        self._session: ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that owns the transport
        self._owner: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task[None]] = set()  # attempts still shutting down
        self._closing: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._backoff = self.backoff_start
        self._up_since = 0.0
        # tool name -> digest at the first listing: later listings are compared
        # against it (a spec's tool lock is applied per agent, in toolset.plan_tools)
        self.pinned: dict[str, str] | None = None
        self.changed_tools: list[str] = []
        self.on_up: list[Callable[[McpConnection], None]] = []  # after every successful reconnect
        self._stderr = _stderr_file() if self.is_stdio else None

    @property
    def is_stdio(self) -> bool:
        return hasattr(self.server, "command")

    @property
    def transport(self) -> str:
        return "stdio" if self.is_stdio else self.server.resolved_transport  # type: ignore[union-attr]

    def health(self) -> ServerHealth:
        return ServerHealth(
            self.name, self.transport, self.state, self.error, [t.name for t in self.tools],
            self.handshake_ms, self.protocol_version, self.reconnects, list(self.changed_tools),
        )

    # -- lifecycle ------------------------------------------------------------

    async def connect(self, *, unless_newer_than: int | None = None) -> bool:
        """Connect and list tools within ``connect_timeout``; raise McpUnavailable.
        With ``unless_newer_than``: do nothing (return False) when a connection newer
        than that generation is already up (another caller renewed it first)."""
        async with self._lock:
            if unless_newer_than is not None and self._generation > unless_newer_than and self.state == "up":
                return False
            await self._stop_owner()
            self.state = "connecting"
            # a first import of the SDK takes about a second: not the server's time
            self._import_transport()
            loop = self._loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            self._closing = asyncio.Event()
            started = time.perf_counter()
            self._owner = asyncio.create_task(self._own(ready, self._closing), name=f"mcp-{self.name}")
            try:
                await asyncio.wait_for(asyncio.shield(ready), timeout=self.server.connect_timeout)
            except asyncio.TimeoutError:
                # torn down in the background: connect_timeout bounds the caller's wait,
                # and stopping a stdio server that ignores stdin takes the SDK seconds
                self._abandon_owner()
                raise self._down(f"no answer within connect_timeout ({self.server.connect_timeout:g}s)") from None
            except asyncio.CancelledError:
                self._abandon_owner()  # closing, or the caller gave up: no attempt left behind
                self.state = "down" if self.state == "connecting" else self.state
                raise
            except Exception as exc:
                await self._stop_owner()
                raise self._down(_describe(exc, self._stderr_tail())) from None
            self.handshake_ms = (time.perf_counter() - started) * 1000
            self.state, self.error = "up", None
            self._generation += 1
            self._up_since = time.monotonic()
            self._compare_with_pinned()
            return True

    async def start(self) -> None:
        """``connect()``, and when that fails keep retrying in the background, so a
        server that comes up later gets its tools to the sessions using it."""
        try:
            await self.connect()
        except McpUnavailable:
            self._schedule_reconnect()
            raise

    def _compare_with_pinned(self) -> None:
        digests = {t.name: tool_digest(t) for t in self.tools}
        if self.pinned is None:
            # the first listing (a name listed twice keeps its first definition)
            self.pinned = {}
            for tool in self.tools:
                self.pinned.setdefault(tool.name, tool_digest(tool))
            return
        changed = sorted(n for n, d in digests.items() if n in self.pinned and self.pinned[n] != d)
        if changed and changed != self.changed_tools:
            log.warning(
                "MCP server %s changed the definition of %s since it was first listed%s",
                self.name, printable(", ".join(changed)),
                "; withheld from the model (pin_tools)" if self.server.pin_tools else "",
            )
        self.changed_tools = changed

    async def aclose(self) -> None:
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnect_task
        async with self._lock:
            await self._stop_owner()
        if self._abandoned:
            await asyncio.gather(*self._abandoned, return_exceptions=True)
        self.state = "closed"
        if self._stderr is not None:
            self._stderr.close()

    async def _own(self, ready: asyncio.Future[None], closing: asyncio.Event) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                gone = asyncio.Event()
                read = _Watched(read, gone)
                session = await stack.enter_async_context(ClientSession(read, write))
                init = await session.initialize()
                self.protocol_version = str(getattr(init, "protocol_version", "") or "") or None
                self.tools = await _list_all_tools(session)
                self._session = session
                ready.set_result(None)
                while not (closing.is_set() or gone.is_set()):
                    await _first_of(closing, gone, timeout=STDERR_CHECK_SECONDS if self.is_stdio else None)
                    self._trim_stderr()
                if not closing.is_set():
                    # a stdio server that exited, an HTTP stream that dropped: seen now,
                    # not at the next call, so health is true and the reconnect starts
                    raise ServerGone("the server process exited" if self.is_stdio
                                     else "the server closed the connection")
        except BaseException as exc:  # noqa: BLE001 - reported to whoever waits
            if not ready.done():
                if isinstance(exc, asyncio.CancelledError):
                    ready.cancel()  # an abandoned attempt: nobody waits any more
                else:
                    ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            elif not closing.is_set() and not isinstance(exc, asyncio.CancelledError):
                self._lost(_describe(exc, self._stderr_tail()))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._session = None

    def _abandon_owner(self) -> None:
        """Cancel a connection attempt that is still starting, without waiting; the
        transport still stops its process (the SDK shields that), and aclose() waits."""
        owner, self._owner = self._owner, None
        self._session = None
        if owner is None:
            return
        owner.cancel()

        async def reap() -> None:
            with contextlib.suppress(BaseException):
                await owner

        task = asyncio.ensure_future(reap())
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    async def _stop_owner(self) -> None:
        owner, self._owner = self._owner, None
        self._session = None
        if owner is None:
            return
        if self._closing is not None:
            self._closing.set()
        try:
            # stdio: the SDK closes stdin, then terminates the process; give it time
            await asyncio.wait_for(asyncio.shield(owner), timeout=5)
        except BaseException:  # noqa: BLE001 - a dying transport may raise anything here
            owner.cancel()
            with contextlib.suppress(BaseException):
                await owner

    def _import_transport(self) -> None:
        import mcp  # noqa: F401

        if self.is_stdio:
            import mcp.client.stdio  # noqa: F401
        elif self.server.resolved_transport == "sse":  # type: ignore[union-attr]
            import mcp.client.sse  # noqa: F401
        else:
            import httpx2  # noqa: F401
            import mcp.client.streamable_http  # noqa: F401

    def _transport(self) -> Any:
        server: Any = self.server
        if self.is_stdio:
            from mcp import StdioServerParameters, stdio_client

            from . import stdio_lines

            stdio_lines.install()

            env = {k: os.environ[k] for k in _LOCALE_VARS if k in os.environ} | dict(server.env)
            command = server.command
            if os.sep in command and not os.path.isabs(command):
                command = str((self.base_dir / command).resolve())
            cwd = str((self.base_dir / server.cwd).resolve()) if server.cwd else None
            params = StdioServerParameters(command=command, args=list(server.args), env=env, cwd=cwd)
            return stdio_client(params, errlog=self._stderr)
        if server.resolved_transport == "sse":
            from mcp.client.sse import sse_client

            return sse_client(server.url, headers=dict(server.headers), timeout=server.connect_timeout)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        client = httpx2.AsyncClient(
            headers=dict(server.headers), timeout=httpx2.Timeout(server.connect_timeout, read=server.timeout + 5)
        )
        return _closing_client(
            client, streamable_http_client(server.url, http_client=client, max_sse_event_size=MAX_MESSAGE_BYTES)
        )

    # -- calls ----------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call a tool. Raises McpUnavailable (down, or died during the call) or
        asyncio.TimeoutError (no answer within the server's ``timeout``)."""
        owner = self._loop
        if owner is not None and owner is not asyncio.get_running_loop() and not owner.is_closed():
            # a job running in another loop (a job thread, or a job process whose
            # pool was warmed on its own thread): the transport belongs to the owner
            # loop; cancelling this await cancels the call there too
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._call(tool, arguments), owner))
        return await self._call(tool, arguments)

    async def _call(self, tool: str, arguments: dict[str, Any], *, resend: bool = True) -> CallToolResult:
        session = self._session
        if session is None or self.state != "up":
            self._schedule_reconnect()
            raise McpUnavailable(self.error or "not connected")
        generation = self._generation
        try:
            async with asyncio.timeout(self.server.timeout):  # no extra task per call, unlike wait_for
                return await session.call_tool(tool, arguments)
        except asyncio.TimeoutError:
            raise
        except Exception as exc:
            if resend and not self.is_stdio and _session_expired(exc):
                # The server restarted and no longer knows our session: it refused the
                # request without running it. The MCP spec says to start a new session;
                # then the request is sent again, once.
                log.info("MCP server %s no longer knows our session (restarted?); starting a new one", self.name)
                try:
                    renewed = await self.connect(unless_newer_than=generation)
                except McpUnavailable:
                    self._schedule_reconnect()
                    raise
                if renewed:
                    self._came_back()
                return await self._call(tool, arguments, resend=False)
            if _is_connection_error(exc) or self._session is not session or self._owner is None or self._owner.done():
                self._lost(_describe(exc, self._stderr_tail()))
                raise McpUnavailable(self.error or "connection lost") from None
            raise

    def _lost(self, reason: str) -> None:
        if self.state == "closed":
            return
        was_up = self.state == "up"
        if was_up and time.monotonic() - self._up_since >= STABLE_AFTER:
            self._backoff = self.backoff_start  # it had been fine: the first retry is quick again
            self.retry_delays.clear()  # a new outage: its first retries are logged again
        self._down(reason)
        if was_up:
            log.warning("MCP server %s went down: %s; reconnecting", self.name, self.error)
        self._schedule_reconnect()

    def _down(self, reason: str) -> McpUnavailable:
        # redacted first (a secret must match as the server echoed it), then made
        # safe for a terminal: this text reaches check, tools, call, logs and /status
        reason = printable(self._redact(reason))
        self.state, self.error = "down", reason
        self._session = None
        return McpUnavailable(reason)

    def _schedule_reconnect(self) -> None:
        if self.state == "closed" or (self._reconnect_task is not None and not self._reconnect_task.done()):
            return
        try:
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect_loop())
        except RuntimeError:  # no running loop (closing)
            pass

    async def _reconnect_loop(self) -> None:
        while self.state not in ("up", "closed"):
            delay = self._backoff * random.uniform(0.8, 1.2)  # jitter: crash-looping servers are not hammered in step
            self._backoff = min(self._backoff * 2, self.backoff_max)
            self.retry_delays.append(delay)
            del self.retry_delays[:-100]
            await asyncio.sleep(delay)
            try:
                await self.connect()
            except McpUnavailable as exc:
                # the first tries say so; after that the health entry and metric do
                level = logging.INFO if len(self.retry_delays) <= 3 else logging.DEBUG
                log.log(level, "MCP server %s still down: %s (next try in ~%.1fs)", self.name, exc, self._backoff)
                continue
            self._came_back()

    def _came_back(self) -> None:
        self.reconnects += 1
        log.info("MCP server %s reconnected; %d tools", self.name, len(self.tools))
        for listener in list(self.on_up):
            try:
                listener(self)
            except Exception:  # noqa: BLE001 - one session's bug must not stop the others hearing
                log.exception("MCP server %s: reconnect listener failed", self.name)

    def _trim_stderr(self) -> None:
        """Keep the server's stderr log bounded: it is an unlinked temporary file, so
        a chatty server would otherwise fill the disk (or RAM, on tmpfs) unseen."""
        if self._stderr is None or self._stderr.closed:
            return
        try:
            fd = self._stderr.fileno()
            size = os.fstat(fd).st_size
            if size <= STDERR_MAX_BYTES:
                return
            tail = os.pread(fd, STDERR_KEEP_BYTES, size - STDERR_KEEP_BYTES)
            os.ftruncate(fd, 0)
            os.write(fd, tail)  # opened for appending: lands at the new end, as the server's writes do
        except (OSError, ValueError):
            pass

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        try:
            self._stderr.flush()
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - 2000))
            lines = [line for line in self._stderr.read().splitlines() if line.strip()]
            self._stderr.seek(0, os.SEEK_END)
        except (OSError, ValueError):
            return ""
        return lines[-1][:300] if lines else ""


@contextlib.asynccontextmanager
async def _closing_client(client: Any, transport: Any) -> Any:
    async with client:
        async with transport as streams:
            yield streams[0], streams[1]


# A server that pages forever (or hands back the cursor it was given) must not
# hang the handshake; connect_timeout bounds the time, this bounds the requests.
MAX_TOOL_PAGES = 1000


async def _list_all_tools(session: ClientSession) -> list[Tool]:
    from mcp.types import PaginatedRequestParams

    tools: list[Tool] = []
    seen: set[str] = set()
    result = await session.list_tools()
    for _ in range(MAX_TOOL_PAGES):
        tools.extend(result.tools)
        cursor = result.next_cursor
        if not cursor or cursor in seen:
            break
        seen.add(cursor)
        result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
    return tools


class _Watched:
    """The transport's read stream, unchanged; ``gone`` is set when it ends (a stdio
    server exited, an HTTP event stream dropped for good). A proxy rather than a
    pump task: a message passes through without an extra hop between tasks."""

    def __init__(self, source: Any, gone: asyncio.Event) -> None:
        self._source = source
        self._gone = gone

    def __getattr__(self, name: str) -> Any:  # last_context and whatever else the SDK reads
        return getattr(self._source, name)

    async def __aenter__(self) -> _Watched:
        await self._source.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._source.__aexit__(*exc)
        finally:
            self._gone.set()

    def __aiter__(self) -> _Watched:
        return self

    def __anext__(self) -> Any:
        return self._watch(self._source.__anext__())

    def receive(self) -> Any:
        return self._watch(self._source.receive())

    async def _watch(self, pending: Any) -> Any:
        try:
            return await pending
        except BaseException as exc:  # end of stream, closed, broken: the server is gone
            if not isinstance(exc, asyncio.CancelledError):
                self._gone.set()
            raise


def _stderr_file() -> Any:
    """An unlinked temporary file for a stdio server's stderr (a pipe nobody drains
    would stall the server), opened for appending so it can be trimmed under it."""
    file = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
    try:
        import fcntl

        flags = fcntl.fcntl(file.fileno(), fcntl.F_GETFL)
        fcntl.fcntl(file.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
    except (ImportError, OSError):  # no fcntl (Windows): trimming leaves a sparse file
        pass
    return file


async def _first_of(*events: asyncio.Event, timeout: float | None = None) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _session_expired(exc: BaseException) -> bool:
    """Streamable HTTP 404 for our session id: the server dropped the session
    (usually it restarted) and refused the request."""
    text = str(_leaf(exc)).lower()
    return "session not found" in text or "session terminated" in text


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _is_connection_error(exc: BaseException) -> bool:
    import anyio

    leaf = _leaf(exc)
    if isinstance(leaf, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, ConnectionError, EOFError)):
        return True
    text = str(leaf).lower()
    # "stream ended without a response": a streamable HTTP server died mid-call
    return any(s in text for s in ("connection closed", "session terminated", "not found", "404",
                                   "ended without a response"))


def _describe(exc: BaseException, stderr_tail: str = "") -> str:
    leaf = _leaf(exc)
    text = str(leaf).strip().splitlines()[0] if str(leaf).strip() else ""
    kind = type(leaf).__name__
    if isinstance(leaf, ServerGone):
        message = text
    elif isinstance(leaf, FileNotFoundError):
        message = f"command not found: {leaf.filename or text}"
    elif isinstance(leaf, ConnectionError) or "connect" in kind.lower():
        message = f"cannot connect: {text or kind}"
    else:
        message = f"{kind}: {text}" if text else kind
    if stderr_tail:
        message += f" (server stderr: {stderr_tail})"
    return message
