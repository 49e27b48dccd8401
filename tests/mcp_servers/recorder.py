"""A configurable MCP server that records every tool call, for tests.

Run as a script (never imported by the runtime)::

    python tests/mcp_servers/recorder.py [--transport stdio|streamable-http|sse]
        [--port N] [--record FILE] [--name NAME] [--fault FAULT ...]

Each tool call appends one JSON line ``{"tool", "args", "pid", "ts"}`` to ``--record``
when the call *arrives* (before the tool runs), so a test can read it as soon as the
call returns, and a call that hangs, crashes or is cancelled is still visible. A
``sleep`` call the client cancels appends ``{"cancelled": "sleep", "args"}`` (see
``harness.read_cancellations``). The process
also appends one ``{"event": "spawn", ...}`` line at startup, so tests can count
(re)starts and find the pids they must see die.

Faults (``--fault`` may be repeated):

* ``slow-start=SECONDS``: sleep before serving (HTTP: before binding the port).
* ``slow-init=SECONDS``: serve at once (HTTP: the port accepts connections), but answer
  the ``initialize`` request only after SECONDS: a server that is up yet slow to
  handshake, the same on every transport.
* ``stderr-flood[=KIB_PER_SEC]`` (default 256): a thread writes to stderr nonstop, and
  every tool call logs a line there too, so a client that never drains stderr sees the
  server stall once the pipe fills, as a real chatty server would.
* ``garbage-stdout``: stdio only; print non-JSON lines on stdout before serving.
* ``hang``: every request, ``initialize`` included, blocks forever. HTTP still accepts
  connections. Over stdio the server then no longer notices stdin closing, so a client
  must fall back to signals (the SDK's stdio_client waits 2 s, then SIGTERMs the group).
* ``ignore-sigterm``: SIGTERM is ignored, over stdio the server also stays up after
  stdin closes, and a grandchild ``sleep 300`` is spawned in the same process group
  *after* SIG_IGN, so it inherits it: only SIGKILL to the whole group removes both.
  Its pid is ``grandchild_pid`` in the spawn event.

* ``duplicate-listing``: ``tools/list`` names every tool twice.
* ``many-tools=N``: ``tools/list`` also lists N generated tools ``bulk_00000``... (listed
  only: calling one is an unknown tool), as a server exposing thousands of tools would.
* ``exit-at-start``: exit with status 1 before serving (after ``--stderr-text``).

``--descriptions FILE`` (a JSON object ``{"tool": "description"}``, read at startup;
a missing file means the defaults) replaces tool descriptions, so a test can make the
"same" server list a changed tool definition after a restart.

``--extra-tools FILE`` (a JSON object ``{"name": "description"}``, read at startup; a
missing file means none) adds tools with any name: each takes ``{"text": str}``, records
the call under its name and returns the text. A test can change the tool *set* between
runs, or list names a model API refuses.

``--page-size N``: ``tools/list`` answers in pages of N tools, with ``nextCursor``.

``--stderr-text TEXT``: written to stderr at startup (a hostile server's banner).

HTTP transports bind 127.0.0.1 only, keep stdout silent and print one ready line to
stderr; the endpoint is ``/mcp`` (streamable HTTP) or ``/sse`` (SSE).

``--oauth-issuer URL`` (HTTP): an OAuth-protected resource, as the MCP authorization
spec has it: it publishes its protected resource metadata (RFC 9728) naming that
authorization server, and answers a request without a valid bearer token (a JWT signed
by a key of the issuer's JWKS, not expired, from that issuer) with 401 and a
``WWW-Authenticate`` pointing at the metadata. Each refusal is recorded as
``{"refused": reason}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

Transport = Literal["stdio", "streamable-http", "sse"]
TRANSPORTS: tuple[Transport, ...] = ("stdio", "streamable-http", "sse")
DEFAULT_NAME = "recorder"
# Exit code of the `crash` tool: distinct from the usual 1/2 so a test can tell a
# deliberate crash from a startup error.
CRASH_EXIT_CODE = 3


@dataclass(frozen=True)
class Faults:
    slow_start: float = 0.0
    slow_init: float = 0.0
    stderr_flood_kib_per_s: int | None = None
    garbage_stdout: bool = False
    hang: bool = False
    ignore_sigterm: bool = False
    exit_after: float = 0.0  # a crash loop: the process dies this long after it starts
    duplicate_listing: bool = False
    many_tools: int = 0
    exit_at_start: bool = False

    def names(self) -> list[str]:
        return [
            name
            for name, on in (
                ("slow-start", self.slow_start > 0),
                ("slow-init", self.slow_init > 0),
                ("stderr-flood", self.stderr_flood_kib_per_s is not None),
                ("garbage-stdout", self.garbage_stdout),
                ("hang", self.hang),
                ("ignore-sigterm", self.ignore_sigterm),
                ("exit-after", self.exit_after > 0),
                ("duplicate-listing", self.duplicate_listing),
                ("many-tools", self.many_tools > 0),
                ("exit-at-start", self.exit_at_start),
            )
            if on
        ]


@dataclass(frozen=True)
class Config:
    transport: Transport = "stdio"
    port: int | None = None
    record: Path | None = None
    name: str = DEFAULT_NAME
    faults: Faults = field(default_factory=Faults)
    descriptions: dict[str, str] = field(default_factory=dict)  # tool -> description
    extra_tools: dict[str, str] = field(default_factory=dict)  # name -> description
    page_size: int = 0  # 0: one page
    oauth_issuer: str | None = None  # --oauth-issuer: bearer JWTs from this issuer only


def parse_faults(specs: Sequence[str]) -> Faults:
    """Turn ``--fault`` values (``name`` or ``name=value``) into `Faults`."""
    kwargs: dict[str, Any] = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        match name:
            case "slow-start":
                if not value:
                    raise ValueError("slow-start needs a value: slow-start=SECONDS")
                kwargs["slow_start"] = float(value)
            case "slow-init":
                if not value:
                    raise ValueError("slow-init needs a value: slow-init=SECONDS")
                kwargs["slow_init"] = float(value)
            case "exit-after":
                if not value:
                    raise ValueError("exit-after needs a value: exit-after=SECONDS")
                kwargs["exit_after"] = float(value)
            case "many-tools":
                if not value:
                    raise ValueError("many-tools needs a value: many-tools=N")
                kwargs["many_tools"] = int(value)
            case "stderr-flood":
                kwargs["stderr_flood_kib_per_s"] = int(value) if value else 256
            case "garbage-stdout" | "hang" | "ignore-sigterm" | "duplicate-listing" | "exit-at-start" if not value:
                kwargs[name.replace("-", "_")] = True
            case _:
                raise ValueError(f"unknown fault: {spec!r}")
    return Faults(**kwargs)


class Recorder:
    """Appends JSON lines to the record file, shared safely by several processes."""

    def __init__(self, path: Path | None, *, echo_to_stderr: bool = False) -> None:
        self._path = path
        self._echo_to_stderr = echo_to_stderr

    @classmethod
    def for_config(cls, config: Config) -> Recorder:
        return cls(config.record, echo_to_stderr=config.faults.stderr_flood_kib_per_s is not None)

    def write(self, entry: dict[str, Any]) -> None:
        if self._path is not None:
            line = (json.dumps({**entry, "pid": os.getpid(), "ts": time.time()}) + "\n").encode()
            # One O_APPEND write per line keeps lines whole when two servers share a file.
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        if self._echo_to_stderr:
            # Blocking on purpose: with stderr-flood this is what stalls a tool call
            # when the client stops draining stderr.
            print(f"call {entry}", file=sys.stderr, flush=True)

    def call(self, tool: str, **args: Any) -> None:
        self.write({"tool": tool, "args": args})


async def _hang_middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    # Notifications carry no request id and expect no answer; only requests hang.
    if ctx.request_id is not None:
        await anyio.sleep_forever()
    return await call_next(ctx)


def _slow_init_middleware(seconds: float) -> Any:
    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "initialize":
            await anyio.sleep(seconds)
        return await call_next(ctx)

    return middleware


def _listing_middleware(config: Config) -> Any:
    """Reshape the ``tools/list`` answer (already in its wire shape, a dict, when
    middleware sees it): duplicates, generated bulk tools, pages."""
    faults = config.faults
    bulk = [
        {"name": f"bulk_{i:05d}", "description": f"Generated tool number {i}, listed but never callable.",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
        for i in range(faults.many_tools)
    ]

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or not isinstance(result, dict):
            return result
        tools = list(result["tools"])
        if faults.duplicate_listing:
            tools = tools + tools
        tools += bulk
        if config.page_size <= 0:
            return {**result, "tools": tools}
        cursor = (ctx.params or {}).get("cursor")
        start = int(cursor) if cursor else 0
        end = start + config.page_size
        page = {**result, "tools": tools[start:end]}
        page.pop("nextCursor", None)
        if end < len(tools):
            page["nextCursor"] = str(end)
        return page

    return middleware


def load_descriptions(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object of tool name -> description")
    return data


def build_server(config: Config, rec: Recorder | None = None) -> MCPServer[Any]:
    """The MCP server with every test tool; importable for in-process tests too."""
    rec = rec or Recorder.for_config(config)
    middleware: list[Any] = []
    if config.faults.hang:
        middleware.append(_hang_middleware)
    if config.faults.slow_init > 0:
        middleware.append(_slow_init_middleware(config.faults.slow_init))
    if config.page_size > 0 or config.faults.duplicate_listing or config.faults.many_tools:
        middleware.append(_listing_middleware(config))
    server: MCPServer[Any] = MCPServer(config.name, log_level="WARNING", middleware=middleware or None)

    def tool() -> Any:
        # the decorated function's name is the tool's name; None keeps its docstring
        def decorate(fn: Any) -> Any:
            return server.tool(description=config.descriptions.get(fn.__name__))(fn)

        return decorate

    @tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        rec.call("echo", text=text)
        return text

    @tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        rec.call("add", a=a, b=b)
        return a + b

    @tool()
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        rec.call("get_weather", city=city)
        return f"sunny in {city}"

    @tool()
    def whoami() -> str:
        """Return this server's name."""
        rec.call("whoami")
        return config.name

    @tool()
    def get_env(name: str) -> str:
        """Return the value of an environment variable, or <unset>."""
        rec.call("get_env", name=name)
        return os.environ.get(name, "<unset>")

    @tool()
    def env_keys() -> list[str]:
        """Return the sorted names of all environment variables."""
        rec.call("env_keys")
        return sorted(os.environ)

    @tool()
    async def sleep(seconds: float) -> str:
        """Sleep for the given number of seconds."""
        rec.call("sleep", seconds=seconds)
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            # the client cancelled the request (notifications/cancelled): proof for tests
            rec.write({"cancelled": "sleep", "args": {"seconds": seconds}})
            raise
        return "slept"

    @tool()
    def big(size: int) -> str:
        """Return a string of `size` characters."""
        rec.call("big", size=size)
        return "x" * size

    @tool()
    def fail(message: str) -> str:
        """Always fail with the given message."""
        rec.call("fail", message=message)
        raise ToolError(message)

    @tool()
    def crash() -> str:
        """Kill the server process at once."""
        rec.call("crash")
        # os._exit skips cleanup and flushing: the client sees the process vanish mid-call.
        os._exit(CRASH_EXIT_CODE)

    for extra, description in config.extra_tools.items():
        server.add_tool(_extra_tool(extra, rec), name=extra, description=description)

    return server


def _extra_tool(name: str, rec: Recorder) -> Any:
    def extra(text: str) -> str:
        rec.call(name, text=text)
        return text

    return extra


def _start_stderr_flood(kib_per_s: int) -> None:
    chunk = ("flood " + "." * 1017 + "\n").encode()  # 1 KiB per line
    burst = max(1, kib_per_s // 50)  # 50 bursts a second

    def run() -> None:
        while True:
            for _ in range(burst):
                # sys.stderr (not os.write) so a full pipe also blocks other stderr writers
                # that share its lock, like the per-call log line.
                sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
            time.sleep(0.02)

    threading.Thread(target=run, name="stderr-flood", daemon=True).start()


def _ignore_sigterm() -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Spawned after SIG_IGN so it inherits it; no start_new_session, so same group.
    # DEVNULL: the point is a stray process, not one that also holds the stdio pipes.
    child = subprocess.Popen(
        ["sleep", "300"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return child.pid


async def _serve_http(server: MCPServer[Any], config: Config, rec: Recorder | None = None) -> None:
    import uvicorn

    assert config.port is not None
    if config.transport == "sse":
        app = server.sse_app()
        path = "/sse"
    else:
        app = server.streamable_http_app()
        path = "/mcp"

    if rec is not None:
        app = _recording_requests(app, rec)
    if config.oauth_issuer is not None:
        app = _bearer_required(app, config.oauth_issuer, f"http://127.0.0.1:{config.port}{path}", rec)
    ignore_sigterm = config.faults.ignore_sigterm

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                if ignore_sigterm:
                    # uvicorn installs its own SIGTERM handler; put SIG_IGN back on top.
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                yield

    # Short graceful timeout: open SSE / GET streams and hung requests never finish on
    # their own, and tests should not wait uvicorn's default (forever) to stop a server.
    uv = _Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=config.port, log_level="warning", timeout_graceful_shutdown=1
        )
    )

    async def announce() -> None:
        while not uv.started:
            await asyncio.sleep(0.01)
        print(f"{config.name} ready on http://127.0.0.1:{config.port}{path}", file=sys.stderr, flush=True)

    task = asyncio.create_task(announce())
    try:
        await uv.serve()
    finally:
        task.cancel()


def _recording_requests(app: Any, rec: Recorder) -> Any:
    """Each POST's Authorization header and query string as one ``{"request": ...}``
    line: what a client authenticated each call with (per-call credentials)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") == "POST":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            rec.write({"request": {"authorization": headers.get("authorization"),
                                   "query": scope.get("query_string", b"").decode("latin-1")}})
        await app(scope, receive, send)

    return wrapped


def _bearer_required(app: Any, issuer: str, resource: str, rec: Recorder | None) -> Any:
    """The resource server's side of MCP authorization (see the module docstring)."""
    import jwt

    jwks = jwt.PyJWKClient(issuer.rstrip("/") + "/jwks", cache_keys=True)
    metadata_url = resource.rsplit("/", 1)[0] + "/.well-known/oauth-protected-resource/" + resource.rsplit("/", 1)[1]
    metadata = json.dumps({"resource": resource, "authorization_servers": [issuer]}).encode()

    async def respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": body})

    def verify(token: str) -> None:
        key = jwks.get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["RS256"], issuer=issuer, options={"verify_aud": False})

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        if scope["path"].startswith("/.well-known/oauth-protected-resource"):
            await respond(send, 200, metadata, [])
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("authorization", "")
        reason = "no bearer token"
        if given.startswith("Bearer "):
            try:
                await anyio.to_thread.run_sync(verify, given[7:])
                await app(scope, receive, send)
                return
            except Exception as exc:  # noqa: BLE001 - any bad token is refused the same way
                reason = f"{type(exc).__name__}: {exc}"
        if rec is not None:
            rec.write({"refused": reason})
        challenge = f'Bearer error="invalid_token", resource_metadata="{metadata_url}"'
        await respond(send, 401, b'{"error": "invalid_token"}', [(b"www-authenticate", challenge.encode())])

    return wrapped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=TRANSPORTS, default="stdio")
    parser.add_argument("--port", type=int, help="required for HTTP transports")
    parser.add_argument("--record", type=Path, help="append one JSON line per tool call here")
    parser.add_argument("--name", default=DEFAULT_NAME, help="server name, returned by whoami")
    parser.add_argument("--fault", action="append", default=[], metavar="FAULT", help="see above; repeatable")
    parser.add_argument("--descriptions", type=Path, help="JSON object: tool name -> description")
    parser.add_argument("--extra-tools", type=Path, help="JSON object: extra tool name -> description")
    parser.add_argument("--page-size", type=int, default=0, help="tools/list pages of this many tools")
    parser.add_argument("--stderr-text", default="", help="written to stderr at startup")
    parser.add_argument("--oauth-issuer", help="HTTP: require bearer JWTs from this OAuth issuer (see above)")
    ns = parser.parse_args(argv)

    try:
        faults = parse_faults(ns.fault)
    except ValueError as exc:
        parser.error(str(exc))
    if ns.transport != "stdio" and ns.port is None:
        parser.error(f"--port is required with --transport {ns.transport}")
    if ns.transport != "stdio" and faults.garbage_stdout:
        parser.error("garbage-stdout only applies to --transport stdio")

    try:
        descriptions = load_descriptions(ns.descriptions)
        extra_tools = load_descriptions(ns.extra_tools)
    except (ValueError, json.JSONDecodeError) as exc:
        parser.error(str(exc))
    config = Config(
        transport=ns.transport, port=ns.port, record=ns.record, name=ns.name, faults=faults,
        descriptions=descriptions, extra_tools=extra_tools, page_size=ns.page_size, oauth_issuer=ns.oauth_issuer,
    )
    rec = Recorder.for_config(config)
    server = build_server(config, rec)

    # Lets tests count (re)starts and find every pid that must die; `write` adds pid and ts.
    spawn_event: dict[str, Any] = {
        "event": "spawn",
        "name": config.name,
        "transport": config.transport,
        "port": config.port,
        "faults": faults.names(),
    }
    if faults.ignore_sigterm:
        spawn_event["grandchild_pid"] = _ignore_sigterm()
    rec.write(spawn_event)
    if ns.stderr_text:
        print(ns.stderr_text, file=sys.stderr, flush=True)
    if faults.exit_at_start:
        return 1
    if faults.stderr_flood_kib_per_s is not None:
        _start_stderr_flood(faults.stderr_flood_kib_per_s)
    if faults.slow_start > 0:
        time.sleep(faults.slow_start)
    if faults.exit_after > 0:
        threading.Timer(faults.exit_after, os._exit, args=(CRASH_EXIT_CODE,)).start()

    if config.transport == "stdio":
        if faults.garbage_stdout:
            # Before stdio_server() claims fd 1; afterwards stray prints go to stderr.
            sys.stdout.write("starting recorder...\nthis is not JSON\n{not json either\n")
            sys.stdout.flush()
        anyio.run(server.run_stdio_async)
        if faults.ignore_sigterm:
            # A stubborn server outlives stdin closing too; otherwise a client's
            # SIGTERM -> SIGKILL escalation would never be exercised.
            while True:
                signal.pause()
    else:
        asyncio.run(_serve_http(server, config, rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
