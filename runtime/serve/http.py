"""The one operator port of `serve`: /healthz, /readyz, /metrics, /status (and
POST /simulate when enabled). aiohttp, because livekit already depends on it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from .supervisor import Supervisor

log = logging.getLogger("voice_runtime.http")


class ServeCollector:
    """voice-runtime's serve metrics, read from the supervisor at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sup = self.supervisor
        reloads = CounterMetricFamily("voice_runtime_config_reloads", "Spec reloads by result.", labels=["result"])
        for result, count in sup.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        last = sup.catalog.last
        yield GaugeMetricFamily("voice_runtime_config_last_reload_successful",
                                "1 if the last reload was accepted in full, 0 if it kept a last good version.",
                                value=1 if (last is None or last.ok) and not sup.plugin_errors else 0)
        yield GaugeMetricFamily("voice_runtime_config_last_reload_timestamp_seconds",
                                "When the last reload ran (Unix time).", value=last.timestamp if last else 0)
        yield GaugeMetricFamily("voice_runtime_config_generation", "The newest accepted spec generation.",
                                value=sup.catalog.generation)
        yield GaugeMetricFamily("voice_runtime_agents_loaded", "Agents being served.", value=len(sup.catalog.agents))
        sessions = GaugeMetricFamily("voice_runtime_sessions_active", "Jobs running, per agent.", labels=["agent"])
        up = GaugeMetricFamily("voice_runtime_mcp_server_up", "1 if the MCP server is connected.",
                               labels=["agent", "server"])
        for name, entry in sorted(sup.catalog.agents.items()):
            sessions.add_metric([name], sup.sessions_active(name))
            for server, health in sup.mcp_health(name, entry).items():
                up.add_metric([name, server], 1 if health["state"] == "up" else 0)
        yield sessions
        yield up


def metrics_text(supervisor: Supervisor) -> bytes:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        # job processes write their counters (tool calls, livekit's) to files there
        registry = CollectorRegistry()
        registry.register(_ProcessFiles(folder))
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(ServeCollector(supervisor))
    return generate_latest(registry)


class _ProcessFiles:
    """prometheus_client's multiprocess aggregation over the folder and the files
    ``serve`` sheltered in subfolders of it (see ``shelter_metric_files``)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def collect(self) -> Any:
        import glob

        from prometheus_client.multiprocess import MultiProcessCollector

        files = glob.glob(os.path.join(self.folder, "**", "*.db"), recursive=True)
        return MultiProcessCollector.merge(files, accumulate=True)


def shelter_metric_files() -> None:
    """livekit's ``AgentServer.run()`` deletes every file in PROMETHEUS_MULTIPROC_DIR
    (fine for one server per process, but serve starts one per agent, also while
    running). Moving the files into a fresh subfolder first keeps the counts of jobs
    so far; a running process keeps writing to its file, moved or not (it is mmapped)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder or not os.path.isdir(folder):
        return
    files = [f for f in os.listdir(folder) if f.endswith(".db")]
    if not files:
        return
    kept = os.path.join(folder, "kept", str(time.time_ns()))
    os.makedirs(kept, exist_ok=True)
    for name in files:
        try:
            os.replace(os.path.join(folder, name), os.path.join(kept, name))
        except OSError:
            log.warning("could not keep metrics file %s", name, exc_info=True)


class _Forward:
    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Any:
        return self.registry.collect()


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


def _is_loopback(request: web.Request) -> bool:
    import ipaddress

    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if not peer:
        return False
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def make_app(supervisor: Supervisor, guard: ConnectionGuard | None = None) -> web.Application:
    from aiohttp import web

    from .simulate import MAX_BODY_BYTES

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reasons = supervisor.not_ready()
        if reasons:
            return web.Response(status=503, text="not ready:\n" + "".join(f"- {r}\n" for r in reasons))
        return web.Response(text="ready\n")

    async def metrics(_: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = supervisor.catalog.secrets.redact(metrics_text(supervisor).decode()).encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(_: web.Request) -> web.Response:
        # one line (pipe it through jq to read it): json's C encoder only runs without
        # indent, and with 1,000 agents indenting cost 3-4 times the rest of /status
        return web.Response(text=supervisor.catalog.secrets.dumps(supervisor.status()) + "\n",
                            content_type="application/json")

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[guard.middleware()] if guard else [])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    if supervisor.options.simulate:
        app.router.add_post("/simulate", Simulations(supervisor).handle)
    return app


def _error(status: int, message: str, **headers: str) -> web.Response:
    from aiohttp import web

    return web.json_response({"ok": False, "error": message}, status=status, headers=headers or None)


class Simulations:
    """POST /simulate: checks, limits, starts the fake job, and with ``wait`` waits
    for its report (see simulate.py)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.launching = 0  # simulate_job() calls not yet returned (their job is not listed yet)

    def running(self) -> int:
        return self.launching + sum(
            1 for w in list(self.supervisor.workers.values()) for job in w.server.active_jobs if job.fake_job)

    def room_in_use(self, room: str) -> bool:
        return any(job.job.room.name == room for w in list(self.supervisor.workers.values())
                   for job in w.server.active_jobs)

    async def handle(self, request: web.Request) -> web.Response:
        from aiohttp import web
        from livekit.protocol import models

        from .simulate import MAX_BODY_BYTES, MAX_CONCURRENT, BadRequest, parse, wait_flag

        sup = self.supervisor
        if not sup.options.simulate_from_anywhere and not _is_loopback(request):
            return _error(403, "POST /simulate is only accepted from this machine (a loopback address); "
                               "start serve with --simulate-from-anywhere to accept it from other hosts")
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                raw = await request.read()
        except TimeoutError:
            return _error(408, f"the body did not arrive within {BODY_TIMEOUT_S:g}s")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            return _error(400, f"body is not JSON: {exc}")
        try:
            sim = parse(body, wait=wait_flag(request.query.get("wait")))
        except BadRequest as exc:
            return _error(400, str(exc))
        worker = sup.workers.get(sim.agent)
        if worker is None or sim.agent in sup.draining or sup.stopping:
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
            await worker.server.simulate_job(room, fake_job=True,
                                             room_info=models.Room(sid=f"RM_{room}", name=room, metadata=sim.script()))
        except Exception as exc:  # noqa: BLE001 - livekit found no process for it; the caller is told
            log.warning("POST /simulate for %s: the job did not start: %s", sim.agent, exc)
            return _error(503, f"the job did not start: {type(exc).__name__}: {exc}")
        finally:
            self.launching -= 1
        if not sim.wait:
            return web.json_response({"agent": sim.agent, "room": room, "generation": worker.generation})
        report = await self._report(worker, room)
        return web.Response(status=200 if report.get("ok") else 502, content_type="application/json",
                            text=sup.catalog.secrets.dumps(report) + "\n")

    async def _report(self, worker: Any, room: str) -> dict[str, Any]:
        """The job's report, or why there is none: the job ended without writing
        one (it crashed, or its spec could not be read), or it took too long."""
        from .simulate import MAX_CALL_S, WAIT_STARTUP_S, take_result

        state = self.supervisor.catalog.state_dir
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_CALL_S + WAIT_STARTUP_S
        ended_at: float | None = None
        while loop.time() < deadline:
            report = take_result(state, room)
            if report is not None:
                return report
            if any(job.job.room.name == room for job in worker.server.active_jobs):
                ended_at = None
            elif ended_at is None:
                ended_at = loop.time()
            elif loop.time() - ended_at > 2.0:  # the report is written before the job ends
                return {"ok": False, "agent": worker.name, "room": room, "turns": [],
                        "error": "the job ended without a report (see the serve log)"}
            await asyncio.sleep(0.1)
        return {"ok": False, "agent": worker.name, "room": room, "turns": [],
                "error": f"no report within {MAX_CALL_S + WAIT_STARTUP_S:g}s"}


class _AcceptErrorsOnce:
    """asyncio logs every failed accept() (out of file descriptors) with a traceback,
    and retries each second per listening socket; under a flood that was 75 MiB of
    log in 40 s. One line per ACCEPT_ERROR_LOG_EVERY_S, with the count, is enough."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.previous = loop.get_exception_handler()
        self.last = float("-inf")
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < ACCEPT_ERROR_LOG_EVERY_S:
            self.suppressed += 1
            return
        self.last = now
        more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
        self.suppressed = 0
        log.error("cannot accept connections: %s%s", context.get("exception") or context["message"], more)


class OperatorPort:
    """The running operator port: its aiohttp runner and listening socket."""

    def __init__(self, runner: Any, server: asyncio.AbstractServer, guard: ConnectionGuard) -> None:
        self.runner, self.server, self.guard = runner, server, guard

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def start_http(supervisor: Supervisor, host: str, port: int) -> OperatorPort:
    from aiohttp import web

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_AcceptErrorsOnce(loop))
    guard = ConnectionGuard(None)
    # keepalive_timeout also bounds the wait for the first request's head;
    # lingering_time bounds reading the rest of a body nobody wanted
    runner = web.AppRunner(make_app(supervisor, guard), access_log=None, keepalive_timeout=IDLE_TIMEOUT_S,
                           lingering_time=2.0)
    await runner.setup()
    guard.server = runner.server
    server = await loop.create_server(guard, host, port, backlog=128, reuse_address=True)
    return OperatorPort(runner, server, guard)
