"""A server's question in a served call (real `serve` subprocess, process and thread executors, the
fake OpenAI at the network boundary, tests/mcp_servers/asks.py): a shared block with
`elicitation: allow` stays warm in serve's pool (lent through its gateway to a job
process), its question reaches the caller whose tool call asked it, and the caller's
answers reach the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_chat import FakeOpenAI, Reply, text, tool_call
from helpers import CLI, REPO, child_env, write
from mcp_servers.harness import read_answers, read_events
from serve_harness import Serve, spec

ASKS = REPO / "tests" / "mcp_servers" / "asks.py"


def desk(request: dict[str, Any]) -> Reply:
    """The model: books on "book please", asks the caller the server's question,
    passes the caller's answer on, and confirms it when the caller says yes to the read-back."""
    last = request["messages"][-1]
    if last["role"] == "tool":
        said = str(last["content"])
        return text("What date, and shall I book it?" if said.startswith("Before it can finish") else f"Done: {said}")
    if "book" in str(last["content"]):
        return tool_call("book", {"city": "Oslo"})
    if last["content"] == "yes":
        return tool_call("answer_server_question", {"answers": {}, "confirmed": True})
    return tool_call("answer_server_question", {"answers": {"date": "2026-12-24", "confirm": True}})


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_an_eliciting_block_stays_warm_in_serve_and_the_callers_answers_reach_the_server(
    executor: str, tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "asks.jsonl"
    write(agents / "desk.yaml", spec("You book trips.", fake_openai.base_url) + (
        f"mcp_servers:\n  asks: {{command: {json.dumps(sys.executable)}, "
        f"args: {json.dumps([str(ASKS), '--record', str(record)])}, elicitation: allow}}\n"))
    fake_openai.script = desk
    with Serve(agents, "--idle-processes", "1", "--executor", executor) as serve:
        serve.wait_ready()
        # warmed by serve before any call: a question finds its caller through the tool call in flight
        serve.wait_for(lambda: read_events(record), message="serve warming the block")
        code, report = serve.post("/simulate?wait=1", json.dumps(
            {"agent": "desk", "turns": ["book please", "the 24th, yes", "yes"]}).encode(), timeout=120)
    assert code == 200, report
    assert [t["reply"] for t in report["turns"]] == [
        "What date, and shall I book it?",
        "So that is: Date of the trip 2026-12-24; Shall I book it? yes; Seats 2. Is that right?",
        'Done: accept: {"confirm": true, "date": "2026-12-24", "seats": 2}']
    # serve's process started it, once, and the call used that connection
    assert [e["ppid"] for e in read_events(record)] == [serve.proc.pid]
    assert read_answers(record) == [{"asked": "book", "action": "accept",
                                     "content": {"date": "2026-12-24", "confirm": True, "seats": 2}}]


def test_typed_chat_prints_the_read_back_and_the_typed_yes_sends_the_answers(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "asks.jsonl"
    write(agents / "desk.yaml", spec("You book trips.", fake_openai.base_url) + (
        f"mcp_servers:\n  asks: {{command: {json.dumps(sys.executable)}, "
        f"args: {json.dumps([str(ASKS), '--record', str(record)])}, elicitation: allow}}\n"))
    fake_openai.script = desk
    typed = "book please\nthe 24th, yes\n"
    result = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk"], input=typed, capture_output=True,
                            text=True, timeout=90, env=child_env())
    assert result.returncode == 0, result.stderr
    assert ("desk> So that is: Date of the trip 2026-12-24; Shall I book it? yes; Seats 2. Is that right?"
            in result.stdout)
    # no yes before the end of input (the caller hung up): the server gets cancel, not the answers
    assert read_answers(record) == [{"asked": "book", "action": "cancel", "content": None}]
    result = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk"], input=typed + "yes\n",
                            capture_output=True, text=True, timeout=90, env=child_env())
    assert result.returncode == 0, result.stderr
    assert 'desk> Done: accept: {"confirm": true, "date": "2026-12-24", "seats": 2}' in result.stdout
    assert read_answers(record)[-1] == {"asked": "book", "action": "accept",
                                        "content": {"date": "2026-12-24", "confirm": True, "seats": 2}}


def test_the_status_page_shows_a_question_waiting_for_the_caller_and_not_once_it_is_answered(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    from fakes.openai_chat import delay

    record = tmp_path / "asks.jsonl"
    write(agents / "desk.yaml", spec("You book trips.", fake_openai.base_url) + (
        f"mcp_servers:\n  asks: {{command: {json.dumps(sys.executable)}, "
        f"args: {json.dumps([str(ASKS), '--record', str(record)])}, elicitation: allow}}\n"))

    def slow_caller(request: dict[str, Any]) -> Reply:
        # the caller takes a while to answer: the model's turn after the question waits
        reply = desk(request)
        last = request["messages"][-1]
        return delay(6, reply) if last["role"] == "user" and "book" not in str(last["content"]) else reply

    fake_openai.script = slow_caller
    with Serve(agents) as serve:
        serve.wait_ready()
        code, _ = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["book please", "the 24th, yes", "yes"]}).encode())
        assert code in (200, 202)
        serve.wait_for(lambda: serve.status()["pending_questions"], message="the pending question on /status")
        [waiting] = serve.status()["pending_questions"]
        assert {k: waiting[k] for k in ("agent", "server", "fields")} == {
            "agent": "desk", "server": "asks", "fields": ["date", "confirm", "seats"]}
        _, page = serve.get("/")
        assert "Server questions waiting for a caller" in page and "date, confirm, seats" in page
        serve.wait_for(lambda: read_answers(record), message="the answer to reach the server")
        serve.wait_for(lambda: not serve.status()["pending_questions"], message="the question gone from /status")
