"""Stopping `voice-runtime chat`: one Ctrl-C (or SIGTERM) ends it, whatever stdin is,
and `--json` still ends with the call's report.

The caller's lines were read by asyncio's executor thread, which asyncio.run waits for
at exit: a Ctrl-C at the prompt (or with a pipe kept open) waited for the next line or
EOF, for ever; SIGTERM killed chat with its report unwritten."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fakes.openai_chat import FakeOpenAI
from helpers import CLI, child_env, write
from serve_harness import spec

pytestmark = pytest.mark.timeout(120)


def _chat_then_signal(agents: Path, sig: signal.Signals, *args: str) -> tuple[int, str]:
    """chat with stdin a pipe kept open (as a terminal at its prompt is), one turn, then ``sig``."""
    out = agents.parent / "chat.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen([*CLI, "chat", str(agents), "--agent", "desk", *args], stdin=subprocess.PIPE,
                                stdout=sink, stderr=subprocess.STDOUT, env=child_env(), text=True)
        try:
            assert proc.stdin is not None
            proc.stdin.write("hello\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 60
            while "echo: hello" not in out.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, out.read_text()
                time.sleep(0.1)
            proc.send_signal(sig)
            try:
                rc = proc.wait(timeout=30)  # it waited for ever
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"chat still running 30 s after {sig.name}:\n{out.read_text()}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return rc, out.read_text()


def test_one_ctrl_c_ends_chat_while_it_waits_for_the_next_line(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))

    rc, output = _chat_then_signal(agents, signal.SIGINT)

    assert rc == 130, output
    assert "desk> echo: hello" in output and "Traceback" not in output


def test_sigterm_ends_a_json_chat_with_its_lines_and_the_report_last(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))

    rc, output = _chat_then_signal(agents, signal.SIGTERM, "--json")

    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert rc == 130, output
    assert [e["type"] for e in events][-3:] == ["user", "reply", "report"], output
    report = events[-1]["report"]
    assert report["end_reason"] == "hang_up" and report["end_detail"] == "chat interrupted", report
    assert [t["text"] for t in report["transcript"]] == ["hello", "echo: hello"], report["transcript"]
