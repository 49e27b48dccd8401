"""What a failed tool call leaves behind, from one real `serve` (process executor)
whose simulated call makes a real MCP server (tests/mcp_servers/errors.py) fail in
every way it can while quoting the card number it was given: a tool error, one full
of terminal escapes, a huge one, a JSON-RPC error, a huge one, a timeout, the
server's death; through serve's shared connection and through a job's own
(``shared: false``). The model is told what went wrong in a sentence that may quote
the server; the journal, /status, the status page, /metrics, serve's log and the
exported spans hold a fixed description and never the card. And what a model is
given for resource links and embedded resources (tests/mcp_servers/resources.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_chat import FakeOpenAI, text, tool_call
from fakes.otlp import FakeOtlp
from helpers import write
from serve_harness import Serve, spec

SERVERS = Path(__file__).resolve().parents[1] / "mcp_servers"
CARD = "4000056655665556"
# turn -> the tool the model calls and its arguments
TURNS: dict[str, tuple[str, dict[str, Any]]] = {
    **{f"pay {how}": ("charge", {"card": CARD, "how": how})
       for how in ("is_error", "hostile", "huge", "rpc", "huge_rpc", "code", "hang")},
    **{f"own {how}": ("own_charge", {"card": CARD, "how": how}) for how in ("is_error", "rpc")},
    "report": ("find_report", {"quarter": "Q3"}),
    "big": ("read_big", {"size": 5000}),
    "passwd": ("read_text", {"path": "/etc/passwd"}),
    "pay die": ("charge", {"card": CARD, "how": "die"}),  # last: the server is gone after it
}
# what a call record may say of a failure: our words, never the server's
FIXED = {"tool error", "JSON-RPC error -32602", "JSON-RPC error (a code of the server's own)", "no answer within 2s",
         "server down"}


def _script(request: dict[str, Any]) -> Any:
    """The model calls the turn's tool; once it has the tool's output it says
    something that does not repeat it (serve logs a simulated turn's reply)."""
    for message in reversed(request["messages"]):
        if message["role"] == "tool":
            return text("Sorry, that did not work.")
        if message["role"] == "user":
            return tool_call(*TURNS[message["content"]])
    raise AssertionError(request)


@dataclass(frozen=True)
class Outcome:
    told: dict[str, str]  # turn -> what the model received as the tool's output
    report: dict[str, Any]  # /simulate?wait=1's answer
    outlets: dict[str, str]  # where the card must not be -> its text
    status: dict[str, Any]
    otlp: FakeOtlp


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    tmp = tmp_path_factory.mktemp("toolerrors")
    agents = tmp / "agents.d"
    python = json.dumps(sys.executable)
    fake = FakeOpenAI(_script)
    fake.start_in_thread()
    try:
        write(agents / "desk.yaml", spec("You take payments.", fake.base_url) + (
            "mcp_servers:\n"
            f"  pay: {{command: {python}, args: [{json.dumps(str(SERVERS / 'errors.py'))}], timeout: 2}}\n"
            f"  own: {{command: {python}, args: [{json.dumps(str(SERVERS / 'errors.py'))}], shared: false,"
            " prefix: own}\n"
            f"  files: {{command: {python}, args: [{json.dumps(str(SERVERS / 'resources.py'))}],"
            " max_result_chars: 300}\n"))
        state = tmp / "state"
        state.mkdir()
        with FakeOtlp() as otlp:
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200", "TMPDIR": str(state)}
            with Serve(agents, "--log-format", "json", env=env) as serve:
                serve.wait_ready()
                body = json.dumps({"agent": "desk", "turns": list(TURNS)}).encode()
                code, report = serve.post("/simulate?wait=1", body, timeout=240)
                assert code == 200, report
                serve.wait_for(lambda: len(otlp.named("mcp.tool_call")) == len(TURNS), timeout=60,
                               message="every call's span exported")
                serve.wait_for(lambda: len(serve.status()["tool_calls"]) == len(TURNS), message="every call journaled")
                told: dict[str, str] = {}
                for request in fake.chat_requests:
                    messages = request["messages"]
                    if messages[-1]["role"] == "tool":
                        user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
                        told[user] = messages[-1]["content"]
                status_text = serve.get("/status")[1]
                outlets = {
                    "journal": "".join(p.read_text() for p in state.glob("*/tool_calls/*.jsonl")),
                    "/status": status_text, "status page": serve.get("/")[1], "/metrics": serve.get("/metrics")[1],
                }
                serve.stop()
                outlets["serve's log"] = serve.output()
                outlets["spans"] = repr(otlp.spans)
                assert outlets["journal"], list(state.rglob("*"))  # this test can fail
                yield Outcome(told, report, outlets, json.loads(status_text), otlp)
    finally:
        fake.stop_thread()


def test_a_failed_tool_calls_server_text_reaches_the_model_as_a_sentence(outcome: Outcome) -> None:
    told = outcome.told
    declined = f"Error executing tool charge: card {CARD} was declined"
    assert told["pay is_error"] == f"the pay tool charge failed: {declined}"
    assert told["own is_error"] == f"the own tool charge failed: {declined}"
    assert told["pay hostile"] == ("the pay tool charge failed: Error executing tool charge: "
                                   f"\x1b[2J\x1b]0;owned\x07card {CARD}\nwas\r\ndeclined\u202e by the bank")
    rpc = f"could not run (error -32602, invalid params): invalid card {CARD}"
    assert told["pay rpc"] == f"the pay tool charge {rpc}"
    assert told["own rpc"] == f"the own tool charge {rpc}"
    # a huge error is told bounded, with how much there was
    assert told["pay huge"].startswith(f"the pay tool charge failed: {declined} xxx")
    assert told["pay huge"].endswith("showing the first 1000]") and len(told["pay huge"]) < 1200
    assert told["pay huge_rpc"].startswith(f"the pay tool charge {rpc} yyy")
    assert told["pay huge_rpc"].endswith(
        "[result truncated: 1000030 characters, showing the first 1000]") and len(told["pay huge_rpc"]) < 1200
    assert told["pay hang"] == "the pay service did not answer in time"
    assert told["pay die"] == "the pay service is not available right now"


def test_a_failed_tool_calls_text_and_arguments_are_in_no_record_log_status_metric_or_span(outcome: Outcome) -> None:
    assert {where for where, content in outcome.outlets.items() if CARD in content} == set()
    # what they say instead: an outcome and a description of our own
    calls = {(c["server"], c["outcome"], c["error"]) for c in outcome.status["tool_calls"]}
    assert calls == {
        ("pay", "error", "tool error"), ("own", "error", "tool error"), ("pay", "error", "JSON-RPC error -32602"),
        ("own", "error", "JSON-RPC error -32602"), ("pay", "error", "JSON-RPC error (a code of the server's own)"),
        ("pay", "timeout", "no answer within 2s"),
        ("pay", "unavailable", "server down"), ("files", "ok", None)}
    spans = outcome.otlp.named("mcp.tool_call")
    assert {s.status_message for s in spans} == FIXED | {""}
    assert {s.attributes["voice_runtime.tool.outcome"] for s in spans} == {"ok", "error", "timeout", "unavailable"}
    # the log line of each failed call says the same
    lines = [json.loads(x) for x in outcome.outlets["serve's log"].splitlines() if '"tool_call"' in x]
    assert {line["tool_call"]["error"] for line in lines} == FIXED | {None}


def test_a_json_rpc_code_or_server_stderr_holding_the_arguments_reaches_only_the_model(outcome: Outcome) -> None:
    # a code outside JSON-RPC's reserved range is the server's to choose: a number that can carry an argument
    assert outcome.told["pay code"] == f"the pay tool charge could not run (error {CARD}, server error): declined"
    assert [c["error"] for c in outcome.status["tool_calls"] if (c["error"] or "").startswith("JSON-RPC error (")] == [
        "JSON-RPC error (a code of the server's own)"]
    # the server wrote the card to stderr as it died: serve's log says why it is not quoted
    log = outcome.outlets["serve's log"]
    assert ("MCP server pay went down: MCPError: Connection closed (server stderr: not quoted once a tool call was "
            "sent, as it may echo the call's arguments)") in log, log[-3000:]
    assert CARD not in log


def test_a_resource_link_reaches_the_model_as_its_name_uri_and_description_and_a_resource_as_its_text(
    outcome: Outcome,
) -> None:
    told = outcome.told
    assert told["report"] == ('[resource link: Q3-report.pdf "Report for Q3" <https://files.example.com/reports/Q3.pdf>'
                              " (application/pdf, 48213 bytes): The figures of Q3, audited]")
    assert told["passwd"] == "root:x:0:0:root:/root:/bin/bash"
    # an embedded resource's text is bounded by the server's max_result_chars
    assert told["big"] == "r" * 300 + "\n[result truncated: 5000 characters, showing the first 300]"


