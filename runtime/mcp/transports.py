"""The streams to an MCP server (a stdio child process, streamable HTTP, SSE), the
watch on their end, a stdio server's stderr, and what a transport failure means.

A connection enters ``open_transport(...)`` and ``ClientSession`` in its owner task;
everything here is about bytes and processes, nothing about the connection's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..spec.models import HttpServer, StdioServer

log = logging.getLogger("voice_runtime.mcp")

# What a stdio server inherits besides the spec's `env:` (the mcp SDK adds PATH,
# HOME, USER, SHELL, TERM, LOGNAME). Never the runtime's whole environment: it
# holds API keys.
_LOCALE_VARS = ("LANG", "LC_ALL", "TZ")
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


def is_stdio(server: StdioServer | HttpServer) -> bool:
    return hasattr(server, "command")


def transport_name(server: StdioServer | HttpServer) -> str:
    """``stdio``, ``http`` or ``sse``: as health and ``check`` show it."""
    return "stdio" if is_stdio(server) else server.resolved_transport  # type: ignore[union-attr]


def import_sdk(server: StdioServer | HttpServer) -> None:
    """Import the SDK modules the transport needs, before its connect_timeout starts:
    a first import takes about a second, which is not the server's time."""
    import mcp  # noqa: F401

    if is_stdio(server):
        import mcp.client.stdio  # noqa: F401
    elif server.resolved_transport == "sse":  # type: ignore[union-attr]
        import mcp.client.sse  # noqa: F401
    else:
        import httpx2  # noqa: F401
        import mcp.client.streamable_http  # noqa: F401

        from .listing import install_http

        install_http()


def open_transport(server: StdioServer | HttpServer, *, base_dir: Path, stderr: StderrLog | None,
                   auth: Any = None) -> Any:
    """An async context manager yielding the (read, write) streams of a new transport;
    ``auth`` (an httpx2 ``Auth``, ``oauth.provider_for``) authenticates HTTP requests."""
    spec: Any = server
    if is_stdio(server):
        from mcp import StdioServerParameters, stdio_client

        from . import stdio_lines

        stdio_lines.install()

        env = {k: os.environ[k] for k in _LOCALE_VARS if k in os.environ} | dict(spec.env)
        command = spec.command
        if os.sep in command and not os.path.isabs(command):
            command = str((base_dir / command).resolve())
        cwd = str((base_dir / spec.cwd).resolve()) if spec.cwd else None
        params = StdioServerParameters(command=command, args=list(spec.args), env=env, cwd=cwd)
        return stdio_client(params, errlog=stderr.file if stderr is not None else None)
    if spec.resolved_transport == "sse":
        from mcp.client.sse import sse_client

        return sse_client(spec.url, headers=dict(spec.headers), timeout=spec.connect_timeout, auth=auth)
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    client = httpx2.AsyncClient(
        headers=dict(spec.headers), timeout=httpx2.Timeout(spec.connect_timeout, read=spec.timeout + 5), auth=auth
    )
    return _closing_client(
        client, streamable_http_client(spec.url, http_client=client, max_sse_event_size=MAX_MESSAGE_BYTES)
    )


@contextlib.asynccontextmanager
async def _closing_client(client: Any, transport: Any) -> Any:
    async with client:
        async with transport as streams:
            yield streams[0], streams[1]


class Watched:
    """The transport's read stream; ``gone`` is set when it ends (a stdio server
    exited, an HTTP event stream dropped for good), and each item passes through
    ``check`` (a ``listing.ListingFilter``). A proxy rather than a pump task: a
    message passes through without an extra hop between tasks."""

    def __init__(self, source: Any, gone: asyncio.Event, check: Callable[[Any], Any] | None = None) -> None:
        self._source = source
        self._gone = gone
        self._check = check

    def __getattr__(self, name: str) -> Any:  # last_context and whatever else the SDK reads
        return getattr(self._source, name)

    async def __aenter__(self) -> Watched:
        await self._source.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._source.__aexit__(*exc)
        finally:
            self._gone.set()

    def __aiter__(self) -> Watched:
        return self

    def __anext__(self) -> Any:
        return self._watch(self._source.__anext__())

    def receive(self) -> Any:
        return self._watch(self._source.receive())

    async def _watch(self, pending: Any) -> Any:
        try:
            item = await pending
        except BaseException as exc:  # end of stream, closed, broken: the server is gone
            if not isinstance(exc, asyncio.CancelledError):
                self._gone.set()
            raise
        if self._check is None:
            return item
        try:
            return self._check(item)
        except Exception:  # noqa: BLE001 - a bug in a check must not stop the session reading
            log.exception("checking a message from an MCP server failed; passed on as it came")
            return item


class StderrLog:
    """A stdio server's stderr: an unlinked temporary file (a pipe nobody drains
    would stall the server), opened for appending so it can be trimmed under it."""

    # once a tool call is sent, what the server writes may echo its arguments (a card
    # number), and the tail goes to serve's log and /status: it is quoted no more
    WITHHELD = "not quoted once a tool call was sent, as it may echo the call's arguments"

    def __init__(self) -> None:
        self.file: Any = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self._start = 0  # where the current server process's lines begin
        self._quoting = True
        try:
            import fcntl

            flags = fcntl.fcntl(self.file.fileno(), fcntl.F_GETFL)
            fcntl.fcntl(self.file.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
        except (ImportError, OSError):  # no fcntl (Windows): trimming leaves a sparse file
            pass

    def trim(self) -> None:
        """Keep the log bounded: a chatty server would otherwise fill the disk (or
        RAM, on tmpfs) unseen."""
        if self.file.closed:
            return
        try:
            fd = self.file.fileno()
            size = os.fstat(fd).st_size
            if size <= STDERR_MAX_BYTES:
                return
            tail = os.pread(fd, STDERR_KEEP_BYTES, size - STDERR_KEEP_BYTES)
            os.ftruncate(fd, 0)
            os.write(fd, tail)  # opened for appending: lands at the new end, as the server's writes do
            self._start = max(0, self._start - (size - STDERR_KEEP_BYTES))
        except (OSError, ValueError):
            pass

    def begin(self) -> None:
        """A new server process starts: its lines may be quoted until a call is sent."""
        if not self.file.closed:
            with contextlib.suppress(OSError, ValueError):
                self._start = self.file.seek(0, os.SEEK_END)
        self._quoting = True

    def withhold(self) -> None:
        """A tool call is sent: from now on the server's lines may hold its arguments."""
        self._quoting = False

    def tail(self) -> str:
        """The last non-blank line the current server process wrote before any tool
        call (for error messages), ``WITHHELD`` after one, or ""."""
        if self.file.closed:
            return ""
        if not self._quoting:
            return self.WITHHELD
        try:
            self.file.flush()
            size = self.file.seek(0, os.SEEK_END)
            self.file.seek(max(self._start, size - 2000))
            lines = [line for line in self.file.read().splitlines() if line.strip()]
            self.file.seek(0, os.SEEK_END)
        except (OSError, ValueError):
            return ""
        return lines[-1][:300] if lines else ""

    def close(self) -> None:
        self.file.close()


def session_expired(exc: BaseException) -> bool:
    """Streamable HTTP 404 for our session id: the server dropped the session
    (usually it restarted) and refused the request."""
    text = str(_leaf(exc)).lower()
    return "session not found" in text or "session terminated" in text


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def is_connection_error(exc: BaseException) -> bool:
    import anyio

    leaf = _leaf(exc)
    if isinstance(leaf, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, ConnectionError, EOFError)):
        return True
    text = str(leaf).lower()
    # "stream ended without a response": a streamable HTTP server died mid-call
    return any(s in text for s in ("connection closed", "session terminated", "not found", "404",
                                   "ended without a response"))


def describe(exc: BaseException, stderr_tail: str = "") -> str:
    """A failure as one line for humans (not yet redacted)."""
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
