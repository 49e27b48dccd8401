"""`voice-runtime serve`: one livekit AgentServer per agent name, under one runner.

livekit allows one agent name per AgentServer and several servers in one asyncio
loop; its CLI drives exactly one. This runner starts a server per accepted spec,
registers new agents and drains removed ones as the folder changes, recycles
idle prewarmed processes when a spec or plugin changes (so they warm the new
generation and import the new plugin code), and drains everything on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import Catalog, Entry, Outcome, ReloadResult
from .reload import Reloader

if TYPE_CHECKING:
    from .mcp.pool import McpPool
    from .plugins import Plugins

log = logging.getLogger("voice_runtime.serve")


@dataclass
class ServeOptions:
    agents_dir: Path
    plugins_dir: Path | None
    http_host: str = "0.0.0.0"
    http_port: int = 8081
    executor: str = "process"  # or "thread"
    idle_processes: int = 1
    load_threshold: float = 0.7
    drain_timeout: float = 300.0
    scan_interval: float = 10.0
    unregistered: bool = False  # no LiveKit connection (development, tests)
    simulate: bool = False  # POST /simulate starts text-only fake jobs
    ws_url: str | None = None
    api_key: str | None = None
    api_secret: str | None = None


@dataclass
class AgentWorker:
    name: str
    server: Any  # livekit AgentServer
    task: asyncio.Task[None]
    generation: int
    registered: bool = False
    error: str | None = None
    started_at: float = field(default_factory=time.time)


class Supervisor:
    def __init__(self, options: ServeOptions, plugins: Plugins) -> None:
        self.options = options
        self.plugins = plugins
        self.catalog = Catalog(options.agents_dir, plugins)
        self.workers: dict[str, AgentWorker] = {}
        self.reloads: dict[str, int] = {"success": 0, "failure": 0}
        self.pool: McpPool | None = None
        self.draining: set[str] = set()
        self.stopping = False
        self._lock = asyncio.Lock()  # reloads and registrations never overlap
        self._stop = asyncio.Event()
        self.reloader: Reloader | None = None
        # plugin files that do not load (start) or the newest plugin change that was refused
        self.plugin_errors: list[str] = plugins.problems
        # the plugin files last tried: a scan that finds the same bytes does nothing
        self._plugin_fingerprint = plugins.files.fingerprint if plugins.files is not None else ()
        self._freeze: asyncio.Task[None] | None = None
        # name -> (LoadedSpec, describe(), server -> pool key), made once per accepted version
        self._described: dict[str, tuple[Any, dict[str, Any], dict[str, str]]] = {}

    # -- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        from . import job
        from .mcp.pool import McpPool

        self.pool = McpPool()
        if self.options.executor == "thread":
            job.SHARED_POOL = self.pool
        from .http import start_http

        loop = asyncio.get_running_loop()
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            # not loop.add_signal_handler, whose wake-up byte (and with it the signal) is
            # dropped when the loop's self-pipe is full: with 1,000 agents livekit's
            # executor callbacks fill it during any pause of the loop. As livekit's own CLI
            # does, the handler queues the stop itself.
            previous[sig] = signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self.request_stop))
        http = await start_http(self, self.options.http_host, self.options.http_port)
        log.info("serving %s on http://%s:%d (/healthz /readyz /metrics /status)", self.options.agents_dir,
                 self.options.http_host, self.options.http_port)
        try:
            await self._serve()
        finally:
            await http.cleanup()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def _serve(self) -> None:
        from .plugins import publish_files

        publish_files(self.catalog.state_dir, self.plugins)  # job processes import these, not the folder
        await self.reload({"specs"}, "start")
        self.reloader = Reloader(
            {"specs": self.options.agents_dir, **({"plugins": self.options.plugins_dir} if self.options.plugins_dir else {})},
            self.reload, scan_interval=self.options.scan_interval,
        )
        await self.reloader.start()
        await self._stop.wait()
        await self._shutdown()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stopping: draining %d agent(s), at most %.0fs", len(self.workers), self.options.drain_timeout)
        self._stop.set()

    async def _shutdown(self) -> None:
        self.stopping = True
        if self.reloader is not None:
            await self.reloader.aclose()
        if self._freeze is not None:
            self._freeze.cancel()
        async with self._lock:
            await asyncio.gather(*(self._remove(name, unpublish=False) for name in list(self.workers)))
        if self.pool is not None:
            await self.pool.aclose()

    # -- reloads ------------------------------------------------------------------

    async def reload(self, kinds: set[str], cause: str) -> ReloadResult | None:
        """Reload what may have changed. Every reload is logged and counted by its
        outcome alone, whoever noticed the change (``cause``: start, watch, scan)."""
        async with self._lock:
            if self.stopping:
                return None
            started = time.perf_counter()
            plugins = await self._reload_plugins(cause, started) if "plugins" in kinds else Outcome.NOOP
            # a rejected plugin change is recorded already; specs are still read with the old plugins
            before = self.catalog.last
            result = await self._reload_catalog()
            if result.outcome is Outcome.NOOP and plugins is not Outcome.APPLIED:
                return result
            await self._apply(result, plugins_changed=plugins is Outcome.APPLIED)
            if result.added or result.removed:
                self._freeze_heap_soon()
            summary = result.summary()
            if result.outcome is Outcome.APPLIED and not result.changed and before is not None:  # a fix
                summary = "the previous problems are gone; no agent changed"
            if plugins is Outcome.APPLIED:
                summary = "plugins reloaded" + ("" if result.outcome is Outcome.NOOP else f"; {summary}")
            outcome = Outcome.APPLIED if result.outcome is Outcome.NOOP else result.outcome
            self._record(outcome, cause, started, summary, [str(e) for e in result.errors], result.as_dict())
            return result

    def _record(self, outcome: Outcome, cause: str, started: float, summary: str, problems: list[str],
                detail: dict[str, Any] | None = None) -> None:
        """The one place a reload is logged and counted."""
        ok = outcome is Outcome.APPLIED
        self.reloads["success" if ok else "failure"] += 1
        ms = (time.perf_counter() - started) * 1000
        log.log(logging.INFO if ok else logging.WARNING, "reload (%s) generation %d in %.0f ms: %s", cause,
                self.catalog.generation, ms, summary, extra={"reload": detail or {"outcome": outcome.value}})
        for problem in problems:
            log.warning("%s", problem)

    async def _reload_catalog(self) -> ReloadResult:
        # off the event loop: reading and validating files (and the plugin hooks that
        # run meanwhile) must never stall /healthz, LiveKit's pings or a drain
        try:
            return await asyncio.to_thread(self.catalog.reload)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - a plugin hook raised
            log.error("reload failed; the last good generation keeps serving", exc_info=exc)
            return self.catalog.refuse(f"{type(exc).__name__}: {exc}")

    async def _reload_plugins(self, cause: str, started: float) -> Outcome:
        """New plugin code, if the files' bytes changed and every file loads. Each
        changed file is first tried in a child process (plugins.trial_import); the
        import itself runs in a thread, so a slow plugin never stalls the loop."""
        from .plugins import make_plugin_manager, plugin_files, publish_files

        folder = self.options.plugins_dir
        files = await asyncio.to_thread(plugin_files, folder)
        if files.fingerprint == self._plugin_fingerprint:
            return Outcome.NOOP
        self._plugin_fingerprint = files.fingerprint

        def load() -> tuple[Plugins, list[str]]:
            plugins = make_plugin_manager(folder, files=files)
            return plugins, plugins.problems  # registering runs plugin code too

        plugins, problems = await asyncio.to_thread(load)
        if problems:
            self.plugin_errors = problems
            self._record(Outcome.REJECTED, cause, started, "plugins changed but do not load; keeping the previous ones",
                         problems)
            return Outcome.REJECTED
        self.plugin_errors = []
        self.plugins = plugins
        publish_files(self.catalog.state_dir, plugins)
        self.catalog.use_plugins(plugins)
        return Outcome.APPLIED

    async def _apply(self, result: ReloadResult, *, plugins_changed: bool) -> None:
        for name in result.removed:
            await self._remove(name)
        for name in result.added:
            await self._add(name)
        for name in result.updated:
            worker = self.workers.get(name)
            if worker is not None:
                worker.generation = self.catalog.agents[name].generation
        if self.pool is not None and result.changed:
            # re-warm only what changed: unchanged server blocks keep their connections
            asyncio.ensure_future(self.pool.retain(e.loaded for e in self.catalog.agents.values()))
        recycle = set(self.workers) if plugins_changed else set(result.updated)
        for name in recycle:
            _recycle_idle(self.workers[name].server)

    def _freeze_heap_soon(self) -> None:
        """Once the agents' servers have started, move what they built into gc's permanent
        generation. With one AgentServer per agent the heap is large (about 470,000
        objects for 1,000 agents) and almost all of it lives as long as the process;
        without this each full collection walks it all, stalling the loop (reloads,
        /status, LiveKit's availability answers) for 100-450 ms every few seconds. Redone
        after agents are added or removed (unfreezing first, so drained servers are freed)."""
        if self._freeze is None or self._freeze.done():
            self._freeze = asyncio.create_task(self._freeze_heap(), name="gc-freeze")

    async def _freeze_heap(self) -> None:
        deadline = time.monotonic() + 30.0  # an unreachable LiveKit never registers them
        while time.monotonic() < deadline and not all(
                w.registered or w.error or w.task.done() for w in self.workers.values()):
            await asyncio.sleep(0.2)
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    async def _add(self, name: str) -> None:
        from livekit.agents import AgentServer, JobExecutorType

        from .job import entrypoint, prewarm

        o = self.options
        state, plugins_dir = str(self.catalog.state_dir), str(o.plugins_dir) if o.plugins_dir else None
        server = AgentServer(
            job_executor_type=JobExecutorType.THREAD if o.executor == "thread" else JobExecutorType.PROCESS,
            num_idle_processes=o.idle_processes,
            load_threshold=o.load_threshold,
            drain_timeout=int(o.drain_timeout),
            initialize_process_timeout=30.0,
            max_retry=2**31,  # an unreachable LiveKit is retried for ever (<= 10 s apart); /readyz says so
            ws_url=o.ws_url or "", api_key=o.api_key or "", api_secret=o.api_secret or "",
            host="127.0.0.1", port=0,  # livekit's own health port; ours is --http-port
            setup_fnc=functools.partial(prewarm, agent=name, state_dir=state, plugins_dir=plugins_dir),
        )
        server.rtc_session(functools.partial(entrypoint, agent=name, state_dir=state, plugins_dir=plugins_dir),
                           agent_name=name)
        worker = AgentWorker(name, server, asyncio.Future(), self.catalog.agents[name].generation)

        def registered(*_: Any) -> None:
            worker.registered, worker.error = True, None
            log.info("agent %s %s", name, "ready (not connected to LiveKit: --unregistered)"
                     if o.unregistered else "registered with LiveKit")

        server.on("worker_registered", registered)
        if o.unregistered:
            server.on("worker_started", registered)
        worker.task = asyncio.create_task(self._run_server(worker), name=f"agent-{name}")
        self.workers[name] = worker

    async def _run_server(self, worker: AgentWorker) -> None:
        from .http import shelter_metric_files

        try:
            shelter_metric_files()  # run() empties the metrics folder; the counts so far must survive
            await worker.server.run(devmode=False, unregistered=self.options.unregistered)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one agent's failure is reported, others keep serving
            worker.error = f"{type(exc).__name__}: {exc}"
            log.error("agent %s stopped: %s", worker.name, worker.error)

    async def _remove(self, name: str, *, unpublish: bool = True) -> None:
        worker = self.workers.get(name)
        if worker is None:
            return
        self.draining.add(name)
        try:
            with contextlib.suppress(asyncio.TimeoutError, RuntimeError):
                await asyncio.wait_for(worker.server.drain(), timeout=self.options.drain_timeout)
            with contextlib.suppress(Exception):
                await worker.server.aclose()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(worker.task, timeout=10)
        finally:
            self.draining.discard(name)
            self.workers.pop(name, None)
            if unpublish:
                self.catalog.unpublish(name)
            log.info("agent %s drained and unregistered", name)

    # -- what /status, /readyz and /metrics show ----------------------------------------

    def sessions_active(self, name: str) -> int:
        worker = self.workers.get(name)
        return len(worker.server.active_jobs) if worker is not None else 0

    def not_ready(self) -> list[str]:
        reasons = []
        if self.catalog.last is None:  # the first reload runs off the loop: /readyz answers meanwhile
            reasons.append("the specs are still being loaded")
        elif not self.catalog.agents:
            reasons.append("no agent is loaded")
        for name, entry in self.catalog.agents.items():
            worker = self.workers.get(name)
            if worker is None or not worker.registered:
                why = (worker.error if worker is not None else None) or (
                    f"connecting to LiveKit at {self.options.ws_url}" if not self.options.unregistered else "starting")
                reasons.append(f"agent {name} is not registered ({why})")
            for server, health in self.mcp_health(name, entry).items():
                if entry.loaded.spec.mcp_servers[server].required and health["state"] != "up":
                    reasons.append(f"agent {name}: required MCP server {server} is {health['state']}"
                                   f" ({health['error'] or 'connecting'})")
        return reasons

    def _described_view(self, name: str, entry: Entry) -> tuple[dict[str, Any], dict[str, str]]:
        """describe() and the pool keys of an agent's servers, computed once per
        accepted version: /status and /metrics ask for them on every scrape."""
        cached = self._described.get(name)
        if cached is None or cached[0] is not entry.loaded:
            from .mcp.pool import server_key
            from .summary import describe

            keys = {server: server_key(entry.loaded, server) for server in entry.loaded.spec.mcp_servers}
            cached = self._described[name] = (entry.loaded, describe(entry.loaded), keys)
        return cached[1], cached[2]

    def mcp_health(self, name: str, entry: Entry) -> dict[str, dict[str, Any]]:
        _, keys = self._described_view(name, entry)
        conns = self.pool.by_key() if self.pool is not None else {}
        idle = {"state": "idle", "error": None, "tools": []}
        return {server: conns[key].health().as_dict() if key in conns else dict(idle) for server, key in keys.items()}

    def status(self) -> dict[str, Any]:
        agents = []
        for name, entry in sorted(self.catalog.agents.items()):
            d, _ = self._described_view(name, entry)
            health = self.mcp_health(name, entry)
            worker = self.workers.get(name)
            agents.append({
                "name": name, "file": d["file"], "generation": entry.generation, "digest": entry.loaded.digest,
                "accepted_at": entry.accepted_at, "mode": d["mode"], "providers": d["providers"],
                "mcp_servers": {s: {**info, **health[s]} for s, info in d["mcp_servers"].items()},
                "tools": d["tools"], "registered": bool(worker and worker.registered),
                "error": worker.error if worker else None, "draining": name in self.draining,
                "sessions_active": self.sessions_active(name),
            })
        for gone in set(self._described) - set(self.catalog.agents):
            del self._described[gone]
        last = self.catalog.last
        not_ready = self.not_ready()
        return {
            "agents": agents,
            "generation": self.catalog.generation,
            "last_reload": last.as_dict() if last else None,
            "last_successful_reload_at": self.catalog.last_success_at,
            "plugin_errors": self.plugin_errors,
            "ready": not not_ready,
            "not_ready": not_ready,
            "pid": os.getpid(),
        }


def _recycle_idle(server: Any) -> None:
    """Close the idle prewarmed processes of a server; livekit's pool spawns fresh
    ones, which import the current plugin code and warm the current spec. There is
    no public API for this: the queue is livekit's (1.8.9), so a missing attribute
    only means idle processes serve one more call with an older warm-up."""
    pool = getattr(server, "_proc_pool", None)
    queue = getattr(pool, "_warmed_proc_queue", None)
    if queue is None:
        return
    idle = []
    while not queue.empty():
        idle.append(queue.get_nowait())
    for proc in idle:
        asyncio.ensure_future(proc.aclose())
    if idle:
        log.info("recycling %d idle process(es)", len(idle))


def _count_children_once_for_all_servers() -> None:
    """Every livekit AgentServer (1.8.9) refreshes a process-wide gauge, the number of
    this process's children, every 0.5 s when PROMETHEUS_MULTIPROC_DIR is set, and
    psutil walks all of /proc to count them. With one server per agent that is one
    walk per agent per 0.5 s for the same number: 1,000 agents kept ~60 % of a core
    busy doing it. Count at most once per 0.5 s for all of them. livekit's function is
    private: without it nothing changes."""
    from livekit.agents.telemetry import metrics as livekit_metrics

    update = getattr(livekit_metrics, "_update_child_proc_count", None)
    if update is None or getattr(update, "shared_by_voice_runtime", False):
        return
    lock, last = threading.Lock(), [float("-inf")]

    def shared() -> None:
        with lock:
            now = time.monotonic()
            if now - last[0] < 0.5:
                return
            last[0] = now
        update()

    shared.shared_by_voice_runtime = True  # type: ignore[attr-defined]
    livekit_metrics._update_child_proc_count = shared


def run_serve(**kwargs: Any) -> int:
    """The serve process: metrics shared with job processes, then the supervisor."""
    import tempfile

    from .plugins import make_plugin_manager

    # before prometheus_client is imported anywhere: job processes (forkserver
    # children, which inherit this environment) write their counters here
    made_metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="voice-runtime-metrics-")
    options = ServeOptions(**kwargs)
    plugins = make_plugin_manager(options.plugins_dir)
    for problem in plugins.problems:
        log.error("plugin problem: %s", problem)
    from .build import import_livekit_plugins

    import_livekit_plugins()  # livekit wants plugins registered on the main thread
    _count_children_once_for_all_servers()
    supervisor = Supervisor(options, plugins)
    try:
        asyncio.run(supervisor.run())
    except OSError as exc:  # the operator port is taken
        log.error("cannot serve on %s:%d: %s", options.http_host, options.http_port, exc.strerror or exc)
        return 2
    finally:
        import shutil

        # the published specs hold expanded ${VAR} values: they do not outlive the process
        shutil.rmtree(supervisor.catalog.state_dir, ignore_errors=True)
        if made_metrics_dir is not None:
            shutil.rmtree(made_metrics_dir, ignore_errors=True)
    return 0
