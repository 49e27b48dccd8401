"""Signals sent to a real `voice-runtime serve` process: SIGHUP reloads, a second
SIGTERM cuts a long drain short, a SIGTERM during start-up; after each, no MCP
server process and no private folder is left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fakes.openai_chat import FakeOpenAI
from helpers import write
from mcp_servers.harness import pid_alive, read_events, stdio_command, wait_gone
from serve_harness import Serve, spec, system_prompts_for


def test_sighup_reloads_now_even_a_change_no_watcher_sees(tmp_path: Path, agents: Path, fake_openai: FakeOpenAI) -> None:
    prompt = tmp_path / "prompts" / "desk.md"  # outside agents.d: neither watched nor scanned
    write(prompt, "You are version one.")
    text = spec("placeholder", fake_openai.base_url).replace(
        'instructions: "placeholder"\n', "instructions_file: ../prompts/desk.md\n")
    write(agents / "desk.yaml", text)
    with Serve(agents, "--scan-interval", "0") as serve:
        serve.wait_ready()
        write(prompt, "You are version two.")
        time.sleep(1.5)  # past the watcher's settle window: nothing reloads by itself
        assert serve.agent("desk")["generation"] == 1
        serve.proc.send_signal(signal.SIGHUP)
        serve.wait_for(lambda: serve.agent("desk")["generation"] == 2, message="the reload SIGHUP asked for")
        assert "SIGHUP: reloading specs" in serve.output()
        # /status can show the new generation a moment before the reload's log line
        serve.wait_for(lambda: "reload (signal) generation 2" in serve.output(), message="the reload's log line")
        serve.simulate("desk", ["which version?"])
        serve.wait_for(lambda: system_prompts_for(fake_openai, "which version?"), message="a call")
        assert system_prompts_for(fake_openai, "which version?") == ["You are version two."]
        assert serve.proc.poll() is None  # SIGHUP no longer stops serve
        assert serve.stop() == 0


def test_signals_to_serves_whole_process_group_reload_or_stop_it_cleanly_with_no_error_logged(
        tmp_path: Path, agents: Path, fake_openai: FakeOpenAI) -> None:
    """systemd (KillMode=control-group), `timeout` and the shell's `kill %1` signal the
    whole group: the forkserver starting the job processes must not die of it, or each
    job process ending after it is logged as exit code 255."""
    import os

    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents) as serve:
        serve.wait_ready()
        serve.wait_for(lambda: "job processes ready to start" in serve.output(), message="the job pool")
        serve.simulate("desk", ["hello from a call"])
        serve.wait_for(lambda: system_prompts_for(fake_openai, "hello from a call"), message="a call")
        # the other signals serve handles, sent to the group (a closing terminal sends SIGHUP):
        # serve reloads or logs them, and the forkserver lives on to start the next call
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            os.killpg(serve.proc.pid, sig)
        serve.wait_for(lambda: "SIGHUP: reloading" in serve.output(), message="the reload")
        serve.simulate("desk", ["a call after the group signals"])
        serve.wait_for(lambda: system_prompts_for(fake_openai, "a call after the group signals"),
                       message="a call started by the same forkserver")
        os.killpg(serve.proc.pid, signal.SIGTERM)
        assert serve.proc.wait(60) == 0
        log = serve.output()
    assert "drained and unregistered" in log
    assert "non-zero exit code" not in log and " ERROR " not in log, log[-3000:]


def _stubborn_server_pids(record: Path) -> list[int]:
    """Every process of every start of the recorder: it ignores stdin EOF and
    SIGTERM, and leaves a grandchild in its process group."""
    return [pid for e in read_events(record) for pid in (e["pid"], e.get("grandchild_pid")) if pid]


def _desk_with_a_stubborn_server(tmp_path: Path, agents: Path, fake_openai: FakeOpenAI) -> Path:
    record = tmp_path / "events.jsonl"
    command, args = stdio_command(record=record, name="tools", fault="ignore-sigterm")
    own_command, own_args = stdio_command(record=record, name="own", fault="ignore-sigterm")
    # `tools` is serve's warm connection, lent to the job; `own` (shared: false) the job's own process
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url)
          + f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}\n"
          + f"  own: {{command: {json.dumps(own_command)}, args: {json.dumps(own_args)}, shared: false}}\n")
    return record


def _start_a_long_call(serve: Serve, record: Path, fake_openai: FakeOpenAI) -> list[int]:
    serve.wait_ready()
    serve.simulate("desk", ["first", "much later"], gap_s=60.0)
    serve.wait_for(lambda: system_prompts_for(fake_openai, "first"), message="the call's first turn")
    # serve's warm connection and the job's own: both servers are running
    serve.wait_for(lambda: len(read_events(record)) >= 2, message="two MCP server starts")
    pids = _stubborn_server_pids(record)
    assert len(pids) >= 4 and all(pid_alive(p) for p in pids)
    return pids


def test_a_second_sigterm_during_a_long_drain_exits_at_once_leaving_no_mcp_server_or_folder(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """With an idle process beside the call's: both used to be logged as "process
    exited with non-zero exit code 255" (the forkserver was killed before it could
    report their ends) and a respawned process's EOFError as a traceback."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    record = _desk_with_a_stubborn_server(tmp_path, agents, fake_openai)
    with Serve(agents, "--idle-processes", "1", env={"TMPDIR": str(scratch), "PROMETHEUS_MULTIPROC_DIR": None}) as serve:
        pids = _start_a_long_call(serve, record, fake_openai)
        assert list(scratch.glob("voice-runtime-*"))
        serve.proc.send_signal(signal.SIGTERM)
        serve.wait_for(lambda: "stopping: draining" in serve.output(), message="the drain")
        started = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        try:
            rc = serve.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve still running 15 s after the second SIGTERM\n{serve.output()[-3000:]}") from None
        elapsed = time.monotonic() - started
        assert rc == 128 + signal.SIGTERM
        assert elapsed < 10, elapsed
        log = serve.output()
        assert "second stop signal: ending 1 call(s) in progress now" in log
        assert "agent desk unregistered with 1 call(s) still in progress: a second stop signal; they are cut" in log
        assert "non-zero exit code" not in log and "Traceback" not in log, log[-3000:]
        assert wait_gone(pids, timeout=2.0), [p for p in pids if pid_alive(p)]
        assert _session_left(serve.proc.pid) == []
        assert list(scratch.glob("voice-runtime-*")) == []  # the state (expanded values) and metrics folders
        assert system_prompts_for(fake_openai, "much later") == []


def _session_left(serve_pid: int) -> list[str]:
    """serve's job processes, forkserver and resource tracker share its session (the
    harness starts serve as a session leader): any of them still running, a moment
    after serve exited."""
    import os

    import psutil

    def left() -> list[str]:
        out = []
        for proc in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if os.getsid(proc.pid) == serve_pid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    out.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:120]}")
            except (OSError, psutil.Error):
                continue
        return out

    deadline = time.monotonic() + 3.0  # the forkserver and the tracker end when their pipes from serve close
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    return left()


def _stopped_after(serve: Serve, *signals: signal.Signals, gap: float = 0.1, timeout: float = 15.0) -> int:
    """Send ``signals`` ``gap`` seconds apart; serve's exit code (failing with its log
    if it is still running ``timeout`` s after the last one: it used to take 14-35 s)."""
    for i, sig in enumerate(signals):
        if i:
            time.sleep(gap)
        serve.proc.send_signal(sig)
    try:
        return serve.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"serve still running {timeout:g} s after {[s.name for s in signals]}\n"
                             f"{serve.output()[-3000:]}") from None


def _assert_stopped_cleanly(serve: Serve, scratch: Path) -> None:
    log = serve.output()
    for noise in ("error initializing process", "non-zero exit code", "Traceback", "never retrieved"):
        assert noise not in log, f"{noise!r} in the log:\n{log[-3000:]}"
    assert _session_left(serve.proc.pid) == []
    assert list(scratch.glob("voice-runtime-*")) == []


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_two_stop_signals_while_the_job_pool_is_still_starting_exit_at_once_with_no_error_or_leftover(
    second: signal.Signals, tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """The agent is ready before livekit's pool is: its forkserver still imports. The
    pool could not be closed until it had its idle process, and meanwhile it restarted
    every process the second signal killed: "error initializing process" (EOFError)
    every 0.2 s, and serve exited 14-35 s later. A SIGINT then was lost outright
    (livekit ignored SIGINT while it started a process)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--idle-processes", "1", env={"TMPDIR": str(scratch), "PROMETHEUS_MULTIPROC_DIR": None}) as serve:
        serve.wait_for(lambda: "agent desk ready" in serve.output(), timeout=60, message="the agent")
        rc = _stopped_after(serve, signal.SIGTERM, second)
        if "second stop signal" in serve.output():  # it hurried the stop
            assert rc == 128 + second, serve.output()[-3000:]
        else:
            # on a quiet machine the first stop closes the starting pool and is done within the
            # gap: serve exited 0, or was in the interpreter's own exit, whose first step puts the
            # default handlers back, so the second signal ended it (nothing was left to clean)
            assert rc in (0, -second), (rc, serve.output()[-3000:])
        _assert_stopped_cleanly(serve, scratch)


@pytest.mark.parametrize("when", ["imports under way", "agent ready, pool starting", "right after /readyz"])
def test_one_stop_signal_during_start_up_exits_0_with_no_error_or_leftover(
    when: str, tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """(The first moments: test_sigterm_during_start_up_leaves_no_temp_folder.)"""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, "--idle-processes", "1", env={"TMPDIR": str(scratch), "PROMETHEUS_MULTIPROC_DIR": None}) as serve:
        if when == "right after /readyz":
            serve.wait_ready()
        elif when == "imports under way":  # livekit's and the plugins' (a second or more)
            serve.wait_for(lambda: list(scratch.glob("voice-runtime-*")), timeout=30, message="the temp folders")
            time.sleep(0.5)
        else:
            serve.wait_for(lambda: "agent desk ready" in serve.output(), timeout=60, message="the agent")
        assert _stopped_after(serve, signal.SIGTERM, timeout=30) == 0
        _assert_stopped_cleanly(serve, scratch)


def test_an_mcp_server_whose_job_process_was_killed_is_adopted_by_serve_and_stopped_when_it_exits(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    import os

    import psutil

    record = _desk_with_a_stubborn_server(tmp_path, agents, fake_openai)
    with Serve(agents) as serve:
        pids = _start_a_long_call(serve, record, fake_openai)
        servers = [e["pid"] for e in read_events(record)]
        [job_server] = [pid for pid in servers if psutil.Process(pid).ppid() != serve.proc.pid]
        job_process = psutil.Process(job_server).ppid()
        os.kill(job_process, signal.SIGKILL)  # what livekit's memory limit or a crash does
        # orphaned, the server is re-parented to serve, not to PID 1
        serve.wait_for(lambda: psutil.Process(job_server).ppid() == serve.proc.pid, message="the adoption")
        assert pid_alive(job_server)  # it ignores stdin EOF: nobody else would ever stop it
        assert serve.stop() == 0
        assert wait_gone(pids, timeout=2.0), [p for p in pids if pid_alive(p)]
        assert "stopped 1 MCP server process group(s) left behind by ended calls" in serve.output()


def test_sigterm_during_start_up_leaves_no_temp_folder(tmp_path: Path, agents: Path, fake_openai: FakeOpenAI) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents, env={"TMPDIR": str(scratch), "PROMETHEUS_MULTIPROC_DIR": None}) as serve:
        # as soon as serve has made its folders, long before it serves
        serve.wait_for(lambda: list(scratch.glob("voice-runtime-*")), timeout=30, message="the temp folders")
        assert serve.stop(timeout=30) == 0
    assert list(scratch.glob("voice-runtime-*")) == []
    assert "stopped while starting" in serve.output()  # livekit's import alone takes over a second
    assert "Traceback" not in serve.output()


def test_sigusr1_and_sigusr2_are_logged_and_ignored_and_sigquit_stops_cleanly(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """SIGUSR1/SIGUSR2 used to end serve at once (their default), leaving the state
    folder with expanded values and orphaned MCP servers. SIGQUIT stops like SIGTERM."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    record = _desk_with_a_stubborn_server(tmp_path, agents, fake_openai)
    with Serve(agents, env={"TMPDIR": str(scratch), "PROMETHEUS_MULTIPROC_DIR": None}) as serve:
        serve.wait_ready()
        serve.wait_for(lambda: read_events(record), message="serve's warm MCP server")
        pids = _stubborn_server_pids(record)
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            serve.proc.send_signal(sig)
            serve.wait_for(lambda sig=sig: f"{sig.name} ignored" in serve.output(), message=f"{sig.name} logged")
        assert serve.proc.poll() is None
        assert serve.get("/healthz")[0] == 200
        assert serve.stop(signal.SIGQUIT) == 0
    assert wait_gone(pids, timeout=2.0), [p for p in pids if pid_alive(p)]
    assert list(scratch.glob("voice-runtime-*")) == []
    assert "Traceback" not in serve.output()


def test_a_second_signal_while_a_calls_process_is_still_starting_does_not_start_the_call_after_all(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    """With no idle process, a call waits for one to start. A second stop signal then
    used to kill the starting process, and livekit started another that ran the whole
    call, long after serve was told to stop at once."""
    import threading

    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents) as serve:
        serve.wait_ready()
        body = json.dumps({"agent": "desk", "turns": ["first", "second", "third"], "gap_s": 5}).encode()
        posting = threading.Thread(target=serve.post, args=("/simulate?wait=1", body), kwargs={"timeout": 60},
                                   daemon=True)
        posting.start()
        time.sleep(0.5)  # the job's process is being started (--idle-processes 0)
        serve.proc.send_signal(signal.SIGTERM)
        serve.wait_for(lambda: "stopping: draining" in serve.output(), message="the drain")
        serve.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            rc = serve.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve still running after the second SIGTERM\n{serve.output()[-3000:]}") from None
        assert rc == 128 + signal.SIGTERM
        assert time.monotonic() - started < 8
        assert system_prompts_for(fake_openai, "third") == []
