"""The one operator port of `serve`: / (the status page), /healthz, /readyz,
/metrics, /status, /talk (browser calls, talk.py) (and POST /simulate and POST /calls
when enabled). aiohttp, because livekit already depends on it.

The port knows serve only through ``Operator``, which the supervisor implements:
what it shows is computed there (see status.py), and every response leaves
through the operator's ``SecretSet``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .coalesce import Coalescer
from .peers import cross_site, is_loopback

if TYPE_CHECKING:
    from aiohttp import web

    from ..spec.secrets import SecretSet

log = logging.getLogger("voice_runtime.http")


class Call(NamedTuple):
    """A job running now, as POST /simulate needs to know it."""

    agent: str
    room: str
    simulated: bool  # a fake job started by POST /simulate
    ended: bool = False  # a simulated call that is over, its process still shutting down


class Operator(Protocol):
    """What the operator port asks of serve."""

    @property
    def secrets(self) -> SecretSet:
        """Every value a response could carry that must not leave (``${VAR}`` values)."""
        ...

    def not_ready(self) -> list[str]:
        """Why serve is not ready, one sentence each; empty when it is."""
        ...

    def status(self, agents: set[str] | None = None) -> dict[str, Any]:
        """The /status document; with ``agents``, only those agents are listed."""
        ...

    def metrics_text(self) -> bytes:
        """The Prometheus exposition."""
        ...

    # POST /simulate

    def serving_generation(self, agent: str) -> int | None:
        """The generation the agent serves now; None when it is not serving (unknown,
        being drained, or serve is stopping)."""
        ...

    def calls(self) -> list[Call]:
        """Every job running now, over all agents (a simulated call that has ended
        is listed, ``ended``, until its process exits)."""
        ...

    async def start_simulation(self, agent: str, room: str, script: str) -> None:
        """Start a fake job of ``agent`` in ``room`` whose metadata is ``script``;
        raises when livekit does not start it."""
        ...

    def take_simulation_report(self, room: str) -> dict[str, Any] | None:
        """The report of the simulated call in ``room``, once its job wrote it."""
        ...


# The operator port faces whoever can reach it. A connection that has not sent a
# whole request head within IDLE_TIMEOUT_S is closed (aiohttp's keep-alive timer
# also runs before the first request); a body must arrive within BODY_TIMEOUT_S.
# At most MAX_CONNECTIONS are open: a new one closes the oldest idle one, so a
# flood of half-sent requests (1,010 of them once stopped /healthz and ran serve
# out of file descriptors) only pushes each other out, and a probe that sends
# its request at once is answered.
IDLE_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 256
ACCEPT_ERROR_LOG_EVERY_S = 10.0


class ConnectionGuard:
    """The protocol factory of the operator port: aiohttp's, with the cap."""

    def __init__(self, server: Any, limit: int = MAX_CONNECTIONS) -> None:
        self.server = server  # aiohttp's web.Server
        self.limit = limit
        self.busy: set[Any] = set()  # handling a request now (aiohttp's handlers take no weak references)
        self.evicted: set[Any] = set()  # closed, not yet gone from the server's list
        self.evictions = 0

    def __call__(self) -> Any:
        connections = self.server.connections
        self.evicted.intersection_update(connections)
        open_ = [h for h in connections if h not in self.evicted]
        excess = len(open_) - self.limit + 1
        for handler in open_:  # oldest first
            if excess <= 0:
                break
            if handler not in self.busy:
                self.evicted.add(handler)
                handler.force_close()
                self.evictions += 1
                excess -= 1
        # every open connection busy: the new one is still accepted; busy ones are
        # bounded by the handlers' own timeouts
        return self.server()

    def middleware(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def mark_busy(request: web.Request, handler: Any) -> Any:
            self.busy.add(request.protocol)
            try:
                return await handler(request)
            finally:
                self.busy.discard(request.protocol)

        return mark_busy


def make_app(operator: Operator, *, simulate: bool = False, simulate_from_anywhere: bool = False,
             guard: ConnectionGuard | None = None, talk: Any = None, calls: Any = None,
             documents: Coalescer | None = None) -> web.Application:
    from aiohttp import web

    from .simulate import MAX_BODY_BYTES

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reasons = operator.not_ready()
        if reasons:
            return web.Response(status=503, text="not ready:\n" + "".join(f"- {r}\n" for r in reasons))
        return web.Response(text="ready\n")

    # /status, the page and /metrics are built once for all the requests that arrive
    # together (coalesce.py): a flood of them costs a few builds, and /healthz is
    # answered between two builds
    documents = documents if documents is not None else Coalescer()

    async def build_metrics() -> bytes:
        return operator.secrets.redact(operator.metrics_text().decode()).encode()

    async def metrics(_: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = await documents.get("metrics", "metrics", build_metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def status_text(wanted: frozenset[str] | None) -> Callable[[], Awaitable[tuple[int, str]]]:
        async def build() -> tuple[int, str]:
            document = operator.status(set(wanted) if wanted else None)
            if wanted and not document["agents"]:  # a typo must not look like an agent with nothing to say
                return 404, json.dumps({"ok": False, "error": f"no agent named {', '.join(sorted(wanted))[:200]!r} "
                                                              "is served"})
            # one line (pipe it through jq to read it): json's C encoder only runs without
            # indent, and with 1,000 agents indenting cost 3-4 times the rest of /status
            return 200, operator.secrets.dumps(document) + "\n"

        return build

    async def status(request: web.Request) -> web.Response:
        # ?agent=NAME (repeatable): only those agents, for a poller that watches one
        # (with 1,000 agents the whole document is ~0.8 MB and ~30 ms to build)
        wanted = frozenset(request.query.getall("agent", [])) or None
        code, text = await documents.get("status", ("status", wanted), status_text(wanted))
        return web.Response(status=code, text=text, content_type="application/json")

    async def build_page() -> str:
        from .page import render

        # from a /status build that starts after this one: redacted as data, then
        # escaped (an escaped secret, "&amp;", would slip past redact())
        _, text = await documents.get("status", ("status", None), status_text(None))
        return render(json.loads(text))

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=await documents.get("page", "page", build_page), content_type="text/html",
                            charset="utf-8", headers={"Cache-Control": "no-store"})

    @web.middleware
    async def same_site(request: web.Request, handler: Any) -> Any:
        # probes and scrapes carry nothing a page could use, whatever Host they name
        refused = None if request.path in ("/healthz", "/readyz", "/metrics") else cross_site(request)
        if refused:
            log.warning("%s %r refused: %s", request.method, request.path[:200], refused)
            return _error(403, refused)
        return await handler(request)

    middlewares = ([guard.middleware()] if guard else []) + [same_site]
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app.router.add_get("/", page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    if simulate:
        app.router.add_post("/simulate", Simulations(operator, from_anywhere=simulate_from_anywhere).handle)
    if talk is not None:  # browser calls (talk.py)
        talk.add_routes(app)
    if calls is not None:  # POST /calls: an agent calls a number (phones.py)
        calls.add_routes(app)
    return app


def _error(status: int, message: str, **headers: str) -> web.Response:
    from aiohttp import web

    return web.json_response({"ok": False, "error": message}, status=status, headers=headers or None)


class BadBody(Exception):
    """A request body refused: ``status`` and what to tell the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The request's JSON body (None when empty), or BadBody: over ``max_bytes``
    (said before a byte of it is read when Content-Length tells), not arrived within
    BODY_TIMEOUT_S, not JSON, or nested too deep for the decoder (16 KB of ``[``
    raised RecursionError, a 500, before this refused it). Every POST endpoint
    reads its body here."""
    from aiohttp import web

    if request.content_length is not None and request.content_length > max_bytes:
        raise BadBody(413, f"the body is over {max_bytes} bytes")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.read()
    except TimeoutError:
        raise BadBody(408, f"the body did not arrive within {BODY_TIMEOUT_S:g}s") from None
    except web.HTTPRequestEntityTooLarge:
        raise BadBody(413, f"the body is over {max_bytes} bytes") from None
    too_deep = BadBody(400, "the body is not JSON this endpoint takes (nested too deep)")
    try:
        body = json.loads(raw or b"null")
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:
        raise BadBody(400, f"body is not JSON: {exc}") from None
    # what the decoder took may still be too deep to print in an error (900 levels
    # of `[` decoded, then json.dumps of it in a 400's message recursed too far)
    if _depth_over(body, MAX_BODY_DEPTH):
        raise too_deep
    return body


MAX_BODY_DEPTH = 32  # no endpoint takes a body nested half as deep


def _depth_over(value: Any, limit: int) -> bool:
    """``value`` nests lists and objects more than ``limit`` deep (walked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            if level >= limit:
                return True
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


class Simulations:
    """POST /simulate: checks, limits, starts the fake job, and with ``wait`` waits
    for its report (see simulate.py)."""

    def __init__(self, operator: Operator, *, from_anywhere: bool = False) -> None:
        self.operator = operator
        self.from_anywhere = from_anywhere
        self.launching = 0  # start_simulation() calls not yet returned (their job is not listed yet)

    def running(self) -> int:
        """Simulated calls in progress: an ended call's process may take seconds to
        shut down, and it no longer counts; browser calls are fake jobs too, bounded by
        --max-browser-calls instead."""
        from .talk import ROOM_PREFIX

        return self.launching + sum(1 for call in self.operator.calls()
                                    if call.simulated and not call.ended and not call.room.startswith(ROOM_PREFIX))

    def room_in_use(self, room: str, agent: str | None = None) -> bool:
        return any(call.room == room and not call.ended and agent in (None, call.agent)
                   for call in self.operator.calls())

    async def handle(self, request: web.Request) -> web.Response:
        from aiohttp import web

        from .simulate import MAX_BODY_BYTES, MAX_CONCURRENT, BadRequest, parse, wait_flag

        op = self.operator
        if not self.from_anywhere and not is_loopback(request):
            return _error(403, "POST /simulate is only accepted from this machine (a loopback address); "
                               "start serve with --simulate-from-anywhere to accept it from other hosts")
        try:
            body = await read_json(request, MAX_BODY_BYTES)
        except BadBody as exc:
            return _error(exc.status, str(exc))
        try:
            sim = parse(body, wait=wait_flag(request.query.get("wait")))
        except BadRequest as exc:
            return _error(400, str(exc))
        generation = op.serving_generation(sim.agent)
        if generation is None:
            return _error(404, f"no agent named {sim.agent!r} is serving")
        room = sim.room or f"sim-{time.time_ns()}"
        if sim.room and self.room_in_use(room):
            return _error(409, f"room {room!r} already has a call in progress")
        running = self.running()
        if running >= MAX_CONCURRENT:
            return _error(429, f"{running} simulated calls are running; at most {MAX_CONCURRENT} at once",
                          **{"Retry-After": "5"})
        self.launching += 1
        try:
            await op.start_simulation(sim.agent, room, sim.script())
        except PermissionError as exc:
            return _error(403, str(exc))
        except Exception as exc:  # noqa: BLE001 - livekit found no process for it; the caller is told
            log.warning("POST /simulate for %s: the job did not start: %s", sim.agent, exc)
            return _error(503, f"the job did not start: {type(exc).__name__}: {exc}")
        finally:
            self.launching -= 1
        if not sim.wait:
            now = op.serving_generation(sim.agent)
            return web.json_response({"agent": sim.agent, "room": room,
                                      "generation": now if now is not None else generation})
        report = await self._report(sim.agent, room)
        return web.Response(status=200 if report.get("ok") else 502, content_type="application/json",
                            text=op.secrets.dumps(report) + "\n")

    async def _report(self, agent: str, room: str) -> dict[str, Any]:
        """The job's report, or why there is none: the job ended without writing
        one (it crashed, or its spec could not be read), or it took too long."""
        from .simulate import MAX_CALL_S, WAIT_STARTUP_S

        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_CALL_S + WAIT_STARTUP_S
        ended_at: float | None = None
        while loop.time() < deadline:
            report = self.operator.take_simulation_report(room)
            if report is not None:
                return report
            if self.room_in_use(room, agent):
                ended_at = None
            elif ended_at is None:
                ended_at = loop.time()
            elif loop.time() - ended_at > 2.0:  # the report is written before the job ends
                return {"ok": False, "agent": agent, "room": room, "turns": [],
                        "error": "the job ended without a report (see the serve log)"}
            await asyncio.sleep(0.1)
        return {"ok": False, "agent": agent, "room": room, "turns": [],
                "error": f"no report within {MAX_CALL_S + WAIT_STARTUP_S:g}s"}


class _Throttle:
    """One log line per ``every_s`` seconds; how many were held back in between."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.last = float("-inf")
        self.suppressed = 0

    def due(self) -> int | None:
        """The number held back since the last line if a line is due now, else None."""
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.suppressed += 1
            return None
        held, self.last, self.suppressed = self.suppressed, now, 0
        return held


class _AcceptErrorsOnce:
    """asyncio logs every failed accept() (out of file descriptors) with a traceback,
    and retries each second per listening socket; under a flood that was 75 MiB of
    log in 40 s. One line per ACCEPT_ERROR_LOG_EVERY_S, with the count, is enough."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.previous = loop.get_exception_handler()
        self.throttle = _Throttle(ACCEPT_ERROR_LOG_EVERY_S)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        held = self.throttle.due()
        if held is None:
            return
        more = f" ({held} more since the last report)" if held else ""
        log.error("cannot accept connections: %s%s", context.get("exception") or context["message"], more)


class OperatorPort:
    """The running operator port: its aiohttp runner and listening socket."""

    def __init__(self, runner: Any, server: asyncio.AbstractServer, guard: ConnectionGuard,
                 documents: Coalescer) -> None:
        self.runner, self.server, self.guard = runner, server, guard
        self.documents = documents  # its builds and requests are counted in /metrics

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()


class _BadRequestsOnce(logging.Filter):
    """aiohttp logs every malformed request (TLS to a plain port, huge headers, a
    bad Content-Length) with a traceback: 300 such connections wrote 164 KB in under
    a second. One line per 10 s, without the traceback, counting the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle = _Throttle(10.0)

    def filter(self, record: logging.LogRecord) -> bool:
        held = self.throttle.due()
        if held is None:
            return False
        reason = record.exc_info[1] if record.exc_info and record.exc_info[1] is not None else None
        text = f"{record.getMessage()}: {type(reason).__name__}: {reason}" if reason else record.getMessage()
        record.msg, record.args = "%s (%d more bad request(s) since the last such line)", (text[:300], held)
        record.exc_info = record.exc_text = None
        return True


async def start_http(operator: Operator, host: str, port: int, *, simulate: bool = False,
                     simulate_from_anywhere: bool = False, talk: Any = None, calls: Any = None) -> OperatorPort:
    from aiohttp import web

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_AcceptErrorsOnce(loop))
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestsOnce) for f in server_log.filters):
        server_log.addFilter(_BadRequestsOnce())
    guard = ConnectionGuard(None)
    documents = Coalescer()
    # keepalive_timeout also bounds the wait for the first request's head;
    # lingering_time bounds reading the rest of a body nobody wanted
    app = make_app(operator, simulate=simulate, simulate_from_anywhere=simulate_from_anywhere, guard=guard,
                   talk=talk, calls=calls, documents=documents)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=IDLE_TIMEOUT_S, lingering_time=2.0)
    await runner.setup()
    guard.server = runner.server
    server = await loop.create_server(guard, host, port, backlog=128, reuse_address=True)
    return OperatorPort(runner, server, guard, documents)
