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

from ..catalog import Catalog, Entry, Outcome, ReloadResult
from ..reload import Reloader

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..mcp.pool import McpPool
    from ..plugins import Plugins
    from ..secrets import SecretSet

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
    simulate_from_anywhere: bool = False  # otherwise only loopback peers may POST /simulate
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
    def __init__(self, options: ServeOptions, plugins: Plugins, state_dir: Path | None = None,
                 secrets: SecretSet | None = None) -> None:
        self.options = options
        self.plugins = plugins
        self.catalog = Catalog(options.agents_dir, plugins, state_dir, secrets=secrets)
        self.workers: dict[str, AgentWorker] = {}
        self.reloads: dict[str, int] = {"success": 0, "failure": 0}
        self.pool: McpPool | None = None
        self.draining: set[str] = set()
        self.stopping = False
        self._lock = asyncio.Lock()  # reloads and registrations never overlap
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second stop signal: calls are cut, not drained
        self.pending_stop = False  # a stop signal arrived before run() listened for them
        self.exit_code = 0
        self._signal_reloads: set[asyncio.Task[Any]] = set()
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
        from ..mcp.pool import McpPool

        self.pool = McpPool()
        if self.options.executor == "thread":
            job.SHARED_POOL = self.pool
        from .http import start_http

        loop = asyncio.get_running_loop()
        restore = _listen_for_signals(loop, stop=self.request_stop, reload=self.request_reload)
        if self.pending_stop:
            self.request_stop()
        try:
            http = await start_http(self, self.options.http_host, self.options.http_port)
            log.info("serving %s on http://%s:%d (/healthz /readyz /metrics /status)", self.options.agents_dir,
                     self.options.http_host, self.options.http_port)
            try:
                await self._serve()
            finally:
                await http.cleanup()
        finally:
            restore()

    async def _serve(self) -> None:
        from ..plugins import publish_files

        publish_files(self.catalog.state_dir, self.plugins)  # job processes import these, not the folder
        await self.reload({"specs"}, "start")
        self.reloader = Reloader(
            {"specs": self.options.agents_dir, **({"plugins": self.options.plugins_dir} if self.options.plugins_dir else {})},
            self.reload, scan_interval=self.options.scan_interval,
        )
        await self.reloader.start()
        await self._stop.wait()
        await self._shutdown()

    def request_stop(self, signum: int | None = None) -> None:
        """The first SIGTERM/SIGINT drains; a second one during the drain cuts the
        calls in progress (their job processes are killed) and exits at once,
        still stopping every MCP server and removing serve's folders."""
        if not self._stop.is_set():
            log.info("stopping: draining %d agent(s), at most %.0fs (a second signal stops at once)",
                     len(self.workers), self.options.drain_timeout)
            self._stop.set()
            return
        if signum is not None and not self._hurry.is_set():
            log.warning("second stop signal: ending %d call(s) in progress now",
                        sum(self.sessions_active(n) for n in self.workers))
            self.exit_code = 128 + signum
            self._hurry.set()

    def request_reload(self) -> None:
        """SIGHUP: read the specs (and plugins) now, as Prometheus does; for changes
        the watcher cannot see (a prompt file outside the folder) or to not wait
        for the next scan."""
        if self._stop.is_set():
            return
        log.info("SIGHUP: reloading %s", "specs and plugins" if self.options.plugins_dir else "specs")
        kinds = {"specs"} | ({"plugins"} if self.options.plugins_dir else set())
        task = asyncio.ensure_future(self.reload(kinds, "signal"))
        self._signal_reloads.add(task)
        task.add_done_callback(self._signal_reloads.discard)

    async def _shutdown(self) -> None:
        self.stopping = True
        if self.reloader is not None:
            await self.reloader.aclose()
        if self._freeze is not None:
            self._freeze.cancel()
        async with self._lock:
            await asyncio.gather(*(self._remove(name, unpublish=False) for name in list(self.workers)))
        if self.pool is not None:
            closing = asyncio.ensure_future(self.pool.aclose())
            if not await self._unless_hurried(closing):
                # a stdio server ignoring stdin EOF and SIGTERM costs the SDK's polite
                # close 4-6 s; hurried, every MCP server (serve's, and those of the
                # killed jobs) is killed now, and the close only finds them gone
                from .children import kill_server_groups

                kill_server_groups()
            await closing

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
        from ..plugins import make_plugin_manager, plugin_files, publish_files

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
            await self._drain(worker)
            if self._hurry.is_set():
                await _kill_jobs(worker.server)
            with contextlib.suppress(Exception):
                # livekit gives each job process 10 s to acknowledge its shutdown
                await asyncio.wait_for(worker.server.aclose(), timeout=3.0 if self._hurry.is_set() else None)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(worker.task, timeout=10)
        finally:
            self.draining.discard(name)
            self.workers.pop(name, None)
            if unpublish:
                self.catalog.unpublish(name)
            log.info("agent %s drained and unregistered", name)

    async def _drain(self, worker: AgentWorker) -> None:
        """livekit's drain, bounded by drain_timeout and cut short by a second signal."""
        drain = asyncio.ensure_future(worker.server.drain())
        try:
            await self._unless_hurried(drain, timeout=self.options.drain_timeout)
        finally:
            drain.cancel()
            with contextlib.suppress(BaseException):
                await drain

    async def _unless_hurried(self, task: asyncio.Future[Any], timeout: float | None = None) -> bool:
        """Wait for ``task`` until it is done (True), ``timeout`` passes or a second
        stop signal arrives (False); the task is left running either way."""
        if self._hurry.is_set():
            return task.done()
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait({task, hurry}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurry.cancel()
        return task.done()

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
            from ..mcp.pool import server_key
            from ..summary import describe

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


def _listen_for_signals(loop: asyncio.AbstractEventLoop, *, stop: Callable[[int], None],
                        reload: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM/SIGINT stop (a second one hurries), SIGHUP reloads. Returns the
    function that puts the previous handlers back.

    Not loop.add_signal_handler, whose wake-up byte (and with it the signal) is
    dropped when the loop's self-pipe is full: with 1,000 agents livekit's executor
    callbacks fill it during any pause of the loop. As livekit's own CLI does, the
    handler queues the work itself."""
    def on_stop(signum: int, _: Any) -> None:
        loop.call_soon_threadsafe(stop, signum)

    def on_hup(*_: Any) -> None:
        loop.call_soon_threadsafe(reload)

    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


async def _kill_jobs(server: Any) -> None:
    """Kill a server's job processes (a second stop signal). Their MCP servers are
    orphaned to serve (see children.py) and stopped before it exits. livekit (1.8.9)
    has no public list of its processes: without one, aclose() still ends them,
    only more slowly."""
    pool = getattr(server, "_proc_pool", None)
    for proc in list(getattr(pool, "processes", None) or []):
        kill = getattr(proc, "kill", None)
        if kill is None or not getattr(proc, "started", True):
            continue
        with contextlib.suppress(Exception):
            await asyncio.wait_for(kill(), timeout=2.0)


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


class _StoppedWhileStarting(BaseException):
    """A stop signal before serving began: unwind at once, cleaning up on the way."""


@contextlib.contextmanager
def _signals_held() -> Any:
    """Hold stop signals while a temporary folder is made and remembered, so a
    SIGTERM cannot land between the two and leave it behind."""
    held = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _raise_fd_limit() -> None:
    """Each connection, job process pipe and MCP server takes file descriptors;
    the soft limit is often 1,024 while the hard one is far higher."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


def run_serve(*, secrets: SecretSet | None = None, **kwargs: Any) -> int:
    """The serve process: signals from the first instruction on, private folders
    that go on every exit path, metrics shared with job processes, then the
    supervisor, and at the end no MCP server process left behind."""
    import shutil
    import tempfile

    from .children import become_subreaper, stop_server_groups

    phase = ["starting"]
    supervisor: Supervisor | None = None

    def early(signum: int, _: Any) -> None:
        if phase[0] == "starting":
            phase[0] = "stopping"
            raise _StoppedWhileStarting(signum)
        if phase[0] == "running" and supervisor is not None:
            supervisor.pending_stop = True  # the loop is not listening yet (or any more)

    originals = {sig: signal.signal(sig, early) for sig in (signal.SIGTERM, signal.SIGINT)}
    originals[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # start-up reads everything anyway
    made_metrics_dir: str | None = None
    state_dir: Path | None = None
    rc = 0
    try:
        become_subreaper()
        _raise_fd_limit()
        # before prometheus_client is imported anywhere: job processes (forkserver
        # children, which inherit this environment) write their counters here
        with _signals_held():
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                made_metrics_dir = tempfile.mkdtemp(prefix="voice-runtime-metrics-")
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = made_metrics_dir
            state_dir = Path(tempfile.mkdtemp(prefix="voice-runtime-"))
        options = ServeOptions(**kwargs)
        from ..plugins import make_plugin_manager

        plugins = make_plugin_manager(options.plugins_dir)
        for problem in plugins.problems:
            log.error("plugin problem: %s", problem)
        from ..build import import_livekit_plugins

        import_livekit_plugins()  # livekit wants plugins registered on the main thread
        _count_children_once_for_all_servers()
        supervisor = Supervisor(options, plugins, state_dir, secrets)
        phase[0] = "running"
        asyncio.run(supervisor.run())
        rc = supervisor.exit_code
    except _StoppedWhileStarting:
        log.info("stopped while starting")
    except OSError as exc:  # the operator port is taken
        log.error("cannot serve on %s:%d: %s", kwargs.get("http_host"), kwargs.get("http_port"),
                  exc.strerror or exc)
        rc = 2
    finally:
        phase[0] = "cleaning up"  # further signals wait for this to finish
        stop_server_groups(grace=1.0 if rc > 128 else 2.0)
        # the published specs hold expanded ${VAR} values: they do not outlive the process
        for folder in (state_dir, made_metrics_dir):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        for sig, handler in originals.items():
            signal.signal(sig, handler)
    return rc
