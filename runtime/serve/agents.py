"""The agents being served, and the one pool of job processes they share.

One livekit ``AgentServer`` (the hub) owns the job processes for the whole serve:
``--idle-processes`` of them are prewarmed once (livekit, plugins, VAD weights),
and a call takes any idle one and becomes its agent at entry (job.py reads the
spec then). One load monitor, one set of timers, however many agents.

How LiveKit reaches the agents is ``--dispatch`` (routing.py):
- ``name``: each agent name is registered with LiveKit; the registration is only
  livekit's connection code, launching its jobs on the hub's pool
  (``livekit_compat.start_registration``). Without LiveKit (``--unregistered``)
  there is nothing to register, and an agent costs its catalog entry alone.
- ``metadata``: the hub registers one name; each job names its agent, and a job
  naming no agent this serve runs is refused with the reason in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core import livekit_compat
from ..core.terminal import printable
from .options import Dispatch, Executor
from .routing import Unroutable, agent_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .catalog import Catalog
    from ..mcp.pool import McpPool
    from .options import ServeOptions

log = logging.getLogger("voice_runtime.serve")

# After the drain, how long the job pool may take to close before serve kills what is
# left: livekit gives a job 10 s to acknowledge and a closing entrypoint 15 s (1.8.9).
CLOSE_GRACE_S = 20.0


@dataclass
class AgentWorker:
    """One served agent: the generation it serves and, with ``--dispatch name``
    and LiveKit, its registration."""

    name: str
    generation: int
    registration: Any = None  # a livekit AgentServer that is never run (see livekit_compat)
    registered: bool = False
    error: str | None = None
    started_at: float = field(default_factory=time.time)


async def until_done_or(event: asyncio.Event, task: asyncio.Future[Any], timeout: float | None = None) -> bool:
    """Wait for ``task`` until it is done (True), ``timeout`` passes or ``event``
    is set (False); the task is left running either way."""
    if event.is_set():
        return task.done()
    set_ = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, set_}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        set_.cancel()
    return task.done()


class Agents:
    """The served agents by name, and the hub that runs their calls. ``hurry`` is
    the supervisor's second stop signal: drains are cut short and job processes killed."""

    def __init__(self, options: ServeOptions, catalog: Catalog, hurry: asyncio.Event,
                 shared_pool: McpPool | None,
                 on_process_exit: Callable[[int | None, str | None], None] | None = None) -> None:
        self.options = options
        # (pid, job id) of each job process (or thread: no pid) that ended, whatever ended it
        self.on_process_exit = on_process_exit
        self.catalog = catalog
        self.hurry = hurry
        # THREAD executor: jobs run in threads of this process and use its pool
        self.shared_pool = shared_pool if options.executor is Executor.THREAD else None
        self.workers: dict[str, AgentWorker] = {}
        self.draining: set[str] = set()
        # job id -> agent of each job accepted (or simulated) whose launch has not returned:
        # livekit lists a job only once a process runs it, which takes seconds when none
        # is prewarmed, and a drain that looked only at the listed jobs said "drained"
        # while such a call was about to start
        self.launching: dict[str, str] = {}
        self.refused: Counter[str] = Counter()  # jobs refused, by reason
        self.memory_kills: Counter[str] = Counter()  # calls ended by the memory limit, by agent
        self.idle_memory_kill: tuple[float, float | None] | None = None  # (when, MB) of an idle process killed
        self._idle_kill_logged = float("-inf")
        self.hub: Any = None
        self.hub_task: asyncio.Task[None] | None = None
        self.hub_ready = False  # started (and, with --dispatch metadata and LiveKit, registered)
        self.hub_started = False  # livekit's run() has its pool up ("worker_started")
        self.closing = False  # serve is stopping: the pool starts no process any more
        self._pool_closing: asyncio.Future[None] | None = None
        self.hub_error: str | None = None
        self._discard: asyncio.Future[None] | None = None
        self._freeze: asyncio.Task[None] | None = None
        self.preload: list[str] = []  # modules the forkserver imports for the agents at start (serve/preload.py)

    @property
    def registers_names(self) -> bool:
        """Each agent name has a LiveKit registration of its own."""
        return not self.options.unregistered and self.options.dispatch is Dispatch.NAME

    # -- the hub ---------------------------------------------------------------------

    async def start(self) -> None:
        from livekit.agents import AgentServer, JobExecutorType

        from .forkserver_signals import SERVE_PID
        from .job import CALL_MODULES, entrypoint, prewarm
        from .load import Load

        o = self.options
        os.environ[SERVE_PID] = str(os.getpid())  # inherited by the forkserver (forkserver_signals.py)
        if o.executor is Executor.PROCESS:
            livekit_compat.keep_sigint_while_starting_processes()
        # process executor: the partials are pickled to job processes, so only plain
        # values go in; thread executor: nothing is pickled and the pool is passed as is
        bound = dict(state_dir=str(self.catalog.state_dir),
                     plugins_dir=str(o.plugins_dir) if o.plugins_dir else None, shared_pool=self.shared_pool)
        hub = self.hub = AgentServer(
            job_executor_type=JobExecutorType.THREAD if o.executor is Executor.THREAD else JobExecutorType.PROCESS,
            num_idle_processes=o.idle_processes,
            load_threshold=o.load_threshold,
            load_fnc=Load(o.full_load_calls),
            drain_timeout=int(o.drain_timeout),
            job_memory_warn_mb=o.job_memory_warn_mb,
            job_memory_limit_mb=o.job_memory_limit_mb,
            initialize_process_timeout=30.0,
            max_retry=2**31,  # an unreachable LiveKit is retried for ever (<= 10 s apart); /readyz says so
            ws_url=o.ws_url or "", api_key=o.api_key or "", api_secret=o.api_secret or "",
            host="127.0.0.1", port=0,  # livekit's own health port; ours is --http-port
            setup_fnc=functools.partial(prewarm, **bound),
            # imported once in the forkserver, not in each job (and what serve.preload chose);
            # first, the forkserver's own signal dispositions (forkserver_signals.py)
            preload_modules=["voice_runtime.serve.forkserver_signals", *CALL_MODULES, *self.preload],
        )
        hub.rtc_session(functools.partial(entrypoint, route=o.route, **bound),
                        agent_name=o.agent_name if o.dispatch is Dispatch.METADATA else "",
                        on_request=self._on_request)
        hub_registers = not o.unregistered and o.dispatch is Dispatch.METADATA

        def started(*_: Any) -> None:
            self.hub_started = True
            if self.closing:  # run() finished its start only because the pool was closed
                return
            if not hub_registers:
                self.hub_ready = True
                # nobody reads an unregistered server's messages to LiveKit
                self._discard = livekit_compat.discard_worker_messages(hub)
            livekit_compat.on_pool_event(hub, "process_job_launched", self._job_event)
            livekit_compat.on_pool_event(hub, "process_closed", self._process_closed)
            log.info("job processes ready to start (%s executor, %d prewarmed)", o.executor.value, o.idle_processes)

        def registered(*_: Any) -> None:
            self.hub_ready, self.hub_error = True, None
            log.info("registered with LiveKit as %s; jobs name their agent in their metadata", o.agent_name)

        hub.on("worker_started", started)
        hub.on("worker_registered", registered)
        livekit_compat.watch_memory_kills(self._killed_for_memory)
        self.hub_task = asyncio.create_task(self._run_hub(hub_registers), name="job-hub")

    async def _run_hub(self, registers: bool) -> None:
        try:
            from .metric_files import shelter

            shelter()  # run() empties the metrics folder; the counts so far must survive
            await self.hub.run(devmode=False, unregistered=not registers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on /readyz and /status
            self.hub_error = f"{type(exc).__name__}: {exc}"
            log.error("the job pool stopped: %s", self.hub_error)

    async def _on_request(self, request: Any) -> None:
        """Accept a job LiveKit offers if it names an agent served now."""
        try:
            name = agent_of(request.job, self.options.route)
        except Unroutable as exc:
            self._refuse(request, exc.reason, str(exc))
            await request.reject()
            return
        if name not in self.workers or name in self.draining:
            why = "is being drained" if name in self.draining else "is not served here"
            self._refuse(request, "unknown_agent" if name not in self.workers else "draining",
                         f"agent {printable(name)!r} {why} (serving {len(self.workers) - len(self.draining)} agent(s))")
            await request.reject()
            return
        with self._launching(request.job.id, name):  # livekit's accept() returns once the job is launched
            await request.accept()

    def _refuse(self, request: Any, reason: str, why: str) -> None:
        self.refused[reason] += 1
        log.warning("job %s refused: %s", request.job.id, why,
                    extra={"job_id": request.job.id, "refused": reason})

    def _job_event(self, proc: Any) -> None:
        """A job launched or ended on the hub: with per-name registrations, tell
        LiveKit through the registration that accepted it."""
        info = proc.running_job
        if info is None:
            return
        name = self.agent_of_job(info)
        worker = self.workers.get(name) if name else None
        if worker is not None and worker.registration is not None and not info.fake_job:
            task = asyncio.ensure_future(livekit_compat.registration_job_status(worker.registration, proc))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _process_closed(self, proc: Any) -> None:
        """A job process (or thread) ended: livekit saw it exit, normally, killed or
        crashed. LiveKit is told about its job; serve tidies what the process left."""
        self._job_event(proc)
        if self.on_process_exit is None:
            return
        info = proc.running_job
        try:
            self.on_process_exit(getattr(proc, "pid", None), info.job.id if info is not None else None)
        except Exception:  # noqa: BLE001 - livekit's event emitter must go on to its other listeners
            log.exception("tidying up after an ended job process failed")

    def agent_of_job(self, info: Any) -> str | None:
        try:
            return agent_of(info.job, self.options.route)
        except Unroutable:
            return None

    def agent_of_process(self, pid: int | None, job_id: str) -> str | None:
        """The agent serve routed ``job_id`` to, if that job runs on the job process
        ``pid`` (None: no such job, or another process runs it). Without a pid (no
        SO_PEERCRED on this system) the job id alone binds."""
        for proc in livekit_compat.job_executors(self.hub) if self.hub is not None else []:
            info = proc.running_job
            if info is None or info.job.id != job_id:
                continue
            if pid is not None and getattr(proc, "pid", None) != pid:
                return None
            return self.agent_of_job(info)
        return None

    def _killed_for_memory(self, job_id: str | None, memory_mb: float | None) -> None:
        if job_id is None:
            # a prewarmed process, before any call: the limit is below what an idle one
            # needs, so every call would fail; not a call killed, but serve is not ready
            self.idle_memory_kill = (time.monotonic(), memory_mb)
            if time.monotonic() - self._idle_kill_logged > 60:
                self._idle_kill_logged = time.monotonic()
                log.error("a prewarmed job process used %s MB, over --job-memory-limit-mb %g, before any call: "
                          "no call can start (raise the limit above what an idle process needs)",
                          f"{memory_mb:.0f}" if memory_mb else "more", self.options.job_memory_limit_mb)
            return
        agent = next((a for a, info in self.jobs() if info.job.id == job_id), None)
        self.memory_kills[agent or ""] += 1

    def idle_killed_recently(self, within: float = 30.0) -> float | None:
        """The memory (MB) of a prewarmed process killed for memory within ``within`` s."""
        if self.idle_memory_kill is None or time.monotonic() - self.idle_memory_kill[0] > within:
            return None
        return self.idle_memory_kill[1] or 0.0

    # -- what is served ------------------------------------------------------------

    def serving(self, name: str) -> AgentWorker | None:
        """The agent, unless there is none or it is being drained."""
        return None if name in self.draining else self.workers.get(name)

    def is_ready(self, worker: AgentWorker) -> bool:
        """The agent takes calls: registered with LiveKit, or under ``--unregistered``
        its job pool is up (for ``/simulate``)."""
        return worker.registered if self.registers_names else self.hub_ready

    def is_registered(self, worker: AgentWorker) -> bool:
        """LiveKit knows the agent's name (never under ``--unregistered``)."""
        return not self.options.unregistered and self.is_ready(worker)

    def jobs(self) -> list[tuple[str, Any]]:
        """(agent, livekit RunningJobInfo) of every job running now."""
        try:
            infos = list(self.hub.active_jobs)
        except AttributeError:  # no hub, or its pool is not made yet (run() makes it)
            return []
        return [(self.agent_of_job(info) or "", info) for info in infos]

    def load(self) -> float:
        """The load last reported to LiveKit (load.py; livekit measures it every 0.5 s)."""
        return livekit_compat.worker_load(self.hub) if self.hub is not None else 0.0

    def idle_pids(self) -> list[int]:
        """The prewarmed job processes waiting for a call (any agent's)."""
        return [p.pid for p in livekit_compat.idle_executors(self.hub) if getattr(p, "pid", None)] if self.hub else []

    def sessions_by_agent(self) -> Counter[str]:
        return Counter(agent for agent, _ in self.jobs())

    async def launch_simulation(self, agent: str, room: str, script: str) -> None:
        """A fake job of ``agent`` (``POST /simulate``): named as LiveKit would name
        it, so the job routes exactly as a dispatched one does."""
        import json

        from livekit.agents import utils
        from livekit.protocol import agent as lk_agent
        from livekit.protocol import models

        job = lk_agent.Job(id=utils.shortuuid("mock-job-"), type=lk_agent.JobType.JT_ROOM,
                           room=models.Room(sid=f"RM_{room}", name=room, metadata=script),
                           agent_name=agent if self.options.dispatch is Dispatch.NAME else self.options.agent_name,
                           metadata=json.dumps({"agent": agent}))
        with self._launching(job.id, agent):
            await livekit_compat.launch_job(self.hub, job, fake=True)

    @contextlib.contextmanager
    def _launching(self, job_id: str, agent: str) -> Iterator[None]:
        self.launching[job_id] = agent
        try:
            yield
        finally:
            self.launching.pop(job_id, None)

    def calls_of(self, name: str) -> set[str]:
        """The ids of the agent's jobs running now or still being launched."""
        return {info.job.id for agent, info in self.jobs() if agent == name} | {
            job for job, agent in self.launching.items() if agent == name}

    # -- add, update, remove --------------------------------------------------------

    async def add(self, name: str) -> None:
        worker = AgentWorker(name, self.catalog.agents[name].generation)
        self.workers[name] = worker
        if not self.registers_names:
            log.info("agent %s ready%s", name, f" (no LiveKit: browser calls at /talk/{name})" if self.options.local
                     else " (not connected to LiveKit: --unregistered)" if self.options.unregistered else "")
            return

        def registered(*_: Any) -> None:
            worker.registered, worker.error = True, None
            log.info("agent %s registered with LiveKit", name)

        async def on_request(request: Any) -> None:
            await self._on_request(request)

        worker.registration = livekit_compat.start_registration(self.hub, name, on_request, registered)

    def set_generation(self, name: str, generation: int) -> None:
        worker = self.workers.get(name)
        if worker is not None:
            worker.generation = generation

    async def remove(self, name: str, *, unpublish: bool = True) -> None:
        """Stop taking calls for the agent, let its calls end (at most
        ``drain_timeout``; a second stop signal kills them), then forget it."""
        worker = self.workers.get(name)
        if worker is None:
            return
        self.draining.add(name)
        try:
            if worker.registration is not None:
                with contextlib.suppress(Exception):
                    await livekit_compat.registration_full(worker.registration)
            left = await self._drain(lambda: self.calls_of(name))
            if worker.registration is not None:
                await livekit_compat.stop_registration(worker.registration)
        finally:
            self.draining.discard(name)
            self.workers.pop(name, None)
            if unpublish:
                self.catalog.unpublish(name)
        if left:  # said as it is: the drain ended with calls still up, which are cut now
            log.warning("agent %s unregistered with %d call(s) still in progress: %s; they are cut", name, left,
                        "a second stop signal" if self.hurry.is_set()
                        else f"--drain-timeout ({self.options.drain_timeout:g} s) passed")
        else:
            log.info("agent %s drained and unregistered", name)

    async def remove_all(self) -> None:
        """Serve is stopping: every agent drained at once, then the job pool closed;
        the published specs stay (serve removes its whole state folder on exit)."""
        if self._freeze is not None:
            self._freeze.cancel()
        self.draining.update(self.workers)
        await asyncio.gather(*(self.remove(name, unpublish=False) for name in list(self.workers)))
        if self.hub is None:
            return
        # livekit gives each job process 10 s to acknowledge its shutdown
        await self.close_pool()
        closing = asyncio.ensure_future(self.hub.aclose())
        if self.hurry.is_set():
            await _kill_jobs(self.hub)
        if not await until_done_or(self.hurry, closing, timeout=CLOSE_GRACE_S) and self.hurry.is_set():
            await _kill_jobs(self.hub)  # a second signal during that wait: what is left goes now
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(closing), timeout=3.0)
        if not closing.done():
            # livekit waits without a bound for a job that acknowledged its shutdown to
            # say it is shutting down, and a job whose entrypoint awaits a tool call
            # does not until the call returns (a 60 s tool kept serve 60 s past its
            # drain): the drain's end is a promise, so such jobs are killed
            log.warning("job processes still closing %.0f s after the drain: killing them", CLOSE_GRACE_S)
            await _kill_jobs(self.hub)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closing, timeout=3.0)
        if self.hub_task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.hub_task, timeout=10)
        if self._discard is not None:
            self._discard.cancel()

    async def close_pool(self) -> None:
        """On a stop while livekit is still starting the pool, or a hurried one: the
        pool starts no process from now on (livekit_compat.close_pool_now says why
        that matters); closing first, so a call whose job process was still starting
        is not started again on a fresh one. Before the pool was up no call can run:
        what it was starting (the forkserver's preload, a prewarm) is killed rather
        than waited for. A drain with the pool up leaves it to ``aclose()``, which
        closes the idle processes politely. Returns once the pool is closed: a
        process start still under way when serve's loop ends is cancelled without
        its cleanup, and the thread reading that process's log pipe then kept the
        interpreter from exiting, for ever."""
        self.closing = True
        if self._pool_closing is None:
            # job threads cannot be killed: their pool closes as livekit closes it
            if self.hub is None or self.options.executor is not Executor.PROCESS or (
                    self.hub_started and not self.hurry.is_set()):
                return
            self._pool_closing = asyncio.ensure_future(self._close_pool_killing())
        await asyncio.shield(self._pool_closing)

    async def _close_pool_killing(self) -> None:
        closing = livekit_compat.close_pool_now(self.hub)
        if closing is None:
            return
        # the pool's main task, then its spawns, see the cancellation first (a spawn
        # cancelled in start() logs nothing when its process is killed)
        for _ in range(5):
            await asyncio.sleep(0)
        deadline = time.monotonic() + 10.0
        while not closing.done() and time.monotonic() < deadline:
            self._kill_processes()
            await asyncio.wait({closing}, timeout=0.2)

    def _kill_processes(self) -> None:
        """Every job process now: those livekit lists (marked as killed, so their
        exits are not logged as failures), then any other (one still starting, the
        forkserver while it preloads: children.kill_job_processes)."""
        from .children import kill_job_processes

        for proc in livekit_compat.job_executors(self.hub) if self.hub is not None else []:
            livekit_compat.kill_executor_now(proc)
        kill_job_processes()

    async def cut_calls_until_exit(self) -> None:
        """A hurried stop ends every call now, and again until serve exits: a
        process still starting is not listed yet."""
        await self.close_pool()
        while True:
            self._kill_processes()
            await asyncio.sleep(0.2)

    async def _drain(self, running: Callable[[], set[str]]) -> int:
        """Wait until ``running()`` (job ids) names no job, bounded by drain_timeout and
        cut short by a second signal (which kills those jobs' processes); how many jobs
        were still running at the end."""
        async def ended() -> None:
            while running():
                await asyncio.sleep(0.2)

        wait = asyncio.ensure_future(ended())
        try:
            if not await until_done_or(self.hurry, wait, timeout=self.options.drain_timeout):
                left = running()
                if self.hurry.is_set():
                    await _kill_jobs(self.hub, left)
                return len(left)
            return 0
        finally:
            wait.cancel()

    def recycle_idle(self) -> None:
        """Close the prewarmed, idle job processes: livekit's pool spawns fresh ones,
        which import the current plugin code."""
        if self.hub is None:
            return
        idle = livekit_compat.take_idle_executors(self.hub)
        for proc in idle:
            asyncio.ensure_future(proc.aclose())
        if idle:
            log.info("recycling %d idle process(es)", len(idle))

    # -- the heap --------------------------------------------------------------------

    def freeze_heap_soon(self) -> None:
        """Once agents were added or removed, move the long-lived heap (catalog
        entries, published specs, status descriptions: about 1 KiB of objects per
        agent) into gc's permanent generation, so full collections do not walk it
        and stall the loop (reloads, /status, LiveKit's availability answers).
        Redone after each change (unfreezing first, so what was removed is freed)."""
        if self._freeze is None or self._freeze.done():
            self._freeze = asyncio.create_task(self._freeze_heap(), name="gc-freeze")

    async def _freeze_heap(self) -> None:
        await asyncio.sleep(0.5)  # registrations made in this reload start first
        gc.unfreeze()
        gc.collect()
        gc.freeze()


async def _kill_jobs(server: Any, job_ids: set[str] | None = None) -> None:
    """Kill job processes (a second stop signal): all of them, or those running
    ``job_ids``, and wait (at most 2 s) until livekit saw them end. Their MCP servers
    are orphaned to serve (see children.py) and stopped before it exits."""
    killed = []
    for proc in livekit_compat.job_executors(server):
        if job_ids is not None and (proc.running_job is None or proc.running_job.job.id not in job_ids):
            continue
        if livekit_compat.kill_executor_now(proc):
            killed.append(proc)
    if killed:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(p.join() for p in killed), return_exceptions=True), timeout=2.0)

