"""What the runtime says as the agent is no claim of the model: filler lines and a
server's progress lines said while a tool runs (`filler: {say_progress: true}`), and
the runtime's own marker in a truncated result that the model repeats. Through `chat`
with tests/mcp_servers/progress.py and recorder.py; no `!!` line, no unbacked claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fakes.openai_chat import FakeOpenAI, Reply, text, tool_call
from helpers import CLI, REPO, child_env, write
from serve_harness import spec

SERVERS = REPO / "tests" / "mcp_servers"
FILLER = "Looking up booking 88412 and ledger 5531 now."  # specifics no source of the call has
LONG = " ".join(f"row{i}" for i in range(2000))  # truncated at max_result_chars, past what claims read


def _model(request: dict[str, Any]) -> Reply:
    """Calls `work` or `echo` as the caller asks, then repeats the tool's result."""
    for msg in reversed(request.get("messages") or []):
        if msg.get("role") == "tool":
            return text(f"Result: {msg.get('content')}")
        if msg.get("role") == "user":
            if "echo" in str(msg.get("content")):
                return tool_call("echo", {"text": LONG})
            return tool_call("work", {"seconds": 2, "every": 0.2})
    raise AssertionError(request)


def test_filler_and_progress_lines_and_the_truncation_marker_are_never_reported_as_unbacked_claims(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You help.", fake_openai.base_url) + (
        "mcp_servers:\n"
        f"  jobs:\n    command: {sys.executable}\n    args: [{SERVERS / 'progress.py'}]\n"
        "    tools:\n      work: {filler: {after_ms: 100, every_ms: 500, say_progress: true, say: ['"
        + FILLER + "']}}\n"
        f"  notes:\n    command: {sys.executable}\n    args: [{SERVERS / 'recorder.py'}]\n"
        "    max_result_chars: 5000\n"))
    fake_openai.script = _model

    chat = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk"], input="run the job\nnow echo it\n",
                          capture_output=True, text=True, timeout=120, env=child_env())

    assert chat.returncode == 0, chat.stdout + chat.stderr
    said = [line for line in chat.stdout.splitlines() if line.lstrip().startswith("..")]
    assert any("reports: desk> step" in line for line in said), chat.stdout  # progress was said
    assert any(FILLER in line for line in said), chat.stdout  # and the filler line
    assert "showing the first 5000]" in chat.stdout  # the model repeated the marker
    assert "Result: done after" in chat.stdout
    assert "!!" not in chat.stdout, chat.stdout
    assert "unbacked claim" not in chat.stderr and "ungrounded specific" not in chat.stderr, chat.stderr
