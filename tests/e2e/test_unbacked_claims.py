"""A reply that claims an action or a lookup while no tool ran in that turn is an
`unbacked_claim`, shown by `chat` and given to plugins; one after a real tool call
is not. Through the real CLI, the real openai plugin and the fake OpenAI server."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from fakes.openai_chat import FakeOpenAI, text, tool_call
from helpers import CLI, HOOK_RECORDER_PLUGIN, REPO, child_env, run_cli, write
from mcp_servers.harness import read_records, stdio_command
from serve_harness import Serve, spec

def project(tmp_path: Path, record: Path, claims: str = "") -> Path:
    command, args = stdio_command(record=record, name="weather")
    write(tmp_path / "plugins" / "hooks.py", HOOK_RECORDER_PLUGIN)
    write(tmp_path / "agents.d" / "weather.yaml", f"""apiVersion: voice-runtime/v1
instructions: You answer weather questions with the weather tool.
pipeline: {{llm: {{provider: openai, model: gpt-4o-mini}}, text_only: true}}
mcp_servers:
  weather: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}
{claims}""")
    return tmp_path / "agents.d"


def chat(agents: Path, lines: str, fake: FakeOpenAI, hook_log: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "chat", str(agents), "--agent", "weather", *extra], input=lines, capture_output=True, text=True,
        timeout=90, env=child_env({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "x", "HOOK_LOG": str(hook_log)}),
    )


def test_a_claim_without_a_tool_call_is_reported_and_the_same_claim_after_a_real_call_is_not(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    record, hooks = tmp_path / "calls.jsonl", tmp_path / "hooks.jsonl"
    agents = project(tmp_path, record)
    fake_openai.enqueue(text("Sure. I've checked the forecast and emailed it to you."),
                        tool_call("get_weather", {"city": "Paris"}), text("I've checked the forecast: sunny in Paris."))
    result = chat(agents, "send me the forecast\nwhat about Paris?\n", fake_openai, hooks, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    evs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in evs] == ["user", "reply", "unbacked_claim", "user", "tool_call", "tool_result", "reply",
                                        "report"]
    claim = evs[2]
    assert claim["text"] == "Sure. I've checked the forecast and emailed it to you."
    assert claim["claim"] == "I've checked the forecast and emailed it to you."
    assert claim["rule"] == "tool_aware"  # the agent has no email tool, and none ran
    # the tool of the second turn really ran, so its reply is backed
    assert [r["tool"] for r in read_records(record)] == ["get_weather"]
    assert [json.loads(line) for line in hooks.read_text().splitlines()] == [
        {"hook": "unbacked_claim", "agent": "weather", "claim": claim["claim"], "action": "warn"}]
    assert "unbacked claim" not in result.stderr  # chat shows it once, as the event

    # each claim is worded by its kind: a state or a looked-up fact is not "an action"
    fake_openai.enqueue(text("I've booked it."), text("Your parcel is with the courier."),
                        text("Your flight is running late."))
    shown = chat(agents, "book it\nmy parcel?\nmy flight?\n", fake_openai, hooks)
    assert [line for line in shown.stdout.splitlines() if line.startswith("!!")] == [
        "!! [tool_aware] the reply claims an action no tool call backs (no tool of the agent can do this (book)): "
        "I've booked it.",
        "!! [tool_aware] the reply claims a state no tool call backs (no tool ran in this turn): "
        "Your parcel is with the courier.",
        "!! [tool_aware] the reply claims a looked-up fact no tool call backs (no tool ran in this turn): "
        "Your flight is running late."]


def test_retry_asks_the_model_once_more_with_a_note_and_spec_patterns_add_to_the_built_in_ones(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    agents = project(tmp_path, tmp_path / "calls.jsonl",
                     "claims: {action: retry, patterns: ['\\bticket is raised\\b']}\n")
    fake_openai.enqueue(text("Your ticket is raised."), text("Sorry: I have not raised a ticket; I cannot do that."))
    result = chat(agents, "raise a ticket\n", fake_openai, tmp_path / "hooks.jsonl", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    evs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in evs] == ["user", "reply", "reply", "unbacked_claim", "report"], evs
    assert evs[2]["text"] == "Sorry: I have not raised a ticket; I cannot do that."
    retry = fake_openai.chat_requests[1]["messages"]
    assert any("no tool ran in that turn" in str(m.get("content")) for m in retry), retry
    assert len(fake_openai.chat_requests) == 2  # asked once more, not again after an honest answer


JUDGE_SAYS = '{"unsupported": true, "claim": "I have emailed you the forecast."}'


def test_through_serve_a_tool_aware_claim_an_ungrounded_specific_and_the_judge_reach_log_metrics_and_report(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    command, args = stdio_command(record=tmp_path / "calls.jsonl", name="weather")
    write(agents / "desk.yaml", spec("You answer weather questions.", fake_openai.base_url)
          + f"mcp_servers:\n  weather: {json.dumps({'command': command, 'args': args})}\n"
          + "claims:\n  judge:\n    llm: {provider: openai, model: gpt-judge, base_url: "
          + json.dumps(fake_openai.base_url) + ", api_key: sk-test}\n")
    # the judge is another model on the same fake, answering outside the agent's queue
    fake_openai.by_model["gpt-judge"] = lambda request: text(JUDGE_SAYS)
    # turn 1: a real weather call, but no tool of the agent sends email; turn 2: a code no source has
    fake_openai.enqueue(tool_call("get_weather", {"city": "Paris"}),
                        text("It's sunny in Paris, and I've emailed you the forecast."),
                        text("Your forecast reference is WX-4471."))
    with Serve(agents) as serve:
        serve.wait_ready()
        code, answer = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["weather in Paris?", "and a reference?"], "wait": True}).encode(), timeout=120)
        assert code == 200, answer
        report = answer["call_report"]
        assert [(c["rule"], c["claim"], c["token"]) for c in report["unbacked_claims"]] == [
            ("tool_aware", "It's sunny in Paris, and I've emailed you the forecast.", None),
            ("judge", "I have emailed you the forecast.", None),
            ("ungrounded_specific", "Your forecast reference is WX-4471.", "WX-4471"),
            ("judge", "I have emailed you the forecast.", None)]
        assert [v["verdict"] for v in report["claims_verdicts"]] == ["unsupported", "unsupported"]
        for rule, count in (("tool_aware", 1), ("ungrounded_specific", 1), ("judge", 2)):
            serve.wait_for(lambda r=rule, n=count: serve.metric(
                f'voice_runtime_claim_findings_total{{agent="desk",rule="{r}"}}') == n, message=rule)
        assert serve.metric('voice_runtime_claims_judge_verdicts_total{agent="desk",verdict="unsupported"}') == 2
        assert serve.metric('voice_runtime_unbacked_claims_total{agent="desk"}') == 4
        output = serve.output()
    assert "(rule tool_aware: no tool of the agent can do this (send))" in output, output[-3000:]
    assert "ungrounded specific 'WX-4471' (rule ungrounded_specific)" in output
    assert "claims judge: unsupported: I have emailed you the forecast." in output
    # the judge was asked after each reply, with the turn's tool calls; the caller never waited for it
    judged = [r for r in fake_openai.chat_requests if r["model"] == "gpt-judge"]
    assert len(judged) == 2 and "get_weather" in str(judged[0]["messages"])


def test_the_judges_verdict_fails_a_conversation_test_naming_the_rule(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url)
          + "claims:\n  judge:\n    llm: {provider: openai, model: gpt-judge, base_url: "
          + json.dumps(fake_openai.base_url) + ", api_key: sk-test}\n")
    write(agents / "tests" / "desk.yaml", """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: an answer the judge doubts
    script: [{say: "Sunny all week."}]
    turns: [{user: weather?}]
""")
    fake_openai.by_model["gpt-judge"] = lambda request: text('{"unsupported": true, "claim": "Sunny all week."}')
    result = run_cli("test", agents, timeout=120)
    assert result.rc == 1, result.output
    assert "turn 1 'weather?': [judge] the judge finds a claim no tool call backs: Sunny all week. " \
           "(allow_unbacked_claims: true to accept it)" in result.stdout, result.output


def test_a_judge_without_a_model_or_with_an_unknown_key_is_refused_at_file_line_col(agents: Path) -> None:
    base = "apiVersion: voice-runtime/v1\ninstructions: hi\npipeline: {llm: {provider: openai}, text_only: true}\n"
    write(agents / "a.yaml", base + "claims:\n  judge: {timeout_s: 5}\n")
    write(agents / "b.yaml", base + "claims:\n  judge: {llm: {provider: openai}, api_key: sk-leak-123}\n")
    result = run_cli("check", agents)
    assert result.rc == 1, result.output
    assert f"{agents}/a.yaml:5:3: claims.judge.llm: required key is missing" in result.stdout, result.output
    assert f"{agents}/b.yaml:5:36: claims.judge.api_key: unknown key 'api_key'; valid keys: llm, timeout_s" \
        in result.stdout, result.output
    assert "sk-leak-123" not in result.output


def test_a_run_on_claim_is_named_in_500_characters_while_the_event_keeps_the_whole_reply(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    record, hooks = tmp_path / "calls.jsonl", tmp_path / "hooks.jsonl"
    agents = project(tmp_path, record)
    reply = "I've emailed the forecast to you, " + "and a copy to your manager, " * 200 + "as you asked."
    fake_openai.enqueue(text(reply))
    result = chat(agents, "send me the forecast\n", fake_openai, hooks, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    claim = next(e for e in map(json.loads, result.stdout.splitlines()) if e["type"] == "unbacked_claim")
    assert claim["text"] == reply
    # a log line, event or hook call carries 500 characters of the sentence and its length
    assert claim["claim"].startswith("I've emailed the forecast to you, and a copy")
    assert len(claim["claim"]) < 530 and claim["claim"].endswith(" characters)"), claim["claim"]
    assert [json.loads(line)["claim"] for line in hooks.read_text().splitlines()] == [claim["claim"]]


def readme_try_it() -> tuple[str, list[str]]:
    """The README's "Try it without a model" recipe (claims section): its shell lines
    and the output it says they print."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Try it without a model.**"):]
    script = re.search(r"```bash\n(.*?)```", section, re.S)
    assert script is not None, "the README's recipe is missing"
    shown = re.search(r"^```\n(.*?)^```", section[script.end():], re.S | re.M)
    assert shown is not None, "the README does not show the recipe's output"
    return script.group(1), shown.group(1).splitlines()


def test_the_readmes_recipe_for_trying_claims_without_a_model_shows_the_claim_line(tmp_path: Path) -> None:
    script, shown = readme_try_it()
    # the recipe as a user runs it: a shell in an empty folder, `voice-runtime` on PATH, no key
    bin_dir = str(Path(CLI[0]).parent) if len(CLI) == 1 else None
    assert bin_dir is not None, "the voice-runtime script is not installed beside python"
    result = subprocess.run(["bash", "-eu", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=child_env({"PATH": f"{bin_dir}:{os.environ['PATH']}", "OPENAI_API_KEY": None}))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    fail, turn = shown[0].strip(), shown[1].strip()
    assert any(line.startswith(fail.removesuffix("(...)")) for line in lines), lines
    assert turn in lines, lines
    assert "claims an action no tool call backs" in turn
