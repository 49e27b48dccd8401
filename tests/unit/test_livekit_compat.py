"""livekit_compat holds every private livekit/mcp part voice-runtime uses.

Two promises: each part it relies on still exists in the installed livekit-agents
and mcp (so an upgrade that removes one fails here, not silently in production),
and no other module of the package reaches into livekit or mcp privately.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path

import pytest

from voice_runtime.core import livekit_compat
from voice_runtime.mcp import compat as mcp_compat

RUNTIME = Path(livekit_compat.__file__).parents[1]


# -- each private part still exists and does what the accessor expects -------------------


async def test_an_agent_servers_executors_are_listed_and_its_idle_ones_can_be_taken() -> None:
    """``server._proc_pool.processes`` and ``._warmed_proc_queue`` (hurried stop, recycling)."""
    from livekit.agents import AgentServer, JobExecutorType

    async def entrypoint(_ctx: object) -> None:
        pass

    server = AgentServer(job_executor_type=JobExecutorType.THREAD, num_idle_processes=1, host="127.0.0.1", port=0)
    server.rtc_session(entrypoint, agent_name="compat-probe")
    run = asyncio.create_task(server.run(devmode=False, unregistered=True))
    try:
        deadline = asyncio.get_running_loop().time() + 20
        idle: list[object] = []
        while not idle and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            if livekit_compat.job_executors(server):
                idle = livekit_compat.take_idle_executors(server)
        assert len(idle) == 1, "livekit's pool no longer exposes its idle executors"
        assert idle[0] in livekit_compat.job_executors(server)
        await idle[0].aclose()
    finally:
        await server.aclose()
        await asyncio.wait_for(run, timeout=20)


def test_a_job_process_can_still_be_killed_as_livekit_kills_it() -> None:
    """What a hurried stop uses on each executor (a process; threads cannot be killed):
    ``started``, ``pid``, and the ``_kill_sent`` flag that keeps livekit from
    reporting the exit as a failure (kill_executor_now)."""
    from livekit.agents.ipc import supervised_proc
    from livekit.agents.ipc.job_proc_executor import ProcJobExecutor

    assert isinstance(inspect.getattr_static(ProcJobExecutor, "started"), property)
    assert isinstance(inspect.getattr_static(ProcJobExecutor, "pid"), property)
    assert "self._kill_sent = True" in inspect.getsource(supervised_proc.SupervisedProc._send_kill_signal)
    assert "not self._kill_sent" in inspect.getsource(supervised_proc.SupervisedProc._supervise_task)
    assert "self._start_atask" in inspect.getsource(supervised_proc.SupervisedProc.start)


def test_the_process_pool_can_still_be_closed_while_it_starts() -> None:
    """close_pool_now: ``ProcPool.aclose()`` once ``_started``, and ``start()`` waiting
    on ``_idle_ready``; keep_sigint_while_starting_processes: ``_mask_ctrl_c`` looked
    up on the module at each process start."""
    from livekit.agents.ipc import proc_pool, supervised_proc

    assert inspect.iscoroutinefunction(proc_pool.ProcPool.aclose)
    assert "self._idle_ready.wait()" in inspect.getsource(proc_pool.ProcPool.start)
    assert "self._started" in inspect.getsource(proc_pool.ProcPool.aclose)
    assert "with _mask_ctrl_c():" in inspect.getsource(supervised_proc.SupervisedProc._start)


def test_livekit_still_counts_child_processes_through_the_function_serve_shares() -> None:
    """``telemetry.metrics._update_child_proc_count``, looked up on the module at each call."""
    from livekit.agents import worker
    from livekit.agents.telemetry import metrics

    assert callable(getattr(metrics, "_update_child_proc_count", None))
    assert "telemetry.metrics._update_child_proc_count" in inspect.getsource(worker)
    livekit_compat.share_child_process_count()
    livekit_compat.share_child_process_count()  # idempotent: wrapped once
    shared = metrics._update_child_proc_count
    assert getattr(shared, "shared_by_voice_runtime", False)
    shared()
    shared()  # the second call within 0.5 s walks nothing


def test_a_function_tools_undecorated_function_is_reachable() -> None:
    """``FunctionTool._func``: plugin tools are traced and called through it."""
    from livekit.agents import function_tool

    async def lookup(city: str) -> str:
        """Look a city up."""
        return city

    tool = function_tool(lookup)
    assert livekit_compat.tool_function(tool) is lookup


def test_agent_session_errors_still_pass_through_the_method_the_hook_overrides() -> None:
    """``AgentSession._on_error``, called by the activity for every model error."""
    from livekit.agents import AgentSession
    from livekit.agents.voice.agent_activity import AgentActivity

    hooked = livekit_compat.session_with_error_hook()
    assert hooked is not AgentSession and issubclass(hooked, AgentSession)
    assert "_on_error" in vars(AgentSession)
    assert "self._session._on_error(error)" in inspect.getsource(AgentActivity._on_error)


async def test_an_agent_sessions_activity_exposes_its_agent_and_realtime_session() -> None:
    """``AgentSession._activity``, ``AgentActivity.agent`` and ``.realtime_llm_session``."""
    from livekit.agents import AgentSession
    from livekit.agents.voice.agent_activity import AgentActivity

    session = AgentSession()
    assert "_activity" in vars(session)  # None until started
    assert livekit_compat.active_agent(session) is None
    assert livekit_compat.realtime_session(session) is None
    assert isinstance(inspect.getattr_static(AgentActivity, "agent"), property)
    assert isinstance(inspect.getattr_static(AgentActivity, "realtime_llm_session"), property)


async def test_a_sessions_run_still_waits_for_a_future_it_is_given_to_watch() -> None:
    """``AgentSession._global_run_state`` and ``RunResult._watch_handle(future)``: a
    claims check holds its turn's run open."""
    from livekit.agents import AgentSession
    from livekit.agents.voice.run_result import RunResult

    session = AgentSession()
    assert "_global_run_state" in vars(session)  # None until a run starts
    run = RunResult(output_type=None, session=session)
    session._global_run_state = run
    check = asyncio.get_running_loop().create_future()
    livekit_compat.hold_run_open(session, check)
    assert not run.done()
    check.set_result(None)
    await asyncio.sleep(0)
    assert run.done()


def test_the_mcp_stdio_client_still_reads_through_the_replaceable_text_stream() -> None:
    """``mcp.client.stdio.TextReceiveStream``, looked up on the module at each connection."""
    import mcp.client.stdio as sdk

    assert mcp_compat.stdio_text_stream() is sdk.TextReceiveStream
    assert "TextReceiveStream(process.stdout" in inspect.getsource(sdk.stdio_client)


def test_the_streamable_http_parser_seam_is_where_the_sdk_parses_each_message() -> None:
    """``mcp.client.streamable_http.jsonrpc_message_adapter``, looked up on the module at each message."""
    import mcp.client.streamable_http as sdk

    assert mcp_compat.http_message_adapter() is sdk.jsonrpc_message_adapter
    assert "jsonrpc_message_adapter.validate_json(sse.data" in inspect.getsource(sdk)


def test_a_raw_request_still_goes_through_the_sessions_stamp_and_dispatcher() -> None:
    """``ClientSession._stamp`` and ``ClientSession._dispatcher.send_raw_request``: what
    ``send_request`` itself uses, and what a task-augmented ``tools/call`` is sent through."""
    from mcp import ClientSession

    source = inspect.getsource(ClientSession.send_request)
    assert "self._stamp(data, opts)" in source
    assert "await self._dispatcher.send_raw_request(method, data.get(\"params\"), opts)" in source


def test_the_oauth_client_steps_the_runtime_overrides_and_reuses_still_exist() -> None:
    """``OAuthClientProvider``'s flow steps and context members ``mcp.oauth`` overrides or
    wraps, and the SDK's client-credentials requests it reuses."""
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.auth.oauth2 import OAuthContext

    for step in mcp_compat.OAUTH_PROVIDER_STEPS:
        assert callable(getattr(OAuthClientProvider, step, None)), step
    fields = set(OAuthContext.__dataclass_fields__) | set(dir(OAuthContext))
    assert set(mcp_compat.OAUTH_CONTEXT_STEPS) <= fields
    steps = mcp_compat.oauth_client_credentials_steps()
    assert all(callable(part) for part in vars(steps).values())
    # the steps read these on self, which the runtime's provider sets
    assert "self._assertion_provider" in inspect.getsource(steps.add_jwt_assertion)
    assert "self._issuer" in inspect.getsource(steps.secret_request)


# -- nobody else reaches in -------------------------------------------------------------

# private attributes read outside livekit_compat, each with the reason it is not
# a livekit or mcp private: (file relative to runtime/, expression)
ALLOWED = {
    ("plugins/trial.py", "os._exit"): "the standard library's, documented",
    ("core/leave.py", "os._exit"): "the standard library's, documented: a one-shot command exits though a plugin "
                                    "left a thread; serve after a hurried stop, its cleanup done",
    ("plugins/trial.py", "sys._getframe"): "the standard library's, documented",
    ("plugins/trial.py", "sys._current_frames"): "the standard library's, documented",
    # the SDK's OAuth flow steps a subclass overrides and calls on (its own extensions
    # do the same); compat.OAUTH_PROVIDER_STEPS lists them and a test above checks them
    **{("mcp/oauth.py", f"super().{step}"): "an overridden step of OAuthClientProvider's flow"
       for step in ("_refresh_token", "_handle_refresh_response", "_perform_authorization", "_handle_token_response")},
}


def _private_reads(path: Path) -> list[tuple[int, str]]:
    """``x._name`` (x not self or cls), ``getattr(x, "_name")``, and attributes set on
    an imported livekit or mcp module or class (monkeypatching its internals)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.asname or a.name.split(".")[0] for a in node.names
                         if a.name.split(".")[0] in ("livekit", "mcp")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("livekit", "mcp"):
            imported |= {a.asname or a.name for a in node.names}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and node.args[1].value.startswith("_") and not node.args[1].value.startswith("__")):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id in imported:
                    found.append((node.lineno, ast.unparse(target)))
    return found


def test_no_module_but_livekit_compat_reads_a_private_livekit_or_mcp_attribute() -> None:
    offenders = []
    for path in sorted(RUNTIME.rglob("*.py")):
        rel = path.relative_to(RUNTIME).as_posix()
        if rel in ("core/livekit_compat.py", "mcp/compat.py"):
            continue
        offenders += [f"runtime/{rel}:{line}: {expr}" for line, expr in _private_reads(path)
                      if (rel, expr) not in ALLOWED]
    assert not offenders, "move these into runtime/core/livekit_compat.py (livekit) or runtime/mcp/compat.py (mcp):\n" + "\n".join(offenders)


@pytest.mark.parametrize("source, expected", [
    ("x = server._proc_pool\n", ["server._proc_pool"]),
    ("x = getattr(session, '_activity', None)\n", ["getattr(session, '_activity', None)"]),
    ("import mcp.client.stdio as sdk\nsdk.TextReceiveStream = object\n", ["sdk.TextReceiveStream"]),
    ("self._mine = 1\nx = cls._also_mine\ny = obj.__class__\n", []),
])
def test_the_private_access_check_finds_what_it_should(tmp_path: Path, source: str, expected: list[str]) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert [expr for _, expr in _private_reads(path)] == expected


def test_the_parts_a_registration_on_the_hubs_pool_uses_still_exist() -> None:
    """What ``start_registration`` sets up and calls: AgentServer.run() still makes
    these attributes (read from its source), and the connection code is there."""
    from livekit.agents import AgentServer, worker

    run = inspect.getsource(AgentServer.run)
    for attribute in ("_loop", "_devmode", "_job_lifecycle_tasks", "_pending_assignments", "_close_future",
                      "_msg_chan", "_inference_executor", "_proc_pool", "_previous_status", "_api",
                      "_http_session", "_worker_load", "_reserved_slots", "_conn_task", "_load_task",
                      "_prometheus_server"):
        assert f"self.{attribute} " in run or f"self.{attribute}:" in run, attribute
    for method in ("_connection_task", "_update_job_status", "_update_worker_status"):
        assert inspect.iscoroutinefunction(getattr(AgentServer, method)), method
    assert callable(worker._DefaultLoadCalc.get_load)
    server = AgentServer()
    for attribute in ("_entrypoint_fnc", "_ws_url", "_api_key", "_api_secret", "_max_retry", "_load_threshold",
                      "_num_idle_processes", "_http_proxy", "_load_fnc", "_draining", "_closed"):
        assert hasattr(server, attribute), attribute


def test_livekit_still_reports_a_memory_kill_with_the_words_serve_counts() -> None:
    """``watch_memory_kills`` counts livekit's error record; its wording and the job id."""
    from livekit.agents.ipc import job_proc_executor, supervised_proc

    assert "exceeded memory limit, killing it" in inspect.getsource(supervised_proc.SupervisedProc._memory_monitor_task)
    assert '"job_id"' in inspect.getsource(job_proc_executor.ProcJobExecutor.logging_extra)


def test_what_a_job_process_warms_is_what_livekit_makes_for_a_job_and_keeps_per_process() -> None:
    """``warm_job_process``: a fake job's room is ``create_mock_room()`` and the http
    session's TLS context ``_create_ssl_context()``, each the same object on every call."""
    from livekit.agents.ipc import job_proc_lazy_main, mock_room
    from livekit.agents.utils import http_context

    livekit_compat.warm_job_process()
    assert "create_mock_room()" in inspect.getsource(job_proc_lazy_main._JobProc._start_job)
    assert mock_room.create_mock_room() is mock_room.create_mock_room()
    assert "_create_ssl_context()" in inspect.getsource(http_context._new_session_ctx)
    assert http_context._create_ssl_context() is http_context._create_ssl_context()


def test_a_pool_launches_a_job_as_given_and_keeps_its_idle_queue() -> None:
    from livekit.agents.ipc.proc_pool import ProcPool

    assert inspect.iscoroutinefunction(ProcPool.launch_job)
    assert "_warmed_proc_queue" in inspect.getsource(ProcPool.__init__)


async def test_the_telephony_parts_the_phone_behaviour_overrides_still_exist() -> None:
    """EndCallTool's close handler and shutdown task, GetDtmfTask's handlers, an Agent's
    models, BackgroundAudioPlayer's track and mixer (core/livekit_compat.py, telephony)."""
    from livekit.agents import Agent
    from livekit.agents.beta.tools import EndCallTool
    from livekit.agents.beta.workflows import GetDtmfTask
    from livekit.agents.voice.background_audio import BackgroundAudioPlayer

    assert callable(EndCallTool._on_session_close)
    assert EndCallTool()._shutdown_session_task is None
    task = GetDtmfTask(num_digits=4)
    for name in ("_on_sip_dtmf_received", "_on_user_state_changed", "_on_agent_state_changed"):
        assert callable(getattr(task, name))
    assert callable(task._generate_dtmf_reply.cancel)
    agent = Agent(instructions="x")
    assert all(hasattr(agent, f"_{key}") for key in ("llm", "stt", "tts", "vad"))
    assert inspect.iscoroutinefunction(BackgroundAudioPlayer._publish_track)
    assert inspect.iscoroutinefunction(BackgroundAudioPlayer._run_mixer_task)
    assert "_audio_mixer" in inspect.getsource(BackgroundAudioPlayer.__init__)
    line = livekit_compat.dtmf_task_class()(object(), {"llm": "model"}, num_digits=2)
    assert line.llm == "model"


@pytest.mark.parametrize("options", [{}, {"activation_threshold": 0.8, "min_silence_duration": 0.3},
                                     {"activation_threshold": 0.1, "sample_rate": 8000, "prefix_padding_duration": 0.2,
                                      "min_speech_duration": 0.1}])
def test_a_silero_vad_on_the_shared_session_has_the_options_vad_load_gives(options: dict[str, object]) -> None:
    from livekit.plugins import silero

    from voice_runtime.core.livekit_compat import silero_session, silero_vad

    shared = silero_vad(**options)
    assert shared._opts == silero.VAD.load(**options)._opts
    assert shared._onnx_session is silero_session() is silero_vad()._onnx_session  # one session per process


def test_a_silero_vad_on_the_shared_session_hears_speech_and_silence() -> None:
    import numpy as np
    from livekit.plugins.silero import onnx_model

    from voice_runtime.core.livekit_compat import silero_vad

    vad = silero_vad()
    model = onnx_model.OnnxModel(onnx_session=vad._onnx_session, sample_rate=16000)
    assert model(np.zeros(512, dtype=np.float32)) < 0.1


async def _vad_events(vad: object, pcm: bytes) -> list[tuple[str, int, float]]:
    """What a VAD stream says of ``pcm`` (16 kHz, pushed in 20 ms frames): (event,
    samples index, speech probability) in order."""
    from livekit import rtc

    stream = vad.stream()  # type: ignore[attr-defined]
    step = 320 * 2
    for i in range(0, len(pcm) - step + 1, step):
        stream.push_frame(rtc.AudioFrame(data=pcm[i:i + step], sample_rate=16000, num_channels=1,
                                         samples_per_channel=320))
    stream.end_input()
    events = [(event.type.value, event.samples_index, round(event.probability, 6)) async for event in stream]
    await stream.aclose()
    return events


@pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng")
def test_a_silero_vad_on_the_shared_session_says_what_silero_vad_load_says_window_for_window() -> None:
    from fakes import espeak
    from livekit.plugins import silero

    from voice_runtime.core.livekit_compat import silero_vad

    speech = espeak.speak("Do you have a room for tonight?", 16000)
    pcm = espeak.silence(0.6, 16000) + speech + espeak.silence(1.0, 16000) + speech + espeak.silence(1.0, 16000)

    async def both() -> tuple[list[tuple[str, int, float]], list[tuple[str, int, float]]]:
        return await _vad_events(silero_vad(), pcm), await _vad_events(silero.VAD.load(), pcm)

    ours, silero_own = asyncio.run(both())
    assert ours == silero_own
    said = [kind for kind, _, _ in ours if kind != "inference_done"]
    assert said == ["start_of_speech", "end_of_speech"] * 2
