"""The agents being served: one livekit AgentServer per agent name.

livekit allows one agent name per AgentServer and several servers in one asyncio
loop. ``Agents`` builds and registers a server per accepted spec, drains and
unregisters removed ones, recycles idle prewarmed processes when a spec or plugin
changes (so they warm the new version and import the new plugin code), and moves
the long-lived heap out of the garbage collector's way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import livekit_compat
from .options import Executor

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..mcp.pool import McpPool
    from .options import ServeOptions

log = logging.getLogger("voice_runtime.serve")


@dataclass
class AgentWorker:
    name: str
    server: Any  # livekit AgentServer
    task: asyncio.Task[None]
    generation: int
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
    """The running AgentServers, by agent name. ``hurry`` is the supervisor's
    second stop signal: drains are cut short and job processes killed."""

    def __init__(self, options: ServeOptions, catalog: Catalog, hurry: asyncio.Event,
                 shared_pool: McpPool | None) -> None:
        self.options = options
        self.catalog = catalog
        self.hurry = hurry
        # THREAD executor: jobs run in threads of this process and use its pool
        self.shared_pool = shared_pool if options.executor is Executor.THREAD else None
        self.workers: dict[str, AgentWorker] = {}
        self.draining: set[str] = set()
        self._freeze: asyncio.Task[None] | None = None

    # -- what is served ------------------------------------------------------------

    def serving(self, name: str) -> AgentWorker | None:
        """The agent's server, unless there is none or it is being drained."""
        return None if name in self.draining else self.workers.get(name)

    def sessions_active(self, name: str) -> int:
        worker = self.workers.get(name)
        return len(worker.server.active_jobs) if worker is not None else 0

    def jobs(self) -> list[tuple[str, Any]]:
        """(agent, livekit RunningJobInfo) of every job running now."""
        return [(w.name, job) for w in list(self.workers.values()) for job in w.server.active_jobs]

    # -- add, update, remove --------------------------------------------------------

    async def add(self, name: str) -> None:
        from livekit.agents import AgentServer, JobExecutorType

        from .job import entrypoint, prewarm

        o = self.options
        # process executor: the partials are pickled to job processes, so only plain
        # values go in; thread executor: nothing is pickled and the pool is passed as is
        bound = dict(agent=name, state_dir=str(self.catalog.state_dir),
                     plugins_dir=str(o.plugins_dir) if o.plugins_dir else None, shared_pool=self.shared_pool)
        server = AgentServer(
            job_executor_type=JobExecutorType.THREAD if o.executor is Executor.THREAD else JobExecutorType.PROCESS,
            num_idle_processes=o.idle_processes,
            load_threshold=o.load_threshold,
            drain_timeout=int(o.drain_timeout),
            initialize_process_timeout=30.0,
            max_retry=2**31,  # an unreachable LiveKit is retried for ever (<= 10 s apart); /readyz says so
            ws_url=o.ws_url or "", api_key=o.api_key or "", api_secret=o.api_secret or "",
            host="127.0.0.1", port=0,  # livekit's own health port; ours is --http-port
            setup_fnc=functools.partial(prewarm, **bound),
        )
        server.rtc_session(functools.partial(entrypoint, **bound), agent_name=name)
        worker = AgentWorker(name, server, asyncio.Future(), self.catalog.agents[name].generation)

        def registered(*_: Any) -> None:
            worker.registered, worker.error = True, None
            log.info("agent %s %s", name, "ready (not connected to LiveKit: --unregistered)"
                     if o.unregistered else "registered with LiveKit")

        server.on("worker_registered", registered)
        if o.unregistered:
            server.on("worker_started", registered)
        worker.task = asyncio.create_task(self._run(worker), name=f"agent-{name}")
        self.workers[name] = worker

    async def _run(self, worker: AgentWorker) -> None:
        try:
            shelter_metric_files()  # run() empties the metrics folder; the counts so far must survive
            await worker.server.run(devmode=False, unregistered=self.options.unregistered)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one agent's failure is reported, others keep serving
            worker.error = f"{type(exc).__name__}: {exc}"
            log.error("agent %s stopped: %s", worker.name, worker.error)

    def set_generation(self, name: str, generation: int) -> None:
        worker = self.workers.get(name)
        if worker is not None:
            worker.generation = generation

    async def remove(self, name: str, *, unpublish: bool = True) -> None:
        worker = self.workers.get(name)
        if worker is None:
            return
        self.draining.add(name)
        try:
            await self._drain(worker)
            # livekit gives each job process 10 s to acknowledge its shutdown
            closing = asyncio.ensure_future(worker.server.aclose())
            if self.hurry.is_set():
                # closing first: a closed pool starts no process, so a call whose job
                # process was still starting is not started again on a fresh one
                await asyncio.sleep(0)
                await _kill_jobs(worker.server)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closing, timeout=3.0 if self.hurry.is_set() else None)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(worker.task, timeout=10)
        finally:
            self.draining.discard(name)
            self.workers.pop(name, None)
            if unpublish:
                self.catalog.unpublish(name)
            log.info("agent %s drained and unregistered", name)

    async def remove_all(self) -> None:
        """Serve is stopping: every agent drained at once; the published specs stay
        (serve removes its whole state folder on exit)."""
        if self._freeze is not None:
            self._freeze.cancel()
        await asyncio.gather(*(self.remove(name, unpublish=False) for name in list(self.workers)))

    async def _drain(self, worker: AgentWorker) -> None:
        """livekit's drain, bounded by drain_timeout and cut short by a second signal."""
        drain = asyncio.ensure_future(worker.server.drain())
        try:
            await until_done_or(self.hurry, drain, timeout=self.options.drain_timeout)
        finally:
            drain.cancel()
            with contextlib.suppress(BaseException):
                await drain

    def recycle_idle(self, names: set[str]) -> None:
        """Close the idle prewarmed processes of these agents' servers; livekit's
        pool spawns fresh ones, which import the current plugin code and warm the
        current spec."""
        for name in names:
            worker = self.workers.get(name)
            if worker is None:
                continue
            idle = livekit_compat.take_idle_executors(worker.server)
            for proc in idle:
                asyncio.ensure_future(proc.aclose())
            if idle:
                log.info("recycling %d idle process(es)", len(idle))

    # -- the heap --------------------------------------------------------------------

    def freeze_heap_soon(self) -> None:
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


async def _kill_jobs(server: Any) -> None:
    """Kill a server's job processes (a second stop signal). Their MCP servers are
    orphaned to serve (see children.py) and stopped before it exits."""
    for proc in livekit_compat.job_executors(server):
        kill = getattr(proc, "kill", None)
        if kill is None:
            continue  # a process still starting is killed too: its call must not begin
        with contextlib.suppress(Exception):
            await asyncio.wait_for(kill(), timeout=2.0)


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
