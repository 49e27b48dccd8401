"""`voice-runtime test`: conversation tests as files, run through the real CLI, and
`serve --require-tests` refusing a reload whose scripted case fails.

Cases here are scripted (the scripted model replaces the LLM) so no fake model is
needed; tools are a real recording MCP server, which shows whether a mocked tool
stayed away from it."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from fakes.openai_chat import FakeOpenAI, text
from helpers import REPO, run_cli, write
from mcp_servers.harness import read_records, stdio_command
from serve_harness import Serve, spec
from voice_runtime.session.call_report import REPORT_FIELDS

DESK = """apiVersion: voice-runtime/v1
instructions: You are the desk.
pipeline: {{llm: {{provider: openai, model: gpt-4o-mini, api_key: sk-test{base}}}, text_only: true}}
mcp_servers:
  tools: {{command: {command}, args: {args}}}
"""

CASES = """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: echoes through the real server
    script:
      - tool_call: echo
        arguments: {text: hello}
      - say: "The server said hello."
    turns:
      - user: say hello
        expect:
          - tool_call: echo
            arguments: {text: hello}
          - reply_contains: HELLO
  - name: the weather is mocked and wrong
    script:
      - tool_call: get_weather
        arguments: {city: Paris}
      - say: "It is raining in Paris."
    mocks:
      get_weather: "raining in Paris"
    turns:
      - user: weather in Paris?
        expect:
          - tool_call: get_weather
          - reply_matches: "sunny|clear"
"""


def desk(agents: Path, record: Path, base_url: str | None = None) -> None:
    command, args = stdio_command(record=record, name="tools")
    base = f", base_url: {json.dumps(base_url)}" if base_url else ""
    write(agents / "desk.yaml", DESK.format(command=json.dumps(command), args=json.dumps(args), base=base))


def test_a_passing_and_a_failing_case_exit_1_with_expected_and_actual_and_junit_with_one_failure(
    tmp_path: Path, agents: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    desk(agents, record)
    write(agents / "tests" / "desk.yaml", CASES)
    junit = tmp_path / "junit.xml"
    result = run_cli("test", agents, "--junit", junit, env={"OPENAI_API_KEY": None}, timeout=120)
    assert result.rc == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{agents}/tests/desk.yaml (desk)"
    assert lines[1].startswith("  PASS echoes through the real server (")
    assert lines[2].startswith("  FAIL the weather is mocked and wrong (")
    assert lines[3].strip() == "turn 1 'weather in Paris?': expected the reply to match 'sunny|clear'"
    assert lines[4].strip() == "turn 1: actual: reply 'It is raining in Paris.'; tool calls: get_weather {\"city\": \"Paris\"}"
    assert lines[-1] == "2 cases: 1 passed, 1 failed, 0 skipped"
    # the real tool reached the server; the mocked one never did
    assert [(r["tool"], r["args"]) for r in read_records(record)] == [("echo", {"text": "hello"})]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "1", "0")
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["the weather is mocked and wrong"]
    assert "expected the reply to match" in failed[0].find("failure").get("message")


def test_an_invalid_test_file_exits_2_with_every_error_at_file_line_col(tmp_path: Path, agents: Path) -> None:
    desk(agents, tmp_path / "calls.jsonl")
    write(agents / "tests" / "bad.yaml", """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: typo
    turns:
      - user: hi
        expect: [{reply_contain: x}, {tool_call: a, no_tool_call: true}]
    expect: {report: {end_reason: hang_up, outcome: passed}}
""")
    write(agents / "tests" / "nobody.yaml", "apiVersion: voice-runtime/v1\nagent: nobody\ncases: [{name: x, turns: [{user: hi}]}]\n")
    result = run_cli("test", agents, timeout=60)
    assert result.rc == 2, result.output
    assert result.stderr.splitlines() == [
        f"{agents}/tests/bad.yaml:7:19: cases[0].turns[0].expect[0].reply_contain: unknown key 'reply_contain'; "
        "did you mean 'reply_contains'?",
        f"{agents}/tests/bad.yaml:7:38: cases[0].turns[0].expect[1]: an expectation has exactly one of tool_call, "
        "no_tool_call, reply_contains, reply_matches, handoff_to, judge; this one has tool_call, no_tool_call",
        f"{agents}/tests/bad.yaml:8:14: cases[0].expect.report: a call report has no outcome; its keys: "
        + ", ".join(REPORT_FIELDS),
        f"{agents}/tests/nobody.yaml:2:8: agent: no valid agent named 'nobody'; available: desk",
        "found 4 errors in 2 test files",
    ]
    assert run_cli("test", agents, "--agent", "nobody").rc == 2


def test_a_folder_without_tests_says_so_and_where_tests_are_read_from_with_no_made_up_position(agents: Path) -> None:
    write(agents / "desk.yaml", "apiVersion: voice-runtime/v1\ninstructions: hi\n"
          "pipeline: {llm: {provider: openai, model: gpt-4o-mini}, text_only: true}\n")
    result = run_cli("test", agents)
    assert result.rc == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: no tests/ folder beside the specs in {agents}: conversation tests are read from "
        f"{agents}/tests/*.yaml (or give --tests FILE_OR_FOLDER)"]
    result = run_cli("test", agents, "--tests", agents / "missing.yaml")
    assert result.rc == 2, result.output
    assert result.stderr.splitlines() == [f"error: --tests {agents}/missing.yaml: no such file or folder"]


def test_a_case_needing_a_real_model_without_its_key_is_skipped_with_the_reason_never_passed(
    tmp_path: Path, agents: Path
) -> None:
    write(agents / "desk.yaml", "apiVersion: voice-runtime/v1\ninstructions: hi\n"
          "pipeline: {llm: {provider: openai, model: gpt-4o-mini}, text_only: true}\n")
    write(agents / "tests" / "judge.yaml", """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: polite
    script: [{say: "Hello, how can I help?"}]
    turns:
      - user: hi
        expect: [{judge: greets the caller politely}]
""")
    result = run_cli("test", agents, env={"OPENAI_API_KEY": None}, timeout=60)
    assert result.rc == 0, result.output
    assert "  SKIP polite: a judge needs the spec's real model: pipeline.llm (openai) has no API key: " \
           "set OPENAI_API_KEY or api_key:" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 case: 0 passed, 0 failed, 1 skipped"
    as_json = json.loads(run_cli("test", agents, "--format", "json", env={"OPENAI_API_KEY": None}).stdout)
    assert as_json["ok"] is True and as_json["summary"] == {"passed": 0, "failed": 0, "skipped": 1}
    [case] = as_json["cases"]
    assert (case["name"], case["outcome"], case["where"]) == ("polite", "skipped", f"{agents}/tests/judge.yaml:4:5")
    assert case["skip_reason"].startswith("a judge needs the spec's real model")


def test_the_example_test_file_passes_against_agents_d_as_shipped(tmp_path: Path) -> None:
    shutil.copytree(REPO / "agents.d", tmp_path / "agents.d")
    shutil.copytree(REPO / "plugins", tmp_path / "plugins")
    result = run_cli("test", tmp_path / "agents.d", "--agent", "support", env={"OPENAI_API_KEY": None}, timeout=120)
    assert result.rc == 0, result.output
    assert "  PASS tells the time in Paris (" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 case: 1 passed, 0 failed, 0 skipped"


def test_require_tests_refuses_a_reload_whose_scripted_case_fails_and_the_last_good_keeps_serving(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    handoff = "handoffs: [{agent: billing, when: The caller asks about a bill.}]\n"
    write(agents / "desk.yaml", spec("You are the desk v1.", fake_openai.base_url) + handoff)
    write(agents / "billing.yaml", spec("You are billing.", fake_openai.base_url))
    write(agents / "tests" / "desk.yaml", """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: hands bills to billing
    script: [{tool_call: transfer_to_billing}, {say: "Billing here."}]
    turns:
      - user: a question about my bill
        expect: [{handoff_to: billing}, {reply_contains: billing}]
""")
    with Serve(agents, "--require-tests", "--scan-interval", "0") as serve:
        serve.wait_ready()
        assert serve.agent("desk")["generation"] == 1
        # an edit that drops the handoff: the scripted case can no longer transfer
        write(agents / "desk.yaml", spec("You are the desk v2.", fake_openai.base_url))
        serve.wait_for(lambda: (serve.status()["last_reload"] or {}).get("outcome") == "rejected",
                       message="the reload rejected")
        [error] = serve.status()["last_reload"]["errors"]
        assert error["file"] == str(agents / "desk.yaml")
        assert error["message"].startswith(
            f"conversation test 'hands bills to billing' failed ({agents}/tests/desk.yaml:4:5): "
            "turn 1 'a question about my bill': expected a handoff to billing"), error
        assert serve.metric("voice_runtime_config_last_reload_successful") == 0
        assert serve.metric('voice_runtime_config_reloads_total{result="failure"}') == 1
        assert "conversation test 'hands bills to billing' failed" in serve.output()
        # the last good version keeps serving: a call gets v1's instructions
        fake_openai.enqueue(text("v1 answers"))
        code, report = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["hello?"]}', timeout=120)
        assert code == 200 and report["generation"] == 1, report
        assert fake_openai.chat_requests[-1]["messages"][0]["content"] == "You are the desk v1."
        # an edit that keeps the handoff passes and is served
        write(agents / "desk.yaml", spec("You are the desk v3.", fake_openai.base_url) + handoff)
        serve.wait_for(lambda: serve.agent("desk")["generation"] > 1, message="v3 applied")
        assert serve.status()["last_reload"]["outcome"] == "applied"


def test_a_turn_with_an_unbacked_claim_fails_unless_the_case_allows_it(agents: Path) -> None:
    write(agents / "desk.yaml", "apiVersion: voice-runtime/v1\ninstructions: hi\n"
          "pipeline: {llm: {provider: openai, model: gpt-4o-mini}, text_only: true}\n")
    write(agents / "tests" / "claims.yaml", """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: claims without a call
    script: [{say: "Done. I've emailed you the invoice."}]
    turns: [{user: send me my invoice, expect: [{no_tool_call: true}]}]
  - name: allowed to claim
    allow_unbacked_claims: true
    script: [{say: "Done. I've emailed you the invoice."}]
    turns: [{user: send me my invoice, expect: [{no_tool_call: true}]}]
""")
    result = run_cli("test", agents, env={"OPENAI_API_KEY": None}, timeout=60)
    assert result.rc == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith("  FAIL claims without a call (")
    assert lines[2].strip() == ("turn 1 'send me my invoice': [tool_aware] the reply claims a state no tool call "
                                "backs (no tool ran in this turn): Done. (allow_unbacked_claims: true to accept it)")
    # "Done." claims the act is complete: a state, worded as chat words it
    assert any(line.startswith("  PASS allowed to claim (") for line in lines)


def test_a_judge_runs_on_the_specs_own_model_and_its_verdict_passes_or_fails_the_case(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    from fakes.openai_chat import tool_call

    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    write(agents / "tests" / "judged.yaml", """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: polite
    script: [{say: "Good morning, how can I help you?"}]
    turns: [{user: hi, expect: [{judge: greets the caller politely}]}]
  - name: rude
    script: [{say: "What do you want."}]
    turns: [{user: hi, expect: [{judge: greets the caller politely}]}]
""")
    fake_openai.enqueue(tool_call("check_intent", {"success": True, "reason": "a polite greeting"}),
                        tool_call("check_intent", {"success": False, "reason": "curt, no greeting"}))
    result = run_cli("test", agents, timeout=60)
    assert result.rc == 1, result.output
    assert "  PASS polite (" in result.stdout
    assert "the judge found the reply does not fulfil 'greets the caller politely'" in result.stdout
    assert "curt, no greeting" in result.stdout
    # the judge asked the spec's model, about the scripted replies
    judged = [json.dumps(r["messages"]) for r in fake_openai.chat_requests]
    assert len(judged) == 2 and "Good morning" in judged[0] and "What do you want" in judged[1]


def test_a_mocked_tool_answers_even_when_its_server_is_down(agents: Path) -> None:
    write(agents / "desk.yaml", "apiVersion: voice-runtime/v1\ninstructions: hi\n"
          "pipeline: {llm: {provider: openai, model: gpt-4o-mini}, text_only: true}\n"
          "mcp_servers:\n  weather: {url: 'http://127.0.0.1:9/mcp', connect_timeout: 1}\n")
    write(agents / "tests" / "down.yaml", """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: mocked weather
    script: [{tool_call: get_weather, arguments: {city: Oslo}}, {say: "Snow in Oslo."}]
    mocks: {get_weather: "snow in Oslo"}
    turns: [{user: weather in Oslo?, expect: [{tool_call: get_weather, arguments: {city: Oslo}}, {reply_contains: snow}]}]
""")
    result = run_cli("test", agents, env={"OPENAI_API_KEY": None}, timeout=60)
    assert result.rc == 0, result.output
    assert "  PASS mocked weather (" in result.stdout


def test_a_cases_context_reaches_a_pinned_argument_and_a_missing_required_value_fails_the_case(
    tmp_path: Path, agents: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    command, args = stdio_command(record=record, name="tools")
    server = {"command": command, "args": args, "tools": {"get_weather": {"arguments": {"city": "${call.city}"}}}}
    write(agents / "desk.yaml", DESK.split("mcp_servers:")[0].format(base="")
          + f"mcp_servers:\n  tools: {json.dumps(server)}\n"
          + "context:\n  city: {from: 'dispatch:city', required: true}\n")
    write(agents / "tests" / "desk.yaml", """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: the city comes from the call
    context: {city: Lima}
    script:
      - tool_call: get_weather
        arguments: {}
      - say: "Sunny in Lima."
    turns:
      - user: weather?
        expect:
          - tool_call: get_weather
  - name: no city
    script:
      - say: "Hello."
    turns:
      - user: hi
""")
    result = run_cli("test", agents, env={"OPENAI_API_KEY": None}, timeout=120)
    assert result.rc == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith("  PASS the city comes from the call (")
    assert lines[2].startswith("  FAIL no city (")
    assert "required call context city is missing (from dispatch:city)" in lines[3]
    assert [(r["tool"], r["args"]) for r in read_records(record)] == [("get_weather", {"city": "Lima"})]


ANALYZED = """
analysis:
  schema: {type: object, required: [resolved], properties: {resolved: {type: boolean}}}
  instructions: Was the caller's question answered?
  llm: gpt-analysis
context:
  pin: {from: 'dispatch:pin', secret: true}
"""

REPORT_CASES = """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: resolved
    context: {pin: "739164"}
    script: [{say: "Your pin 739164 is reset."}]
    allow_unbacked_claims: true
    turns: [{user: "reset my pin 739164", expect: [{reply_contains: reset}]}]
    expect:
      report: {end_reason: hang_up, analysis: {result: {resolved: true}}, transcript: [{role: caller}, {role: agent}]}
  - name: wrongly unresolved
    context: {pin: "739164"}
    script: [{say: "Done."}]
    allow_unbacked_claims: true
    turns: [{user: hi}]
    expect:
      report: {end_reason: hang_up, analysis: {result: {resolved: false}}}
  - name: a failing reply quotes the pin
    context: {pin: "739164"}
    script: [{say: "Pin 739164."}]
    turns: [{user: hi, expect: [{reply_contains: goodbye}]}]
"""


def test_each_case_carries_its_call_report_with_the_fakes_analysis_and_a_report_assertion_names_the_differing_path(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url, extra=ANALYZED))
    write(agents / "tests" / "desk.yaml", REPORT_CASES)
    fake_openai.by_model["gpt-analysis"] = lambda request: text('{"resolved": true}')
    junit = tmp_path / "junit.xml"
    result = run_cli("test", agents, "--format", "json", "--junit", junit, timeout=120)
    assert result.rc == 1, result.output
    cases = {c["name"]: c for c in json.loads(result.stdout)["cases"]}
    assert cases["resolved"]["outcome"] == "passed", cases["resolved"]["failures"]
    report = cases["resolved"]["call_report"]
    assert tuple(report) == REPORT_FIELDS  # what `expect: {report: ...}` may name
    assert report["type"] == "call.ended" and report["agent"] == "desk" and report["end_reason"] == "hang_up"
    assert report["analysis"]["result"] == {"resolved": True} and report["analysis"]["model"] == "gpt-analysis"
    assert [t["role"] for t in report["transcript"]] == ["caller", "agent"]
    assert report["transcript"][1]["text"].startswith("Your pin ") and "739164" not in report["transcript"][1]["text"]
    assert report["context"] == {}  # the secret context value is not in the report
    assert "739164" not in result.stdout + junit.read_text()  # redacted like chat --json's report
    wrong = cases["wrongly unresolved"]
    assert wrong["outcome"] == "failed"
    assert wrong["failures"] == [f"expect.report at {agents}/tests/desk.yaml:17:7: "
                                 "report.analysis.result.resolved: expected false, got true"]
    assert wrong["call_report"]["analysis"]["result"] == {"resolved": True}
    # the analysis asked the analysis model about the case's transcript
    asked = [json.dumps(r["messages"]) for r in fake_openai.chat_requests if r.get("model") == "gpt-analysis"]
    assert len(asked) == 3 and "reset my pin" in asked[0] and "739164" not in asked[0]
    # JUnit carries each case's report as its output
    outs = [json.loads(e.text)["call_report"]["analysis"]["result"] for e in ET.parse(junit).getroot().iter("system-out")]
    assert outs == [{"resolved": True}] * 3
    quoted = cases["a failing reply quotes the pin"]["failures"]
    assert quoted[-1] == "turn 1: actual: reply 'Pin ${call.pin}.'; tool calls: none"
