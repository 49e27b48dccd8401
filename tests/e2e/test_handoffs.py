"""Handoffs between YAML agents: `handoffs: [{agent, when, history}]` becomes a tool
`transfer_to_<agent>`; calling it continues the same session as the target agent.

Proved through the real CLI (`chat`, `check`) and a real `serve` subprocess (a
simulated call in a job process): the model is the fake OpenAI server, whose
recorded requests show which instructions, model and history each agent used; the
target's MCP tool is a real server process that records its calls. The served tests
share one serve (``served``, docs/architecture.md "Tests"), each with its own agents."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fakes.openai_chat import FakeOpenAI, text, tool_call, transfer_script
from helpers import CLI, HOOK_RECORDER_PLUGIN, child_env, run_cli, write
from mcp_servers.harness import read_records, stdio_command
from serve_harness import Serve

FRONT = "You are the front desk of Acme."
BILLING = "You are Acme billing. Look refunds up with the weather tool."


def front_and_billing(folder: Path, record: Path, *, history: str = "full", base_url: str | None = None,
                      billing_instructions: str = BILLING) -> Path:
    """front (gpt-4o-mini) hands off to billing (gpt-4.1, a recording MCP server), which can hand back."""
    command, args = stdio_command(record=record, name="weather")
    key = f", base_url: {json.dumps(base_url)}, api_key: sk-test" if base_url else ""
    write(folder / "front.yaml", f"""apiVersion: voice-runtime/v1
instructions: {json.dumps(FRONT)}
pipeline: {{llm: {{provider: openai, model: gpt-4o-mini{key}}}, text_only: true}}
handoffs:
  - {{agent: billing, when: "The caller asks about a bill, a payment or a refund.", history: {history}}}
""")
    write(folder / "billing.yaml", f"""apiVersion: voice-runtime/v1
instructions: {json.dumps(billing_instructions)}
pipeline: {{llm: {{provider: openai, model: gpt-4.1{key}}}, text_only: true}}
mcp_servers:
  weather: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}
handoffs:
  - {{agent: front, when: "The caller's question is not about billing."}}
""")
    return folder


def chat(agents: Path, agent: str, lines: str, fake: FakeOpenAI, *, json_lines: bool = True
         ) -> subprocess.CompletedProcess[str]:
    """``chat`` (``--json``) with a plugin beside the folder recording the hooks to hooks.jsonl."""
    write(agents.parent / "plugins" / "hooks.py", HOOK_RECORDER_PLUGIN)
    return subprocess.run(
        [*CLI, "chat", str(agents), "--agent", agent, *(["--json"] if json_lines else [])], input=lines, capture_output=True, text=True,
        timeout=90, env=child_env({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "x",
                                   "HOOK_LOG": str(agents.parent / "hooks.jsonl")}),
    )


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def system_prompt(request: dict) -> str:
    return " ".join(m["content"] for m in request["messages"] if m["role"] in ("system", "developer"))


def tool_names(request: dict) -> list[str]:
    return sorted(t["function"]["name"] for t in request.get("tools", []))


def test_a_handoff_continues_the_session_as_billing_with_its_instructions_model_tools_and_the_history(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    agents = front_and_billing(tmp_path / "agents.d", record)
    fake_openai.enqueue(tool_call("transfer_to_billing", {}), tool_call("get_weather", {"city": "Paris"}),
                        text("Your refund is on its way."))
    result = chat(agents, "front", "I want a refund for my last bill\n", fake_openai)
    assert result.returncode == 0, result.stdout + result.stderr
    evs = events(result.stdout)
    assert [e["type"] for e in evs] == ["user", "handoff", "tool_call", "tool_result", "reply", "report"], evs
    assert {k: evs[1][k] for k in ("type", "from", "to")} == {"type": "handoff", "from": "front", "to": "billing"}
    first, second = fake_openai.chat_requests[:2]
    # the front desk is offered the transfer tool with `when` as its description
    assert system_prompt(first) == FRONT and first["model"] == "gpt-4o-mini"
    [transfer] = [t["function"] for t in first["tools"] if t["function"]["name"] == "transfer_to_billing"]
    assert transfer["description"] == "The caller asks about a bill, a payment or a refund."
    # the next request is billing's: its instructions, its model, its MCP tools, the caller's words (history: full)
    assert system_prompt(second) == BILLING and second["model"] == "gpt-4.1"
    assert {"get_weather", "transfer_to_front"} <= set(tool_names(second)) and "transfer_to_billing" not in tool_names(second)
    assert [m["content"] for m in second["messages"] if m["role"] == "user"] == ["I want a refund for my last bill"]
    # billing's MCP tool really ran on its server
    assert [(r["tool"], r["args"]) for r in read_records(record)] == [("get_weather", {"city": "Paris"})]
    assert evs[-2] == {"type": "reply", "text": "Your refund is on its way."}
    # the call's report (chat --json's last line) records the handoff
    assert [(h["from"], h["to"]) for h in evs[-1]["report"]["handoffs"]] == [("front", "billing")]
    # plugins hear of it through voice_runtime_session_handoff
    assert [json.loads(line) for line in (tmp_path / "hooks.jsonl").read_text().splitlines()] == [
        {"hook": "handoff", "from_agent": "front", "to_agent": "billing", "history": "full"}]


def test_history_none_gives_billing_only_its_greeting_and_summary_gives_it_the_front_models_summary(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    agents = front_and_billing(tmp_path / "none.d", tmp_path / "none.jsonl", history="none")
    write(agents / "billing.yaml", (agents / "billing.yaml").read_text() + "greeting: Billing here, how can I help?\n")
    fake_openai.enqueue(tool_call("transfer_to_billing", {}), text("Refunded."))
    result = chat(agents, "front", "my card number is 4242, refund me\nplease refund\n", fake_openai)
    assert result.returncode == 0, result.stdout + result.stderr
    # billing's greeting is said on arrival (not asked of its model), then it answers the next turn
    assert [e["text"] for e in events(result.stdout) if e["type"] == "reply"] == [
        "Billing here, how can I help?", "Refunded."]
    billing = fake_openai.chat_requests[1]
    assert system_prompt(billing) == BILLING and len(fake_openai.chat_requests) == 2
    assert [(m["role"], m["content"]) for m in billing["messages"][1:]] == [
        ("assistant", "Billing here, how can I help?"), ("user", "please refund")]

    agents = front_and_billing(tmp_path / "summary.d", tmp_path / "summary.jsonl", history="summary")
    fake_openai.requests.clear()
    fake_openai.enqueue(tool_call("transfer_to_billing", {}), text("The caller wants a refund of order 7."),
                        text("Billing here."))
    result = chat(agents, "front", "refund order 7 please\n", fake_openai)
    assert result.returncode == 0, result.stdout + result.stderr
    transfer, summary, billing = fake_openai.chat_requests[:3]
    assert summary["model"] == "gpt-4o-mini" and "Summarize the conversation" in json.dumps(summary["messages"])
    assert system_prompt(billing) == BILLING and billing["model"] == "gpt-4.1"
    said = [m["content"] for m in billing["messages"] if m["role"] != "system"]
    assert said == ["Summary of the conversation so far: The caller wants a refund of order 7."], said


def test_check_names_a_missing_or_self_handoff_target_at_its_position_and_shows_handoffs(tmp_path: Path) -> None:
    agents = front_and_billing(tmp_path / "agents.d", tmp_path / "calls.jsonl")
    ok = run_cli("check", agents, "--offline")
    assert ok.rc == 0, ok.output
    header, *rows = ok.stdout.splitlines()[:3]
    assert "HANDOFFS" in header.split()
    assert any(r.startswith("front") and " billing " in f" {r} " for r in rows), ok.stdout
    tools = run_cli("tools", agents, "--agent", "front")
    assert tools.stdout.splitlines()[1].split()[:3] == ["transfer_to_billing", "handoff:billing", "billing"], tools.output
    write(agents / "front.yaml", (agents / "front.yaml").read_text().replace("agent: billing", "agent: biling")
          + "  - {agent: front, when: never}\n")
    bad = run_cli("check", agents, "--offline")
    assert bad.rc == 1
    assert f"{agents}/front.yaml:5:6: handoffs[0].agent: no valid agent named 'biling' in this folder; " \
           "available: billing" in bad.stdout, bad.stdout
    assert f"{agents}/front.yaml:6:6: handoffs[1].agent: an agent cannot hand off to itself" in bad.stdout


def test_a_served_call_hands_off_in_its_job_and_keeps_the_generation_it_started_with(
    tmp_path: Path, served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve, agents = served, served.agents
    record = tmp_path / "calls.jsonl"
    front_and_billing(agents, record, base_url=fake_openai.base_url)
    serve.wait_agent("front")
    serve.wait_agent("billing")

    def sessions() -> dict[str, int]:  # this test's agents' calls (the shared serve has its resident too)
        return {a["name"]: a["sessions_current"] for a in serve.status()["agents"] if a["name"] in ("front", "billing")}

    # turn 1 answered by the front desk; between the turns billing's spec is edited
    fake_openai.enqueue(text("Hello, front desk."), tool_call("transfer_to_billing", {}),
                        tool_call("get_weather", {"city": "Oslo"}), text("Refund done."),
                        text("I've emailed you the receipt."))
    body = json.dumps({"agent": "front", "turns": ["hi", "refund please", "thanks"], "gap_s": 3, "wait": True})
    import threading

    answer: dict = {}
    call = threading.Thread(target=lambda: answer.update(report=serve.post("/simulate", body.encode(),
                                                                           timeout=120)))
    call.start()
    serve.wait_for(lambda: len(fake_openai.chat_requests) >= 1, message="turn 1")
    generation = serve.status()["generation"]
    front_and_billing(agents, record, base_url=fake_openai.base_url, billing_instructions="BILLING V2")
    serve.wait_for(lambda: serve.status()["generation"] > generation, message="billing v2 accepted")
    assert len(fake_openai.chat_requests) == 1, "billing v2 must be served before turn 2 hands off"
    # /status counts the call under the agent it talks as now
    serve.wait_for(lambda: sessions() == {"billing": 1, "front": 0}, message="the call counted under billing")
    call.join(120)
    code, report = answer["report"]
    assert code == 200 and report["ok"], report
    assert [t["reply"] for t in report["turns"]] == ["Hello, front desk.", "Refund done.",
                                                     "I've emailed you the receipt."]
    assert [(c["server"], c["tool"]) for c in report["turns"][1]["tool_calls"]] == [("weather", "get_weather")]
    # the call started on generation 1 and kept billing's generation-1 instructions after the edit
    billing_requests = [r for r in fake_openai.chat_requests if r["model"] == "gpt-4.1"]
    assert billing_requests and {system_prompt(r) for r in billing_requests} == {BILLING}
    assert [(r["tool"], r["args"]) for r in read_records(record)] == [("get_weather", {"city": "Oslo"})]
    # the next call hands off to the new billing
    fake_openai.enqueue(tool_call("transfer_to_billing", {}), text("V2 here."))
    code, report = serve.post("/simulate?wait=1", b'{"agent": "front", "turns": ["a bill question"]}',
                              timeout=120)
    assert code == 200 and report["turns"][0]["reply"] == "V2 here.", report
    assert system_prompt(fake_openai.chat_requests[-1]) == "BILLING V2"
    assert serve.metric('voice_runtime_handoffs_total{from="front",to="billing"}') == 2.0
    # turn 3's receipt was never sent by any tool: a WARNING and a metric, under the agent that said it
    assert serve.metric('voice_runtime_unbacked_claims_total{agent="billing"}') == 1.0
    assert "WARNING" in next(line for line in serve.output().splitlines() if "unbacked claim" in line)
    assert sessions() == {"billing": 0, "front": 0}


def test_a_handoff_to_a_realtime_agent_continues_on_its_realtime_model_with_the_history(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    from fakes.openai_realtime import FakeRealtime

    realtime = FakeRealtime()
    realtime.start_in_thread()
    try:
        agents = front_and_billing(tmp_path / "agents.d", tmp_path / "calls.jsonl")
        write(agents / "billing.yaml", f"""apiVersion: voice-runtime/v1
instructions: {json.dumps(BILLING)}
realtime: {{provider: openai, model: gpt-realtime, base_url: {json.dumps(realtime.base_url)}, api_key: sk-test}}
""")
        fake_openai.enqueue(tool_call("transfer_to_billing", {}))
        realtime.enqueue(text("Realtime billing here."), text("Still realtime."))
        result = chat(agents, "front", "a refund please\nand then?\n", fake_openai, json_lines=False)
        assert result.returncode == 0, result.stdout + result.stderr
        # as a person reads it: the handoff line, then the new agent's name on its replies
        assert result.stdout.splitlines() == [
            "you> a refund please", "-> handoff front -> billing", "billing> Realtime billing here.",
            "you> and then?", "billing> Still realtime."]
        assert len(fake_openai.chat_requests) == 1  # after the handoff the chat model is asked nothing
        assert realtime.session_config["instructions"] == BILLING
        said = [c.get("text") for item in realtime.conversation for c in item.get("content", [])]
        assert "a refund please" in said and "and then?" in said  # the history reached the realtime model
    finally:
        realtime.stop_thread()


def ping_and_pong(folder: Path, *, limit: int | None = None, base_url: str | None = None) -> Path:
    """Two agents that hand off to each other; with ``transfer_script`` their models always do."""
    key = f", base_url: {json.dumps(base_url)}, api_key: sk-test" if base_url else ""
    bound = "" if limit is None else f"max_handoffs_per_turn: {limit}\n"
    for name, other, model in (("ping", "pong", "gpt-4o-mini"), ("pong", "ping", "gpt-4.1")):
        write(folder / f"{name}.yaml", f"""apiVersion: voice-runtime/v1
instructions: You are {name}.
pipeline: {{llm: {{provider: openai, model: {model}{key}}}, text_only: true}}
handoffs:
  - {{agent: {other}, when: Always.}}
{bound}""")
    return folder


def transfers_offered(request: dict) -> list[str]:
    return [n for n in tool_names(request) if n.startswith("transfer_to_")]


def test_two_agents_that_always_transfer_hand_a_chat_turn_over_three_times_then_the_current_one_answers(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    agents = ping_and_pong(tmp_path / "agents.d")
    fake_openai.script = transfer_script
    result = chat(agents, "ping", "hello\nagain\n", fake_openai)
    assert result.returncode == 0, result.stdout + result.stderr
    # the claims check reads the fake's "gpt-4.1 answers" as a code no source gave: not what this test is about
    evs = [{k: v for k, v in e.items() if k in ("type", "from", "to", "text", "reason")} for e in events(result.stdout)
           if e["type"] not in ("report", "unbacked_claim")]
    handoff = [{"type": "handoff", "from": a, "to": b} for a, b in (("ping", "pong"), ("pong", "ping"))]
    assert evs == [
        {"type": "user", "text": "hello"}, handoff[0], handoff[1], handoff[0],
        {"type": "handoff_refused", "from": "pong", "to": "ping", "reason": "limit"},
        {"type": "reply", "text": "gpt-4.1 answers: hello"},
        # the next caller turn starts a new count, and pong may transfer again
        {"type": "user", "text": "again"}, handoff[1], handoff[0], handoff[1],
        {"type": "handoff_refused", "from": "ping", "to": "pong", "reason": "limit"},
        {"type": "reply", "text": "gpt-4o-mini answers: again"},
    ], evs
    # per turn: 3 handoffs and 5 requests at the model (4 that transferred, one answer without the tools)
    requests = fake_openai.chat_requests
    assert [transfers_offered(r) for r in requests] == [
        ["transfer_to_pong"], ["transfer_to_ping"], ["transfer_to_pong"], ["transfer_to_ping"], [],
        ["transfer_to_ping"], ["transfer_to_pong"], ["transfer_to_ping"], ["transfer_to_pong"], []]
    refusal = [m for m in requests[4]["messages"] if m["role"] == "tool"][-1]["content"]
    assert "answer the caller yourself" in refusal, refusal
    # as a person reads it
    text_run = chat(agents, "ping", "hello\n", fake_openai, json_lines=False)
    assert text_run.returncode == 0, text_run.stdout + text_run.stderr
    assert [line for line in text_run.stdout.splitlines() if not line.startswith("!! [")][-2:] == [
        "!! handoff pong -> ping refused: 3 handoffs in this turn already (max_handoffs_per_turn); pong answers",
        "pong> gpt-4.1 answers: hello"], text_run.stdout


def test_a_served_call_between_agents_that_always_transfer_stops_at_max_handoffs_per_turn_and_answers(
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    serve = served
    ping_and_pong(serve.agents, limit=1, base_url=fake_openai.base_url)
    fake_openai.script = transfer_script
    serve.wait_agent("ping")
    serve.wait_agent("pong")
    code, report = serve.post("/simulate?wait=1", b'{"agent": "ping", "turns": ["hello"]}', timeout=120)
    assert code == 200 and report["ok"], report
    assert report["turns"][0]["reply"] == "gpt-4.1 answers: hello", report
    # one handoff, then pong's transfer refused: 3 requests (ping, pong refused, pong's answer)
    assert [transfers_offered(r) for r in fake_openai.chat_requests] == [
        ["transfer_to_pong"], ["transfer_to_ping"], []]
    assert serve.metric('voice_runtime_handoffs_total{from="ping",to="pong"}') == 1.0
    assert serve.metric('voice_runtime_handoffs_total{from="pong",to="ping"}') is None
    assert serve.metric('voice_runtime_handoffs_refused_total{agent="pong",reason="limit"}') == 1.0
    warning = next(line for line in serve.output().splitlines() if "handoff to ping refused" in line)
    assert "WARNING" in warning and "max_handoffs_per_turn: 1" in warning, warning


def test_check_names_a_max_handoffs_per_turn_outside_1_to_20_at_its_position(tmp_path: Path) -> None:
    agents = ping_and_pong(tmp_path / "agents.d", limit=0)
    bad = run_cli("check", agents, "--offline")
    assert bad.rc == 1, bad.output
    assert f"{agents}/ping.yaml:6:24: max_handoffs_per_turn: input should be greater than or equal to 1" \
        in bad.stdout, bad.stdout
