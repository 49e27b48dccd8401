"""Every use of livekit-agents' private parts, in one place (the mcp SDK's are in
``mcp/compat.py``, so the ``mcp`` package never reaches livekit).

pytest's ``_pytest/compat.py`` is the model: the rest of the package calls these
functions and never reads a private attribute of a livekit or mcp object (a test,
tests/test_livekit_compat.py, greps for it). Each function says what it relies on,
in which version it was read (livekit-agents 1.8.9, mcp 2.3.0), and what serve or
a session degrades to when that part is gone. The same test asserts that each part
still exists in the installed versions, so an upgrade fails there, loudly, instead
of degrading in production.

Nothing here imports livekit or mcp at module level: the CLI's light commands
import this module too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncio import Queue

# -- AgentServer's process pool (livekit/agents/worker.py, ipc/proc_pool.py) --------------


def _proc_pool(server: Any) -> Any:
    return getattr(server, "_proc_pool", None)


def job_executors(server: Any) -> list[Any]:
    """The job executors (processes or threads, idle or running a job) of an
    AgentServer: ``server._proc_pool.processes``. livekit has no public list.
    Degrades to ``[]``: a hurried stop then cannot kill job processes at once, and
    ``aclose()`` ends them only after livekit's own shutdown timeout."""
    return list(getattr(_proc_pool(server), "processes", None) or [])


def take_idle_executors(server: Any) -> list[Any]:
    """Remove the prewarmed, idle executors from an AgentServer's pool and return
    them (the caller closes them; livekit spawns fresh ones):
    ``server._proc_pool._warmed_proc_queue``. Degrades to ``[]``: idle processes
    then serve one more call each with an older warm-up (the spec itself is always
    read at job entry)."""
    queue: Queue[Any] | None = getattr(_proc_pool(server), "_warmed_proc_queue", None)
    if queue is None:
        return []
    idle = []
    while not queue.empty():
        idle.append(queue.get_nowait())
    return idle


def idle_executors(server: Any) -> list[Any]:
    """The prewarmed executors waiting for a job, left in place
    (``server._proc_pool._warmed_proc_queue``, an asyncio.Queue). Degrades to ``[]``
    (/status then shows no idle process)."""
    queue: Any = getattr(_proc_pool(server), "_warmed_proc_queue", None)
    return list(getattr(queue, "_queue", None) or [])


def share_child_process_count(min_interval: float = 0.5) -> None:
    """Make livekit's process-wide child count refresh at most once per
    ``min_interval`` for all AgentServers of this process together: every server
    calls ``livekit.agents.telemetry.metrics._update_child_proc_count`` (looked up
    on the module at each call, worker.py) every 0.5 s, and each call walks /proc.
    Idempotent. Degrades to no change: each server walks /proc on its own (with
    1,000 agents, ~60 % of a core)."""
    from livekit.agents.telemetry import metrics as livekit_metrics

    update = getattr(livekit_metrics, "_update_child_proc_count", None)
    if update is None or getattr(update, "shared_by_voice_runtime", False):
        return
    lock, last = threading.Lock(), [float("-inf")]

    def shared() -> None:
        with lock:
            now = time.monotonic()
            if now - last[0] < min_interval:
                return
            last[0] = now
        update()

    shared.shared_by_voice_runtime = True  # type: ignore[attr-defined]
    livekit_metrics._update_child_proc_count = shared


# -- function tools (livekit/agents/llm/tool_context.py) ---------------------------------


def tool_function(tool: Any) -> Callable[..., Any]:
    """The undecorated function of a livekit ``FunctionTool``: ``tool._func``. Its
    signature is what livekit parses a call's arguments with, so a wrapper made with
    ``functools.wraps`` must wrap this, not the tool. Degrades to the tool itself,
    which is callable (direct calls still work) but has no usable signature."""
    return getattr(tool, "_func", tool)


# -- AgentSession (livekit/agents/voice/agent_session.py, agent_activity.py) -------------


def session_with_error_hook() -> type:
    """An ``AgentSession`` subclass that asks ``self.on_session_error(error)``
    first about each error; True means handled, and livekit's own handling (which
    closes the session on an unrecoverable error) is skipped. It overrides the
    private ``AgentSession._on_error``. Degrades to a plain AgentSession (the hook is
    never asked): a failing realtime model then closes the session as livekit does,
    with no fallback to the pipeline."""
    from livekit.agents import AgentSession

    class HookedSession(AgentSession):  # type: ignore[misc]
        def on_session_error(self, error: Any) -> bool:
            return False

        def _on_error(self, error: Any) -> None:
            if not self.on_session_error(error):
                super()._on_error(error)

    if not callable(getattr(AgentSession, "_on_error", None)):
        return AgentSession
    return HookedSession


def _activity(session: Any) -> Any:
    return getattr(session, "_activity", None)


def active_agent(session: Any) -> Any:
    """The agent of the session's current activity (``session._activity.agent``):
    livekit swaps activities in a background task and has no public signal for
    "the new agent is live". Degrades to None: the caller waits for its timeout."""
    return getattr(_activity(session), "agent", None)


def realtime_session(session: Any) -> Any:
    """The realtime model session of the session's current activity
    (``session._activity.realtime_llm_session``). Degrades to None: a realtime
    session that re-raises on close is then not quietened before a swap."""
    return getattr(_activity(session), "realtime_llm_session", None)


def hold_run_open(session: Any, future: Any) -> None:
    """Keep the session's ``run()`` under way (if any) from returning before
    ``future`` is done: ``session._global_run_state._watch_handle(future)``, what
    livekit itself does to hold a run open during a handoff. Degrades to nothing: a
    claim check finishing after its turn's run is reported after it (``chat`` prints
    it late, a test case does not see it) and a retry's reply is not in that run."""
    state = getattr(session, "_global_run_state", None)
    watch = getattr(state, "_watch_handle", None)
    if state is not None and callable(watch) and not state.done():
        watch(future)


# -- one process pool for many registrations (livekit/agents/worker.py 1.8.9) -------------
#
# livekit registers one agent name per AgentServer, and each AgentServer owns a
# process pool, a load monitor and a health server. serve runs ONE AgentServer (the
# hub: the pool of job processes, prewarmed once for every agent) and, per agent
# name, only livekit's connection code on another AgentServer object that is never
# run(): its websocket, availability answers and status updates, with the hub's
# pool launching the jobs. The state below is what AgentServer.run() sets up for
# that code (worker.py, run(): lines 595-660 and 800-810 in 1.8.9). It degrades to
# nothing: without these attributes registration raises at start, which
# tests/unit/test_livekit_compat.py checks on every upgrade.


def launch_job(server: Any, job: Any, *, fake: bool) -> Any:
    """Start ``job`` (a livekit ``agent.Job`` protobuf) on the hub's pool, as
    ``AgentServer.simulate_job`` does, but with the job as given: simulate_job
    sets no agent name and no dispatch metadata, which routing reads
    (``server._proc_pool.launch_job``)."""
    from livekit.agents.job import JobAcceptArguments, RunningJobInfo

    info = RunningJobInfo(worker_id=server.id, accept_arguments=JobAcceptArguments(
        identity=f"agent-{job.id}", name="", metadata=""), job=job, url="", token="", fake_job=fake)
    return _proc_pool(server).launch_job(info)


def warm_job_process() -> None:
    """Make now what livekit makes on a job's event loop at its first use and then
    caches for the process: the mock room of a fake job (``ipc.mock_room.create_mock_room``,
    ``create_autospec`` of rtc.Room, which its ``_start_job`` calls) and the TLS context
    of its http session (``http_context._create_ssl_context``, made at the job's close to
    close the session). See serve/forkserver_calls.py."""
    from livekit.agents.ipc.mock_room import create_mock_room
    from livekit.agents.utils import http_context

    create_mock_room()
    http_context._create_ssl_context()


def discard_worker_messages(server: Any) -> Any:
    """A task that empties an unregistered AgentServer's outgoing message channel.
    With no websocket nobody reads it, and after 128 job status updates (about 43
    calls) livekit's status tasks block on it for ever, and so does drain(), which
    waits for them (``server._msg_chan``)."""
    import asyncio

    async def discard() -> None:
        from livekit.agents.utils.aio import ChanClosed

        channel = server._msg_chan
        with __import__("contextlib").suppress(ChanClosed):
            while True:
                await channel.recv()

    return asyncio.ensure_future(discard())


def start_registration(hub: Any, name: str, on_request: Callable[[Any], Any],
                       on_registered: Callable[..., None]) -> Any:
    """Register ``name`` with LiveKit, its jobs launched on ``hub``'s pool. Returns
    the registration (an AgentServer that is never run)."""
    import asyncio

    import aiohttp
    from livekit.agents import utils
    from livekit.agents.utils import http_context
    from livekit.agents.worker import _DefaultLoadCalc
    from livekit.protocol import agent

    reg = _registration_class()(ws_url=hub._ws_url, api_key=hub._api_key, api_secret=hub._api_secret,
                      max_retry=hub._max_retry, load_threshold=hub._load_threshold,
                      num_idle_processes=hub._num_idle_processes)
    # the entrypoint is the hub's: its pool runs the jobs, this object only registers the name
    reg.rtc_session(hub._entrypoint_fnc, agent_name=name, on_request=on_request)
    loop = asyncio.get_running_loop()
    reg._loop, reg._devmode = loop, False
    reg._job_lifecycle_tasks, reg._pending_assignments = set(), {}
    reg._close_future = loop.create_future()
    reg._msg_chan = utils.aio.Chan(128, loop=loop)
    reg._inference_executor, reg._proc_pool = None, hub._proc_pool
    reg._previous_status = agent.WorkerStatus.WS_AVAILABLE
    reg._api, reg._http_server, reg._prometheus_server, reg._load_task = None, None, None, None
    reg._http_session = aiohttp.ClientSession(
        proxy=reg._http_proxy or None, connector=aiohttp.TCPConnector(ssl=http_context._create_ssl_context()))
    reg._hub, reg._reserved_slots = hub, 0
    reg._load_fnc = hub._load_fnc or _DefaultLoadCalc.get_load
    reg._closed = False
    reg.on("worker_registered", on_registered)
    reg._conn_task = asyncio.ensure_future(reg._connection_task())
    return reg


_REGISTRATION: list[type] = []


def worker_load(hub: Any) -> float:
    """The load livekit last measured for the machine (``AgentServer._worker_load``,
    refreshed by its load task every 0.5 s); 0.0 before the first measure."""
    return float(getattr(hub, "_worker_load", 0.0))


def _registration_class() -> type:
    """AgentServer whose load is the hub's: livekit measures it in the hub's load
    task (every 0.5 s) and each registration reports it to LiveKit with its status
    (``_worker_load``, read by ``_update_worker_status`` and ``_get_effective_load``).
    A registration's own refresh before answering a job is dropped: one measure
    for the machine."""
    if not _REGISTRATION:
        from livekit.agents import AgentServer

        class Registration(AgentServer):  # type: ignore[misc]
            @property
            def _worker_load(self) -> float:
                return worker_load(self._hub)

            @_worker_load.setter
            def _worker_load(self, value: float) -> None:
                pass

        _REGISTRATION.append(Registration)
    return _REGISTRATION[0]


def registration_job_status(reg: Any, proc: Any) -> Any:
    """Tell LiveKit, on the registration that accepted it, how a job is doing
    (the hub's pool events; ``AgentServer._update_job_status``)."""
    return reg._update_job_status(proc)


async def registration_full(reg: Any) -> None:
    """Stop LiveKit sending this name new jobs (draining; ``_draining`` + status)."""
    reg._draining = True
    await reg._update_worker_status()


async def stop_registration(reg: Any) -> None:
    """Close the registration's websocket; the hub's pool (and its jobs) stay."""
    from livekit.agents import utils

    reg._closed = True
    if reg._conn_task is not None:
        await utils.aio.cancel_and_wait(reg._conn_task)
    reg._msg_chan.close()
    await reg._http_session.close()
    if not reg._close_future.done():
        reg._close_future.set_result(None)


def close_pool_now(server: Any) -> Any:
    """Close the hub's process pool now, even while ``run()`` is still starting it;
    returns the closing task (None: no pool yet). ``server._proc_pool.aclose()`` and
    ``._idle_ready``, read in livekit-agents 1.8.9 (ipc/proc_pool.py, worker.py).

    Why: ``AgentServer.aclose()`` waits for the server's lock, which ``run()`` holds
    until ``ProcPool.start()`` has its idle processes (at most
    ``initialize_process_timeout`` + 2 s, the forkserver's whole preload first). Until
    then the pool is not closed: its main task respawns every process that dies, every
    0.1 s. A stop in that window waited for the prewarm (7-9 s), and a hurried stop,
    which kills job processes and the forkserver every 0.2 s, got "error initializing
    process" (EOFError) every 0.2 s for the 32 s the start waited. Closing the pool
    first cancels its spawns (so a process killed now fails no initialization that
    anyone logs) and stops respawning; setting ``_idle_ready`` lets ``run()`` finish
    its start at once, so ``aclose()`` then closes the rest as usual.
    Degrades to None (``aclose()`` alone: the slow stops above)."""
    import asyncio

    pool = _proc_pool(server)
    if pool is None or not getattr(pool, "_started", False) or not callable(getattr(pool, "aclose", None)):
        return None
    closing = asyncio.ensure_future(pool.aclose())
    for proc in list(getattr(pool, "processes", None) or []):
        # a start cancelled mid-way (SupervisedProc.start shields ``_start_atask``)
        # leaves its EOFError, once the forkserver is killed, unretrieved: asyncio
        # logged "Task exception was never retrieved" with a traceback
        starting = getattr(proc, "_start_atask", None)
        if starting is not None and not starting.done():
            starting.add_done_callback(_retrieve)
    ready = getattr(pool, "_idle_ready", None)
    if ready is not None:
        ready.set()
    return closing


def keep_sigint_while_starting_processes() -> None:
    """Stop livekit from ignoring SIGINT in serve while it starts a job process:
    ``ipc.supervised_proc._mask_ctrl_c`` (1.8.9) sets SIGINT to SIG_IGN process-wide
    around ``Process.start()`` so children inherit it, and the first start lasts the
    forkserver's whole preload (7-9 s): a Ctrl-C, or a second stop signal by SIGINT,
    in that window was lost. serve's forkserver ignores SIGINT itself from its first
    preload (serve/forkserver_signals.py), so every job process it forks inherits
    SIG_IGN anyway. Idempotent. Degrades to livekit's mask (the lost SIGINT)."""
    import contextlib

    try:
        from livekit.agents.ipc import supervised_proc
    except ImportError:
        return
    if callable(getattr(supervised_proc, "_mask_ctrl_c", None)):
        supervised_proc._mask_ctrl_c = contextlib.nullcontext


def _retrieve(task: Any) -> None:
    if not task.cancelled():
        task.exception()


def kill_executor_now(proc: Any) -> bool:
    """SIGKILL a started job process at once, marked as killed for livekit
    (``proc._kill_sent``, what its own ``kill()`` sets, supervised_proc.py 1.8.9), so
    its exit is not logged as "process exited with non-zero exit code". livekit's
    ``kill()`` first sends SIGUSR1 (a stack dump) and sleeps 0.5 s. False: not a
    started process (a thread, or one still starting: marked all the same; the
    closed pool kills it once started). Only for processes that are to die: a
    marked one's ping loop stops. Degrades, without ``_kill_sent``, to livekit's error line
    per killed process."""
    import os
    import signal

    if hasattr(proc, "_kill_sent"):
        # marked even before it started: a process the forkserver has just forked is
        # killed by pid (children.kill_job_processes) before livekit knows its pid, and
        # livekit's own kill() of it then finds it dead and sets nothing
        proc._kill_sent = True
    pid = getattr(proc, "pid", None)
    if not pid or not getattr(proc, "started", False) or pid == os.getpid():
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return False
    return True


def on_pool_event(server: Any, event: str, callback: Callable[[Any], None]) -> None:
    """Listen to the hub's process pool (``process_job_launched``, ``process_closed``)."""
    _proc_pool(server).on(event, callback)


# -- job memory (livekit/agents/ipc/supervised_proc.py 1.8.9) -------------------------------


def watch_memory_kills(callback: Callable[[str | None, float | None], None]) -> None:
    """Call ``callback(job_id, memory_mb)`` when livekit kills a job process for
    exceeding ``job_memory_limit_mb`` (``job_id`` None: an idle, prewarmed one). livekit has no event for it, only the error record
    "job process exceeded memory limit, killing it" on ``livekit.agents`` with the
    job id in its extra fields (``_memory_monitor_task``). Degrades to no count
    (the kill itself still happens) if the wording changes."""
    import logging

    class Watch(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.levelno >= logging.ERROR and "exceeded memory limit" in str(record.msg):
                callback(getattr(record, "job_id", None), getattr(record, "memory_usage_mb", None))
            return True

    logger = logging.getLogger("livekit.agents")
    if not any(type(f).__name__ == "Watch" for f in logger.filters):
        logger.addFilter(Watch())


# -- telephony parts (livekit/agents/beta, voice/background_audio.py) ----------------------


def end_call_toolset_class() -> type:
    """livekit's ``EndCallTool`` whose close handler works outside a job too.
    ``EndCallTool._on_session_close`` calls ``get_job_context()``, which raises outside
    a job (``chat``, tests): the session then closes but livekit logs a traceback.
    The override does its job part only when there is a job; it also cancels
    ``_shutdown_session_task`` as livekit's does. Degrades (the method renamed): the
    traceback again, the call still ends."""
    from livekit.agents.beta.tools import EndCallTool
    from livekit.agents.job import get_job_context

    class RuntimeEndCallTool(EndCallTool):  # type: ignore[misc]
        def _on_session_close(self, ev: Any) -> None:
            try:
                get_job_context()
            except RuntimeError:
                task, self._shutdown_session_task = self._shutdown_session_task, None
                if task is not None:
                    task.cancel()
                return
            super()._on_session_close(ev)

    return RuntimeEndCallTool


def dtmf_task_class() -> type:
    """livekit's ``GetDtmfTask`` listening to any ``sip_dtmf_received`` emitter
    (the call's room, or a roomless call's line) instead of ``get_job_context().room``.
    It attaches the task's own handlers, ``_on_sip_dtmf_received``,
    ``_on_user_state_changed``, ``_on_agent_state_changed`` and cancels
    ``_generate_dtmf_reply`` as livekit's ``on_enter``/``on_exit`` do (1.8.9)."""
    from livekit.agents.beta.workflows import GetDtmfTask

    class LineDtmfTask(GetDtmfTask):  # type: ignore[misc]
        def __init__(self, events: Any, models: dict[str, Any], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._line_events = events
            # GetDtmfTask takes no models and falls back to the session's; a session
            # whose agents bring their own has none: Agent's ``_llm``/``_stt``/``_tts``/``_vad``
            for key, model in models.items():
                if model is not None:
                    setattr(self, f"_{key}", model)

        async def on_enter(self) -> None:
            self._line_events.on("sip_dtmf_received", self._on_sip_dtmf_received)
            self.session.on("user_state_changed", self._on_user_state_changed)
            self.session.on("agent_state_changed", self._on_agent_state_changed)
            self.session.generate_reply(tool_choice="none")

        async def on_exit(self) -> None:
            self._line_events.off("sip_dtmf_received", self._on_sip_dtmf_received)
            self.session.off("user_state_changed", self._on_user_state_changed)
            self.session.off("agent_state_changed", self._on_agent_state_changed)
            self._generate_dtmf_reply.cancel()

    return LineDtmfTask


def roomless_background_player_class() -> type:
    """livekit's ``BackgroundAudioPlayer`` for a call without a room (``chat
    --audio-in``, tests): its mixer's frames go to a callable instead of a published
    track. Overrides ``_publish_track`` (nothing to publish) and ``_run_mixer_task``
    (reads ``_audio_mixer`` as livekit's does, 1.8.9). ``start()`` still wants a
    ``room`` argument; it is only stored."""
    from livekit.agents.voice.background_audio import BackgroundAudioPlayer

    class RoomlessBackgroundAudioPlayer(BackgroundAudioPlayer):  # type: ignore[misc]
        def __init__(self, sink: Callable[[Any], None], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._sink = sink

        async def _publish_track(self) -> None:
            return None

        async def _run_mixer_task(self) -> None:
            import asyncio

            # a published track's AudioSource paces the mixer at real time; the sink
            # does not, so the pacing is here (a 2 s clip would "play" in microseconds)
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            async for frame in self._audio_mixer:
                self._sink(frame)
                next_at = max(next_at, loop.time() - 0.2) + frame.duration
                if next_at > loop.time():
                    await asyncio.sleep(next_at - loop.time())

    return RoomlessBackgroundAudioPlayer


# -- silero: one ONNX session per process ------------------------------------------------
# silero.VAD.load makes an onnxruntime session of the shipped model each time (~11 MiB of
# a process's private memory). serve makes one (``silero_session``) in livekit's forkserver
# when an agent uses silero, and every job process's VADs run on that copy-on-write
# session: each stream keeps its own state (OnnxModel), and onnxruntime's run is
# thread-safe. The options are derived as VAD.load derives them (checked against it in
# tests/unit/test_livekit_compat.py).
_SILERO_SESSIONS: dict[bool, Any] = {}


def silero_session(force_cpu: bool = True) -> Any:
    """The process's one onnxruntime session of silero's shipped model (made on first use)."""
    session = _SILERO_SESSIONS.get(force_cpu)
    if session is None:
        from livekit.plugins.silero import onnx_model

        session = _SILERO_SESSIONS[force_cpu] = onnx_model.new_inference_session(force_cpu)
    return session


def silero_vad(*, min_speech_duration: float = 0.05, min_silence_duration: float = 0.55,
               prefix_padding_duration: float = 0.5, activation_threshold: float = 0.5,
               sample_rate: int = 16000, force_cpu: bool = True) -> Any:
    """``silero.VAD.load(...)`` (same defaults, same derived deactivation threshold) on the
    process's shared session instead of a new one."""
    from livekit.plugins import silero
    from livekit.plugins.silero import onnx_model, vad

    if sample_rate not in onnx_model.SUPPORTED_SAMPLE_RATES:
        raise ValueError("Silero VAD only supports 8KHz and 16KHz sample rates")
    opts = vad._VADOptions(min_speech_duration=min_speech_duration, min_silence_duration=min_silence_duration,
                           prefix_padding_duration=prefix_padding_duration, max_buffered_speech=60.0,
                           activation_threshold=activation_threshold,
                           deactivation_threshold=max(activation_threshold - 0.15, 0.01), sample_rate=sample_rate)
    return silero.VAD(session=silero_session(force_cpu), opts=opts)
