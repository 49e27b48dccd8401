"""One MCP server connection: connect within a deadline, call with a timeout,
notice when it died and reconnect with jittered backoff. Its state is a
``ConnState``; the streams are opened by ``transports``, the waits come from
``backoff``, the tool definitions are pinned by ``pins``.

The mcp SDK's transports are anyio context managers that must be entered and
exited by the same task, so each connection has an owner task that holds them
open until ``aclose()``; calls come from any task.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..observe import tracing
from ..core.terminal import printable
from .backoff import BACKOFF_MAX, BACKOFF_START, Backoff
from . import oauth, progress, sampling, tasks
from . import elicitation
from .elicitation import Callers, Elicitor, sdk_callback
from .listing import MAX_LISTED_TOOLS, ListingFilter, Rejected, install_log_filter
from .pins import ToolPins
from .server_log import ServerLog
from .transports import (
    STDERR_CHECK_SECONDS,
    ServerGone,
    StderrLog,
    Watched,
    describe,
    import_sdk,
    is_connection_error,
    is_stdio,
    open_transport,
    session_expired,
    transport_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from mcp import ClientSession
    from mcp.types import CallToolResult, Tool

    from ..spec.models import HttpServer, StdioServer

log = logging.getLogger("voice_runtime.mcp")


class ConnState(enum.StrEnum):
    """Where a connection is. A str, so /status and health show the plain value."""

    IDLE = "idle"  # never tried
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"  # failed or lost; a reconnect is scheduled
    CLOSED = "closed"  # aclose(): never again


class McpUnavailable(Exception):
    """The server cannot be used right now; the message says why, for humans."""


class CallTimeout(asyncio.TimeoutError):
    """A call that ran out of time; the message says which bound it hit."""


@dataclass
class ServerHealth:
    name: str
    transport: str
    state: ConnState
    error: str | None
    tools: list[str]
    handshake_ms: float | None
    protocol_version: str | None
    reconnects: int
    changed_tools: list[str] = field(default_factory=list)
    auth: dict[str, Any] | None = None  # OAuth: grant, token expiry; never the token

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "transport": self.transport, "state": self.state.value, "error": self.error,
            "tools": self.tools, "handshake_ms": None if self.handshake_ms is None else round(self.handshake_ms, 1),
            "protocol_version": self.protocol_version, "reconnects": self.reconnects,
            "changed_tools": self.changed_tools, "auth": self.auth,
        }


class McpConnection:
    """One server: its state machine (idle -> connecting -> up <-> down -> closed),
    the owner task holding the transport open, calls, and reconnects."""

    def __init__(
        self, name: str, server: StdioServer | HttpServer, *, base_dir: Path | None = None,
        redact: Callable[[str], str] | None = None,
        backoff: tuple[float, float] = (BACKOFF_START, BACKOFF_MAX),
    ) -> None:
        self.name = name
        self.backoff = Backoff(*backoff)
        # errors can quote a URL or header that holds a ${VAR} secret
        self._redact = redact or (lambda text: text)
        self.server = server
        self.base_dir = base_dir or Path.cwd()
        self.state = ConnState.IDLE
        self.error: str | None = None
        self.tools: list[Tool] = []
        # listed tools not kept (a definition the SDK would refuse, too deep, too large): each with why
        self.rejected: list[Rejected] = []
        self.handshake_ms: float | None = None
        self.protocol_version: str | None = None
        self.capabilities: Any = None  # the server's, from its initialize answer
        self.reconnects = 0
        self._connects = 0  # successful connects so far: a call knows which one it used
        self._session: ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that owns the transport
        self._owner: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task[None]] = set()  # attempts still shutting down
        self._closing: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self._reconnect_task: asyncio.Task[None] | None = None
        # aclose() has begun: nothing may schedule or run a reconnect from now on (a call
        # failing as the transport closes would otherwise start one that outlives aclose)
        self._closed = False
        # the first listing's definitions: later listings are compared against them
        # (a spec's tool lock is applied per agent, in toolset.plan_tools)
        self.pins = ToolPins(name, pin_tools=server.pin_tools)
        self.on_up: list[Callable[[McpConnection], None]] = []  # after every successful reconnect
        self._stderr = StderrLog() if self.is_stdio else None
        # who answers this server's questions (elicitation/create) asked while no tool
        # call is in flight; None declines. Set only by a sole holder (`voice-runtime
        # call`, a call's own `shared: false` connection): a pooled connection puts each
        # question to the call whose tool call asked it (``callers``)
        self.elicitor: Elicitor | None = None
        self.callers = Callers()
        self.sampler: sampling.Sampler | None = None  # the call's model, for `sampling: {allow: true}`
        # OAuth: made at the first connect, kept across reconnects (its tokens are cached with it)
        self._auth: Any = None

    def redact(self, text: str) -> str:
        """``text`` with this server's secrets (headers, env) masked."""
        return self._redact(text)

    @property
    def is_stdio(self) -> bool:
        return is_stdio(self.server)

    @property
    def transport(self) -> str:
        return transport_name(self.server)

    @property
    def retry_delays(self) -> list[float]:
        """The reconnect waits since the server was last stable (latest 100): a crash loop slowing down."""
        return self.backoff.delays

    def health(self) -> ServerHealth:
        return ServerHealth(
            self.name, self.transport, self.state, self.error, [t.name for t in self.tools],
            self.handshake_ms, self.protocol_version, self.reconnects, list(self.pins.changed),
            oauth.token_state(self._auth),
        )

    # -- lifecycle ------------------------------------------------------------

    async def connect(self, *, unless_newer_than: int | None = None, timeout: float | None = None) -> bool:
        """Connect and list tools within ``connect_timeout``; raise McpUnavailable.
        With ``unless_newer_than``: do nothing (return False) when a connection newer
        than that one (a count of connects) is already up (another caller renewed it first).
        ``timeout`` replaces ``connect_timeout`` for a connect that waits on a person
        (``mcp-login``: the browser's redirect comes minutes later, not seconds)."""
        with tracing.span("mcp.connect", {"mcp.server": self.name, "mcp.transport": self.transport}) as span:
            connected = await self._connect(unless_newer_than, timeout)
            span.set_attribute("mcp.tools", len(self.tools))
            if self.protocol_version:
                span.set_attribute("mcp.protocol_version", self.protocol_version)
            return connected

    async def _connect(self, unless_newer_than: int | None, timeout: float | None) -> bool:
        async with self._lock:
            if self._closed:
                raise McpUnavailable("closed")
            if unless_newer_than is not None and self._connects > unless_newer_than and self.state is ConnState.UP:
                return False
            await self._stop_owner()
            self.state = ConnState.CONNECTING
            # a first import of the SDK takes about a second: not the server's time
            import_sdk(self.server)
            install_log_filter()
            loop = self._loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            self._closing = asyncio.Event()
            started = time.perf_counter()
            self._owner = asyncio.create_task(self._own(ready, self._closing), name=f"mcp-{self.name}")
            try:
                await asyncio.wait_for(asyncio.shield(ready), timeout=timeout or self.server.connect_timeout)
            except asyncio.TimeoutError:
                # torn down in the background: connect_timeout bounds the caller's wait,
                # and stopping a stdio server that ignores stdin takes the SDK seconds
                self._abandon_owner()
                raise self._down(f"no answer within {timeout:g}s" if timeout else
                                 f"no answer within connect_timeout ({self.server.connect_timeout:g}s)") from None
            except asyncio.CancelledError:
                self._abandon_owner()  # closing, or the caller gave up: no attempt left behind
                if self.state is ConnState.CONNECTING:
                    self.state = ConnState.DOWN
                raise
            except Exception as exc:
                await self._stop_owner()
                raise self._down(self._why(exc)) from None
            self.handshake_ms = (time.perf_counter() - started) * 1000
            self.state, self.error = ConnState.UP, None
            self._connects += 1
            self.backoff.up()
            self.pins.compare(self.tools)
            return True

    async def start(self) -> None:
        """``connect()``, and when that fails keep retrying in the background, so a
        server that comes up later gets its tools to the sessions using it."""
        try:
            await self.connect()
        except McpUnavailable:
            self._schedule_reconnect()
            raise

    async def aclose(self) -> None:
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnect_task
        async with self._lock:
            await self._stop_owner()
        if self._abandoned:
            await asyncio.gather(*self._abandoned, return_exceptions=True)
        self.state = ConnState.CLOSED
        oauth.close(self._auth)
        if self._stderr is not None:
            self._stderr.close()

    async def _own(self, ready: asyncio.Future[None], closing: asyncio.Event) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                if self._stderr is not None:
                    self._stderr.begin()
                if self._auth is None and getattr(self.server, "auth", None) is not None:
                    self._auth = oauth.provider_for(self.name, self.server, self.base_dir)  # type: ignore[arg-type]
                read, write = await stack.enter_async_context(
                    open_transport(self.server, base_dir=self.base_dir, stderr=self._stderr, auth=self._auth))
                gone = asyncio.Event()
                listing = ListingFilter(self.name, lambda: self.protocol_version)
                read = Watched(read, gone, listing)
                callbacks: dict[str, Any] = {}
                if self.server.elicitation == "allow":  # else the capability is not announced
                    callbacks["elicitation_callback"] = sdk_callback(
                        self.name, self.server.elicitation_timeout, lambda: self.elicitor,
                        self.server.elicitation_confirm, self.callers)
                if self.server.sampling.allow:
                    callbacks["sampling_callback"] = sampling.sdk_callback(
                        self.name, self.server.sampling, lambda: self.sampler)
                if self.server.roots:
                    callbacks["list_roots_callback"] = _roots_callback(self.server.roots)
                callbacks["logging_callback"] = ServerLog(self.name, self.redact).callback
                session = await stack.enter_async_context(ClientSession(read, write, **callbacks))
                init = await session.initialize()
                self.protocol_version = str(getattr(init, "protocol_version", "") or "") or None
                self.capabilities = getattr(init, "capabilities", None)
                self.tools, self.rejected = await _list_all_tools(session, listing)
                for rejected in self.rejected:
                    log.warning("MCP server %s: %s%s", self.name,
                                f"tool {rejected.name} withheld: " if rejected.name else "", rejected.reason)
                self._session = session
                ready.set_result(None)
                while not (closing.is_set() or gone.is_set()):
                    await _first_of(closing, gone, timeout=STDERR_CHECK_SECONDS if self.is_stdio else None)
                    if self._stderr is not None:
                        self._stderr.trim()
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
                self._lost(self._why(exc))
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
            # our own caller was cancelled (aclose cancelling a reconnect that is stopping a
            # failed attempt): say so, or the reconnect loop would carry on as if it failed
            if _cancelling():
                raise asyncio.CancelledError

    # -- calls ----------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call a tool. Raises McpUnavailable (down, or died during the call) or
        CallTimeout (no answer within the server's ``timeout``, which each progress
        notification restarts, up to ``max_timeout`` in all). A tool the server runs
        as a task (``tasks``) is created, followed and fetched here; each status
        answer restarts the timeout the same way. Progress and status messages go to
        the listener of ``progress.listening``."""
        listener = progress.current()
        # a status line is the server's text: it may echo a header or env secret of this block
        report = (lambda message: listener(self.redact(message))) if listener is not None else None
        # taken here, in the caller's context: the call itself may run in the owner's loop
        asker = elicitation.current()
        return await self._on_owner(self._call(tool, arguments, report=report, asker=asker))

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> str:
        """A prompt's messages as text (``prompts/get``), within the server's ``timeout``."""
        return await self._on_owner(self._fetch("prompt", name, arguments))

    async def read_resource(self, uri: str) -> str:
        """A resource's contents as text (``resources/read``), within the server's ``timeout``."""
        return await self._on_owner(self._fetch("resource", uri, {}))

    async def _on_owner(self, work: Any) -> Any:
        """Await ``work`` (a coroutine using the session) in the loop that owns the
        transport: a job running in another loop (a job thread, or a job process whose
        pool was warmed on its own thread) hands it over; cancelling this await
        cancels it there too."""
        owner = self._loop
        if owner is not None and owner is not asyncio.get_running_loop() and not owner.is_closed():
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, owner))
        return await work

    async def _fetch(self, kind: str, name: str, arguments: dict[str, str]) -> str:
        from types import SimpleNamespace

        from .results import result_text

        session = self._session
        if session is None or self.state is not ConnState.UP:
            raise McpUnavailable(self.error or "not connected")
        try:
            async with asyncio.timeout(self.server.timeout):
                if kind == "prompt":
                    got = await session.get_prompt(name, arguments)
                    items = [message.content for message in got.messages]
                else:
                    items = list((await session.read_resource(name)).contents)
        except asyncio.TimeoutError:
            raise CallTimeout(f"no answer within {self.server.timeout:g}s") from None
        except Exception as exc:
            if is_connection_error(exc) or self._session is not session:
                self._lost(describe(exc, self._stderr_tail()))
                raise McpUnavailable(self.error or "connection lost") from None
            raise
        # the same words a tool result's content gets (text as text, other kinds described)
        return result_text(SimpleNamespace(content=items, structured_content=None))

    def runs_as_task(self, tool: str) -> bool:
        listed = next((t for t in self.tools if t.name == tool), None)
        return listed is not None and tasks.runs_as_task(listed, self.capabilities)

    async def _call(self, tool: str, arguments: dict[str, Any], *, resend: bool = True,
                    report: progress.Listener | None = None, asker: Elicitor | None = None) -> CallToolResult:
        session = self._session
        if session is None or self.state is not ConnState.UP:
            self._schedule_reconnect()
            raise McpUnavailable(self.error or "not connected")
        connects = self._connects
        loop = asyncio.get_running_loop()
        started = loop.time()
        timeout, ceiling = self.server.timeout, self.server.resolved_max_timeout
        progressed = False

        def alive() -> None:
            # The MCP spec: progress MAY reset the timeout, a maximum still applies
            nonlocal progressed
            progressed = True
            with contextlib.suppress(RuntimeError):  # the call already ended
                scope.reschedule(min(loop.time() + timeout, started + ceiling))

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            alive()
            if message and report is not None:
                report(message)

        if self._stderr is not None:
            self._stderr.withhold()
        try:
            # in flight on this connection until it ends: a question the server asks meanwhile may be this call's
            with self.callers.calling(asker):
                async with asyncio.timeout(timeout) as scope:  # no extra task per call, unlike wait_for
                    if self.runs_as_task(tool):
                        return await tasks.call_as_task(session, self.name, tool, arguments, alive=alive, report=report)
                    return await session.call_tool(tool, arguments, progress_callback=on_progress)
        except asyncio.TimeoutError:
            elapsed = loop.time() - started
            if not progressed:
                raise CallTimeout(f"no answer within {timeout:g}s") from None
            if elapsed >= ceiling - 0.001:
                raise CallTimeout(f"no answer within max_timeout ({ceiling:g}s), though it reported progress") from None
            raise CallTimeout(f"no answer or progress for {timeout:g}s ({elapsed:.1f}s in all)") from None
        except Exception as exc:
            if resend and not self.is_stdio and session_expired(exc):
                # The server restarted and no longer knows our session: it refused the
                # request without running it. The MCP spec says to start a new session;
                # then the request is sent again, once.
                log.info("MCP server %s no longer knows our session (restarted?); starting a new one", self.name)
                try:
                    renewed = await self.connect(unless_newer_than=connects)
                except McpUnavailable:
                    self._schedule_reconnect()
                    raise
                if renewed:
                    self._came_back()
                return await self._call(tool, arguments, resend=False, report=report, asker=asker)
            if is_connection_error(exc) or self._session is not session or self._owner is None or self._owner.done():
                self._lost(self._why(exc))
                raise McpUnavailable(self.error or "connection lost") from None
            raise

    def _lost(self, reason: str) -> None:
        if self._closed or self.state is ConnState.CLOSED:  # a call cut by our own aclose(): not the server going down
            return
        was_up = self.state is ConnState.UP
        if was_up:
            self.backoff.lost()
        self._down(reason)
        if was_up:
            log.warning("MCP server %s went down: %s; reconnecting", self.name, self.error)
        self._schedule_reconnect()

    def _down(self, reason: str) -> McpUnavailable:
        # redacted first (a secret must match as the server echoed it), then made
        # safe for a terminal: this text reaches check, tools, call, logs and /status
        reason = printable(self._redact(reason))
        self.state, self.error = ConnState.DOWN, reason
        self._session = None
        return McpUnavailable(reason)

    def _schedule_reconnect(self) -> None:
        if self._closed or self.state is ConnState.CLOSED or (
                self._reconnect_task is not None and not self._reconnect_task.done()):
            return
        try:
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect_loop())
        except RuntimeError:  # no running loop (closing)
            pass

    async def _reconnect_loop(self) -> None:
        while self.state not in (ConnState.UP, ConnState.CLOSED) and not self._closed:
            await asyncio.sleep(self.backoff.next_delay())
            try:
                await self.connect()
            except McpUnavailable as exc:
                if self._closed or _cancelling():
                    # Python 3.11's wait_for returns a failed attempt's error instead of
                    # the cancellation that arrived with it: aclose() waits for this task
                    return
                # the first tries say so; after that the health entry and metric do
                level = logging.INFO if len(self.backoff.delays) <= 3 else logging.DEBUG
                log.log(level, "MCP server %s still down: %s (next try in ~%.1fs)", self.name, exc, self.backoff.base)
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

    def _why(self, exc: BaseException) -> str:
        """A failure for humans: the authorization server's refusal when there was one
        (the transport only sees its connection closed), else the failure itself."""
        return oauth.refusal(self._auth) or describe(exc, self._stderr_tail())

    def _stderr_tail(self) -> str:
        return self._stderr.tail() if self._stderr is not None else ""


# A server that pages forever (or hands back the cursor it was given) must not
# hang the handshake; connect_timeout bounds the time, this bounds the requests.
MAX_TOOL_PAGES = 1000


async def _list_all_tools(session: ClientSession, listing: ListingFilter) -> tuple[list[Tool], list[Rejected]]:
    """Every page's tools, and the tools ``listing`` took out of them (with why)."""
    from mcp.types import PaginatedRequestParams

    listing.reset()
    tools: list[Tool] = []
    seen: set[str] = set()
    result = await session.list_tools()
    for _ in range(MAX_TOOL_PAGES):
        tools.extend(result.tools)
        cursor = result.next_cursor
        if not cursor or cursor in seen:
            break
        if len(tools) >= MAX_LISTED_TOOLS:
            listing.rejected.append(Rejected("", f"later pages of tools not read (a server may list at most {MAX_LISTED_TOOLS})"))
            break
        seen.add(cursor)
        result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
    return tools, list(listing.rejected)


def _roots_callback(roots: list[str]) -> Callable[..., Any]:
    """``roots/list``: the block's declared file:// URIs, the same for every ask."""

    async def callback(context: Any) -> Any:
        from mcp.types import ListRootsResult, Root

        return ListRootsResult(roots=[Root(uri=uri) for uri in roots])

    return callback


def _cancelling() -> bool:
    """Whether the running task has been asked to cancel (and has not said it is done with that)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _first_of(*events: asyncio.Event, timeout: float | None = None) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
