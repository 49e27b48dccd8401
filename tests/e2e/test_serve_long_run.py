"""What a long-running `serve` leaves behind as calls come and go: a real serve
process with the process executor (one job process per call), the real openai
plugin against the fake LLM, a real MCP server answering every call's tool call.

Each job process writes its own Prometheus files and its own tool-call journal;
serve folds them away when it sees the process end, so what it keeps (and what
a scrape reads) is the same after forty-five calls as after three.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import threading
from pathlib import Path

import psutil
import pytest
from fakes.openai_chat import FakeOpenAI
from helpers import write
from mcp_servers.harness import read_records, stdio_command
from serve_harness import Serve, spec

from voice_runtime.observe.call_journal import ARCHIVE

pytestmark = pytest.mark.timeout(600)

TOOL_CALLS = 'voice_runtime_tool_calls_total{agent="desk",outcome="ok",server="tools",tool="echo"}'
SESSIONS_CURRENT = 'voice_runtime_sessions_current{agent="desk"}'
SESSIONS_ACTIVE = 'voice_runtime_sessions_active{agent="desk"}'


def _desk(agents: Path, tmp: Path, fake: FakeOpenAI) -> Path:
    record = tmp / "calls.jsonl"
    command, args = stdio_command(record=record, name="tools")
    write(agents / "desk.yaml", spec("You are the desk.", fake.base_url)
          + f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}\n")
    fake.use_tool_then_answer("echo", {"text": "count me"})
    return record


def _serve(agents: Path, tmp: Path, *args: str) -> tuple[Serve, Path, Path]:
    """serve with its metrics folder and its private state folder where the test
    can look into them: (serve, metrics folder, scratch TMPDIR holding the state)."""
    metrics, scratch = tmp / "metrics", tmp / "scratch"
    metrics.mkdir()
    scratch.mkdir()
    serve = Serve(agents, *args, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics), "TMPDIR": str(scratch)})
    return serve, metrics, scratch


def _journal(scratch: Path) -> Path:
    (state,) = [p for p in scratch.glob("voice-runtime-*") if (p / "agents").is_dir()]
    return state / "tool_calls"


def _settled(serve: Serve) -> None:
    """No call running: every job process has ended and serve has seen it (a process
    leaves livekit's list of jobs only after its exit was announced). Read on
    /metrics: /status would prune the journal, which this file checks serve does."""
    serve.wait_for(lambda: serve.metric(SESSIONS_ACTIVE) == 0.0, timeout=120, message="no call running")


def _ended_files(metrics: Path, serve: Serve) -> list[str]:
    """The value files of serve, of the archive and of every process that has ended: a
    job process alive now (an idle one, prewarmed, holds its gauges) is left out."""
    def owner(name: str) -> str:
        return re.sub(r"^.*_", "", name)[:-3]

    return sorted(p.name for p in metrics.rglob("*.db")
                  if not (owner(p.name).isdigit() and int(owner(p.name)) != serve.proc.pid
                          and psutil.pid_exists(int(owner(p.name)))))


def _call(serve: Serve) -> int:
    code, _ = serve.post("/simulate?wait=1", json.dumps({"agent": "desk", "turns": ["echo please"]}).encode(),
                         timeout=180)
    return code


def test_forty_five_calls_three_at_a_time_are_all_admitted_and_leave_flat_metrics_and_journal_folders_and_rising_totals(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = _desk(agents, tmp_path, fake_openai)
    serve, metrics, scratch = _serve(agents, tmp_path, "--idle-processes", "2")
    with serve:
        serve.wait_ready()
        codes = [_call(serve) for _ in range(3)]
        _settled(serve)
        files_after_3 = _ended_files(metrics, serve)

        totals: list[float] = []
        done = threading.Event()

        def scrape() -> None:  # what Prometheus would see while job processes end
            while not done.is_set():
                value = serve.metric(TOOL_CALLS)
                if value is not None:
                    totals.append(value)
                done.wait(0.05)

        scraper = threading.Thread(target=scrape)
        scraper.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                codes += pool.map(lambda _: _call(serve), range(42))
            _settled(serve)
        finally:
            done.set()
            scraper.join()
        files_after_45 = _ended_files(metrics, serve)
        journal = sorted(p.name for p in _journal(scratch).iterdir())
        archived = (_journal(scratch) / ARCHIVE).read_text().splitlines() if ARCHIVE in journal else []
        final = serve.metric(TOOL_CALLS)

    # an ended call stops counting against the cap of 4 while its process shuts down
    assert 429 not in codes, codes
    ran = len(read_records(record))  # tool calls the MCP server really answered
    # a few calls may fail on a loaded machine (livekit's event-loop watchdog can crash a
    # job process: exit -11); what they leave is folded away like any other
    assert codes.count(200) >= 40 and ran >= codes.count(200), (codes, ran)
    # one file per kind for every ended process together, and serve's own: no file per call
    # (a live job process holds its own until it ends)
    assert files_after_45 == files_after_3, (files_after_3, files_after_45)
    owners = {re.sub(r"^.*_", "", name)[:-3] for name in files_after_45}
    assert owners == {"archive", str(serve.proc.pid)}, files_after_45
    # Prometheus never sees a total go down (a counter reset) while processes are folded away
    assert totals == sorted(totals) and totals, totals
    assert final == ran
    # the journal was pruned with no page view: the ended processes' calls, in one file
    assert journal == [ARCHIVE]
    assert len(archived) == ran


def test_a_sigkilled_jobs_session_leaves_sessions_current_and_its_counts_stay(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    _desk(agents, tmp_path, fake_openai)
    serve, metrics, scratch = _serve(agents, tmp_path)
    with serve:
        serve.wait_ready()
        # the first turn calls the tool; the second would come 60 s later
        code, _ = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["echo please", "later"], "gap_s": 60}).encode())
        assert code == 200
        serve.wait_for(lambda: serve.metric(TOOL_CALLS) == 1.0 and serve.metric(SESSIONS_CURRENT) == 1.0,
                       timeout=120, message="the call in progress, its tool call counted")
        # the job process is the one whose journal holds the call
        (job_file,) = _journal(scratch).glob("[0-9]*.jsonl")
        pid = int(job_file.stem)
        assert pid in {p.pid for p in psutil.Process(serve.proc.pid).children(recursive=True)}
        os.kill(pid, signal.SIGKILL)

        # no process holds a session of desk's now: the series is gone (or 0)
        serve.wait_for(lambda: serve.metric(SESSIONS_CURRENT) in (None, 0.0), timeout=60,
                       message="the killed call no longer counted as a session")
        assert serve.metric(TOOL_CALLS) == 1.0  # what it did before it died still counts
        assert not [p for p in metrics.glob(f"*_{pid}.db")]
        serve.wait_for(lambda: not job_file.exists(), message="its journal folded away")
        assert "echo" in (_journal(scratch) / ARCHIVE).read_text()
