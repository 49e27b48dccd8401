"""`voice-runtime call` answering a server's question (tests/mcp_servers/asks.py asks
for a date, a yes/no and a number with a default): on the terminal with `--elicit ask`,
or without anyone with `--elicit accept-defaults` or the default for piped input, decline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import CLI, REPO, child_env, write
from mcp_servers.harness import read_answers

ASKS = REPO / "tests" / "mcp_servers" / "asks.py"


def call(agents: Path, stdin: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "call", str(agents), "--agent", "desk", "book", "--args", '{"city": "Oslo"}',
                           *options], input=stdin, capture_output=True, text=True, timeout=60, env=child_env())


def desk(tmp_path: Path, record: Path) -> Path:
    agents = tmp_path / "agents.d"
    write(agents / "desk.yaml", (
        "apiVersion: voice-runtime/v1\ninstructions: x\n"
        "pipeline: {llm: {provider: openai, api_key: k}, text_only: true}\n"
        f"mcp_servers:\n  asks: {{command: {json.dumps(sys.executable)}, "
        f"args: {json.dumps([str(ASKS), '--record', str(record)])}, elicitation: allow}}\n"))
    return agents


def test_call_asks_on_the_terminal_and_asks_again_for_a_value_that_does_not_parse(tmp_path: Path) -> None:
    record = tmp_path / "asks.jsonl"
    result = call(desk(tmp_path, record), "\n2026-12-24\nmaybe\nyes\n\n", "--elicit", "ask")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'accept: {"confirm": true, "date": "2026-12-24", "seats": 2}'
    assert "? MCP server asks asks: Booking a trip to Oslo. Which date, and shall I book it?" in result.stderr
    assert "Shall I book it?: " in result.stderr and "(say yes or no)" in result.stderr
    declined = call(desk(tmp_path, record), "decline\n", "--elicit", "ask")
    assert declined.stdout.strip() == "decline: null"
    ended = call(desk(tmp_path, record), "\n2026-12-24\n", "--elicit", "ask")  # input ends mid-form
    assert ended.stdout.strip() == "cancel: null"
    assert [a["action"] for a in read_answers(record)] == ["accept", "decline", "cancel"]


def test_call_without_a_terminal_declines_and_accept_defaults_declines_a_form_whose_required_fields_have_none(
    tmp_path: Path
) -> None:
    record = tmp_path / "asks.jsonl"
    agents = desk(tmp_path, record)
    assert call(agents, "").stdout.strip() == "decline: null"
    assert call(agents, "", "--elicit", "accept-defaults").stdout.strip() == "decline: null"
    assert [a["action"] for a in read_answers(record)] == ["decline", "decline"]
