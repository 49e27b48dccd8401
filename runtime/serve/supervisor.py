"""The serve process's lifecycle: signals, start, stop, and reloads.

The supervisor owns what happens when: it starts the operator port and the
watcher, handles every reload outcome in one place (``reload``/``_record``), and
on SIGTERM drains the agents (a second signal cuts the calls). What runs lives in
its rooms: the AgentServers in ``agents``, what operators see in ``status``, the
port in ``http``, which reaches the supervisor only through ``http.Operator``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..observe import call_journal, tracing
from ..observe.report_spool import SpoolInUse
from ..core import livekit_compat
from .catalog import Catalog, Outcome, ReloadResult
from .reload import Reloader
from .agents import Agents, until_done_or
from .http import Call
from .metric_files import MetricFiles
from .options import Dispatch, Executor
from .preload import TurnModelWatch, choose_local_models, forkserver_modules
from .status import StatusView

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..plugins.manager import Plugins
    from ..spec.secrets import SecretSet
    from .options import ServeOptions

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)

log = logging.getLogger("voice_runtime.serve")


class Supervisor:
    """Implements ``http.Operator`` for the operator port."""

    def __init__(self, options: ServeOptions, plugins: Plugins, state_dir: Path | None = None,
                 secrets: SecretSet | None = None) -> None:
        from ..mcp.pool import McpPool

        self.options = options
        self.plugins = plugins
        self.catalog = Catalog(options.agents_dir, plugins, state_dir, secrets=secrets)
        if options.require_tests:
            from ..session.testing.cases import TESTS_FOLDER
            from ..session.testing.gate import TestsGate

            self.catalog.gate = TestsGate(options.agents_dir / TESTS_FOLDER)
        self.pool = McpPool()
        self.stopping = False
        self._lock = asyncio.Lock()  # reloads and registrations never overlap
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second stop signal: calls are cut, not drained
        self._killer: asyncio.Future[None] | None = None
        self.pending_stop = False  # a stop signal arrived before run() listened for them
        self.exit_code = 0
        self._signal_reloads: set[asyncio.Task[Any]] = set()
        self.reloader: Reloader | None = None
        self.turn_model: TurnModelWatch | None = None  # process executor: what the forkserver preloaded
        # the job processes' metrics (PROMETHEUS_MULTIPROC_DIR, set by run_serve)
        self.metric_files = MetricFiles.from_env()
        self._ended_pids: set[int] = set()  # job processes that ended, their files not yet folded
        self.agents = Agents(options, self.catalog, self._hurry, shared_pool=self.pool,
                             on_process_exit=self._process_exited)
        self.gateway: Any = None  # job processes borrow the pool's connections through it
        self.deliverer: Any = None  # call reports, from the spool to their targets (reports.py)
        self.talk_url = ""  # the page listing the agents for browser calls
        self.view = StatusView(options, self.catalog, self.agents, self.pool, self.metric_files)
        from .phones import Phones

        self.phones = Phones(options, lambda: self.plugins, lambda: list(self.catalog.agents), self.catalog.secrets)
        self.view.plugin_errors = plugins.problems
        tracing.setup(self.catalog.secrets)  # config.reload and serve's mcp.connect spans
        # the plugin files last tried: a scan that finds the same bytes does nothing
        self._plugin_fingerprint = plugins.files.fingerprint if plugins.files is not None else ()

    # -- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        from .http import start_http

        loop = asyncio.get_running_loop()
        restore = _listen_for_signals(loop, stop=self.request_stop, reload=self.request_reload)
        if self.pending_stop:
            self.request_stop()
        try:
            o = self.options
            talk = self._talk()
            await talk.start()
            http = await start_http(self, o.http_host, o.http_port, simulate=o.simulate,
                                    simulate_from_anywhere=o.simulate_from_anywhere, talk=talk, calls=self._calls())
            self.view.documents = http.documents
            log.info("serving %s on http://%s:%d (status page at /; /healthz /readyz /metrics /status)", o.agents_dir,
                     o.http_host, o.http_port)
            host = o.http_host if o.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            self.talk_url = f"http://{host if ':' not in host else f'[{host}]'}:{o.http_port}/talk/"
            try:
                await self._serve()
            finally:
                await talk.aclose()
                await http.cleanup()
        finally:
            restore()

    async def _serve(self) -> None:
        from ..plugins.manager import publish_files

        publish_files(self.catalog.state_dir, self.plugins)  # job processes import these, not the folder
        if self.options.executor is Executor.PROCESS:
            from ..mcp.gateway import Gateway

            self.gateway = Gateway(self.pool, self.catalog.state_dir, self._accepted_spec, self.agents.agent_of_process)
            await self.gateway.start()
            self.view.gateway = self.gateway
        self._start_reports()
        await self.deliverer.start()
        if self.options.executor is Executor.PROCESS:  # before the forkserver starts: it reads the environment
            specs = await asyncio.to_thread(self.catalog.peek)
            self.turn_model = TurnModelWatch(choose_local_models(specs))
            self.agents.preload = forkserver_modules(specs)
        await self.agents.start()
        await self.reload({"specs"}, "start")
        names = sorted(self.agents.workers)
        log.info("%s: talk to an agent in a browser at %s%s", "no LiveKit (local mode)" if self.options.local
                 else "browser calls", self.talk_url, f" (e.g. {self.talk_url}{names[0]})" if names else "")
        self.reloader = Reloader(
            {"specs": self.options.agents_dir, **({"plugins": self.options.plugins_dir} if self.options.plugins_dir else {}),
             **({"telephony": self.options.telephony_dir} if self.options.telephony_dir else {})},
            self.reload, scan_interval=self.options.scan_interval,
        )
        await self.reloader.start()
        with contextlib.suppress(asyncio.TimeoutError):  # a watcher that cannot start: the scan still runs
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.reloader.watching.values())), timeout=5.0)
        # what was written between the start's reload and the watch (nothing, mostly: a no-op)
        await self.reload(set(self.reloader.folders), "watch")
        self.view.watching = True
        await self._stop.wait()
        await self._shutdown()

    def _start_reports(self) -> None:
        """The call report spool (``--report-spool``), named in the state folder for the
        job processes that write to it. A folder that cannot be made (a read-only home)
        falls back to the state folder, which does not outlive serve: said in the log."""
        from ..core.filesystem import write_private_json
        from ..observe.report_spool import SPOOL_POINTER, Spool
        from .reports import Deliverer

        folder = self.options.report_spool or self.catalog.state_dir / "reports"
        try:
            spool = Spool(folder, self.options.report_dead)
            spool.hold()  # SpoolInUse ends serve with exit 2 (run_serve)
        except OSError as exc:
            log.warning("call reports: cannot use %s (%s); spooling in serve's state folder, which a restart "
                        "does not keep", folder, exc)
            spool = Spool(self.catalog.state_dir / "reports", self.options.report_dead)
        write_private_json(self.catalog.state_dir / SPOOL_POINTER,
                           {"folder": str(spool.folder), "targets": list(self.options.report_targets)})
        self.deliverer = Deliverer(spool, on_report=self._report_hook)
        self.view.spool = spool

    def _report_hook(self, report: dict[str, Any]) -> None:
        from ..plugins.manager import notify

        notify(self.plugins, "voice_runtime_call_report", report=report)

    def _talk(self) -> Any:
        from .talk import Talk

        return Talk(self.options.talk, self.catalog.state_dir,
                    serving=lambda: [] if self.stopping else [n for n in self.agents.workers if self.agents.serving(n)],
                    spec_of=self._accepted_spec, registry=lambda: self.plugins.registry,
                    launch=self.start_simulation, secrets=self.catalog.secrets, stopping=lambda: self.view.stopping)

    def _calls(self) -> Any:
        from .phones import Calls

        if self.options.calls is None:
            return None
        return Calls(self.phones, self.options.calls,
                     lambda: [] if self.stopping else [n for n in self.agents.workers if self.agents.serving(n)],
                     self._accepted_spec)

    def _accepted_spec(self, agent: str) -> Any:
        entry = self.catalog.agents.get(agent)
        return entry.loaded if entry is not None else None

    def _process_exited(self, pid: int | None, job_id: str | None) -> None:
        """A job process ended (livekit saw it exit, however it ended): what it left
        for serve is folded away now, so serve's folders and each scrape stay the
        same size however many calls were served (see metric_files, call_journal)."""
        from .simulate import forget_ended

        if job_id is not None:
            forget_ended(self.catalog.state_dir, job_id)
        if pid is not None and pid != os.getpid():  # a job thread's pid is serve's own
            self._ended_pids.add(pid)
            self._retire_ended()

    def _retire_ended(self) -> None:
        """Fold away the files of the ended job processes. livekit reports an exit
        once the process was reaped; a pid in use again by then is a new process,
        which may already write to the same file names: its pid waits here until
        it is free (retried at each scrape)."""
        for pid in list(self._ended_pids):
            if _pid_in_use(pid):
                continue
            self._ended_pids.discard(pid)
            if self.metric_files is not None:
                self.metric_files.retire(pid)
            try:
                call_journal.retire(self.catalog.state_dir / "tool_calls", pid)
            except OSError as exc:
                log.warning("could not fold the tool call journal of ended process %d: %s", pid, exc)

    def request_stop(self, signum: int | None = None) -> None:
        """The first SIGTERM/SIGINT drains; a second one during the drain cuts the
        calls in progress (their job processes are killed) and exits at once,
        still stopping every MCP server and removing serve's folders."""
        if not self._stop.is_set():
            self.view.stopping = True
            from ..core.filesystem import write_private_json
            from .job import DRAINING_MARK

            # a call cut from now on ends by the drain (its report says serve_draining); a
            # simulated call's job cuts itself at cut_at (livekit would let it run 15 s more)
            with contextlib.suppress(OSError):
                write_private_json(self.catalog.state_dir / DRAINING_MARK,
                                   {"cut_at": time.time() + self.options.drain_timeout})
            log.info("stopping: draining %d agent(s), at most %.0fs (a second signal stops at once)",
                     len(self.agents.workers), self.options.drain_timeout)
            self._stop.set()
            return
        if signum is not None and not self._hurry.is_set():
            log.warning("second stop signal: ending %d call(s) in progress now", len(self.agents.jobs()))
            self.exit_code = 128 + signum
            self._hurry.set()
            self._killer = asyncio.ensure_future(self.agents.cut_calls_until_exit())

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
        await self.phones.aclose()
        async with self._lock:
            await self.agents.remove_all()
        if self.gateway is not None:
            await self.gateway.aclose()
        closing = asyncio.ensure_future(self.pool.aclose())
        if not await until_done_or(self._hurry, closing):
            # a stdio server ignoring stdin EOF and SIGTERM costs the SDK's polite
            # close 4-6 s; hurried, every MCP server (serve's, and those of the
            # killed jobs) is killed now, and the close only finds them gone
            from .children import kill_server_groups

            kill_server_groups()
        await closing
        if self.deliverer is not None:
            # the drained calls' reports: one last try now; what is left waits in the spool
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.deliverer.once(), timeout=5.0)
            await self.deliverer.aclose()
        if self._killer is not None:
            self._killer.cancel()

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
            try:  # phone lines name agents: read after the specs; their problems never stop serving
                await self.phones.refresh()
            except Exception:  # noqa: BLE001 - a bug here must not stop reloads
                log.exception("reading the phone lines failed")
            if result.outcome is Outcome.NOOP and plugins is not Outcome.APPLIED:
                return result
            await self._apply(result, plugins_changed=plugins is Outcome.APPLIED)
            if result.added or result.removed:
                self.agents.freeze_heap_soon()
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
        self.view.reloads["success" if ok else "failure"] += 1
        ms = (time.perf_counter() - started) * 1000
        tracing.record_span("config.reload", {
            "voice_runtime.reload.cause": cause, "voice_runtime.reload.outcome": outcome.value,
            "voice_runtime.reload.generation": self.catalog.generation, "voice_runtime.reload.summary": summary,
            "voice_runtime.reload.errors": problems[:50]}, time.time_ns() - int(ms * 1e6),
            error=None if ok else f"{len(problems)} problem(s)")
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
        from ..plugins.manager import make_plugin_manager, plugin_files, publish_files

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
            self.view.plugin_errors = problems
            self._record(Outcome.REJECTED, cause, started, "plugins changed but do not load; keeping the previous ones",
                         problems)
            return Outcome.REJECTED
        self.view.plugin_errors = []
        self.plugins = plugins
        publish_files(self.catalog.state_dir, plugins)
        self.catalog.use_plugins(plugins)
        return Outcome.APPLIED

    async def _apply(self, result: ReloadResult, *, plugins_changed: bool) -> None:
        for name in result.removed:
            await self.agents.remove(name)
        for name in result.added:
            await self.agents.add(name)
        for name in result.updated:
            self.agents.set_generation(name, self.catalog.agents[name].generation)
        if self.turn_model is not None:
            for name in (*result.added, *result.updated):
                self.turn_model.check(self.catalog.agents[name].loaded)
        if result.changed:
            # re-warm only what changed: unchanged server blocks keep their connections
            asyncio.ensure_future(self.pool.retain(e.loaded for e in self.catalog.agents.values()))
        if plugins_changed:
            self.agents.recycle_idle()  # prewarmed processes imported the old plugin code

    # -- http.Operator ---------------------------------------------------------------

    @property
    def secrets(self) -> SecretSet:
        return self.catalog.secrets

    def not_ready(self) -> list[str]:
        return self.view.not_ready()

    def status(self, agents: set[str] | None = None) -> dict[str, Any]:
        return self.view.status(agents)

    def metrics_text(self) -> bytes:
        if self._ended_pids:
            self._retire_ended()
        return self.view.metrics_text()

    def serving_generation(self, agent: str) -> int | None:
        worker = None if self.stopping else self.agents.serving(agent)
        return worker.generation if worker is not None else None

    def calls(self) -> list[Call]:
        from .simulate import ended_jobs

        jobs = self.agents.jobs()
        ended = ended_jobs(self.catalog.state_dir) if any(job.fake_job for _, job in jobs) else set()
        return [Call(agent, job.job.room.name, job.fake_job, job.job.id in ended) for agent, job in jobs]

    async def start_simulation(self, agent: str, room: str, script: str) -> None:
        if self.agents.serving(agent) is None:
            raise LookupError(f"agent {agent!r} stopped serving")
        route = self.options.route
        if route.dispatch is Dispatch.METADATA and not route.allows(agent):  # its job would refuse to run it
            raise PermissionError(f"agent {agent!r} matches no --route-allow pattern")
        await self.agents.launch_simulation(agent, room, script)

    def take_simulation_report(self, room: str) -> dict[str, Any] | None:
        from .simulate import take_result

        return take_result(self.catalog.state_dir, room)


def _listen_for_signals(loop: asyncio.AbstractEventLoop, *, stop: Callable[[int], None],
                        reload: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM/SIGINT/SIGQUIT stop (a second one hurries), SIGHUP reloads,
    SIGUSR1/SIGUSR2 are logged and ignored (their default is to end the process
    with no cleanup at all). Returns the function that puts the previous handlers back.

    Not loop.add_signal_handler, whose wake-up byte (and with it the signal) is
    dropped when the loop's self-pipe is full: with 1,000 agents livekit's executor
    callbacks fill it during any pause of the loop. As livekit's own CLI does, the
    handler queues the work itself."""
    def on_stop(signum: int, _: Any) -> None:
        loop.call_soon_threadsafe(stop, signum)

    def on_hup(*_: Any) -> None:
        loop.call_soon_threadsafe(reload)

    def on_ignored(signum: int, _: Any) -> None:
        loop.call_soon_threadsafe(log.warning, "%s ignored (SIGTERM, SIGINT or SIGQUIT stop serve; SIGHUP reloads)",
                                  signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_stop) for sig in STOP_SIGNALS}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    previous.update({sig: signal.signal(sig, on_ignored) for sig in IGNORED_SIGNALS})

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _pid_in_use(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _ignore(*_: Any) -> None:
    """SIGUSR1/SIGUSR2 while serve starts: nothing to do (see _listen_for_signals)."""


class _StoppedWhileStarting(BaseException):
    """A stop signal before serving began: unwind at once, cleaning up on the way."""


@contextlib.contextmanager
def _signals_held() -> Any:
    """Hold stop signals while a temporary folder is made and remembered, so a
    SIGTERM cannot land between the two and leave it behind."""
    held = {*STOP_SIGNALS, signal.SIGHUP, *IGNORED_SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _fit_forkserver_socket() -> None:
    """multiprocessing's forkserver listens on a unix socket in a ``pymp-*`` folder
    under TMPDIR, and a socket path holds at most 107 bytes: with a long TMPDIR (a
    CI workspace, a test's tmp_path) every job process failed to start with "AF_UNIX
    path too long". serve's own folders stay in TMPDIR; multiprocessing gets /tmp."""
    import tempfile

    longest = os.path.join(tempfile.gettempdir(), "pymp-xxxxxxxx", "listener-xxxxxxxx")
    if len(os.fsencode(longest)) > 100 and os.path.isdir("/tmp"):
        log.warning("TMPDIR %s is too long for the job processes' unix socket; they use /tmp",
                    tempfile.gettempdir())
        tempfile.tempdir = "/tmp"


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


def run_serve(options: ServeOptions, *, secrets: SecretSet | None = None) -> int:
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

    originals = {sig: signal.signal(sig, early) for sig in STOP_SIGNALS}
    originals[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # start-up reads everything anyway
    # a Python handler, not SIG_IGN: an ignored disposition would be inherited by
    # every MCP server and job process serve starts
    originals.update({sig: signal.signal(sig, _ignore) for sig in IGNORED_SIGNALS})
    made_metrics_dir: str | None = None
    state_dir: Path | None = None
    rc = 0
    try:
        become_subreaper()
        _raise_fd_limit()
        if os.environ.pop("LIVEKIT_AGENT_NAME_OVERRIDE", None):
            # livekit would register every agent (and --agent-name) under that one name
            log.warning("LIVEKIT_AGENT_NAME_OVERRIDE is ignored: serve registers each agent by its name "
                        "(or one name with --dispatch metadata --agent-name)")
        # before prometheus_client is imported anywhere: job processes (forkserver
        # children, which inherit this environment) write their counters here
        with _signals_held():
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                made_metrics_dir = tempfile.mkdtemp(prefix="voice-runtime-metrics-")
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = made_metrics_dir
            state_dir = Path(tempfile.mkdtemp(prefix="voice-runtime-"))
            # job processes (forkserver children, started later) append their tool calls there
            os.environ[call_journal.ENV] = str(state_dir / "tool_calls")
        _fit_forkserver_socket()
        from ..plugins.manager import make_plugin_manager

        plugins = make_plugin_manager(options.plugins_dir)
        for problem in plugins.problems:
            log.error("plugin problem: %s", problem)
        from ..session.runner import import_livekit_plugins

        import_livekit_plugins()  # livekit wants plugins registered on the main thread
        # one /proc walk per 0.5 s for all agents' servers, not one per server (1,000
        # agents: ~60 % of a core)
        livekit_compat.share_child_process_count()
        supervisor = Supervisor(options, plugins, state_dir, secrets)
        if phase[0] == "stopping":
            # the signal's exception was swallowed where it landed (a library's bare
            # except, a finalizer during an import): serve would have run on, deaf to
            # every later signal (early() acts on the first one only)
            raise _StoppedWhileStarting()
        phase[0] = "running"
        asyncio.run(supervisor.run())
        rc = supervisor.exit_code
    except _StoppedWhileStarting:
        log.info("stopped while starting")
    except SpoolInUse as exc:
        log.error("%s", exc)
        rc = 2
    except OSError as exc:  # the operator port is taken
        log.error("cannot serve on %s:%d: %s", options.http_host, options.http_port,
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
        # what is left is the CLI's return and the interpreter's own exit (threads joined:
        # 1-3 s after a pool closed mid-start); a stop signal before finalization puts the
        # default handlers back hurries it as one does while serving (128 + signal); after
        # that, the default action ends a process with nothing left to clean
        for sig in STOP_SIGNALS:
            signal.signal(sig, _leave_at_once)
    return rc


def _leave_at_once(signum: int, _: Any) -> None:
    from ..core.leave import leave_now

    leave_now(128 + signum)
