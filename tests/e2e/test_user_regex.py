"""Regular expressions users write (a test's `reply_matches`, a spec's
`claims.patterns`) cannot stall anything: a pattern that backtracks for ever times
out and is reported at file:line:col, patterns that would be slow to compile are
refused when read, and the claims check keeps up with very long replies.

Through the real `voice-runtime test` and `check` CLIs, a real `serve
--require-tests` with the process executor, and real calls through serve."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from fakes.openai_chat import FakeOpenAI, text
from helpers import run_cli, write
from mcp_servers.harness import read_records, stdio_command
from serve_harness import Serve, spec

BACKTRACKS = "a" * 40 + "!"  # what each catastrophic pattern below is run on
CATASTROPHIC = ["(a|a)*$", "(a|aa)+$", "((a|a)+)+$"]
# nested quantifiers the regex package decides quickly: they must simply not match
NESTED = ["^(a+)+$", "(x+x+)+y", "(a*)*b", "(.*a){20}$"]


def cases(agent: str, patterns: list[str], reply: str = BACKTRACKS) -> tuple[str, dict[str, int]]:
    """A test file with one case per pattern, and the line of each pattern's `reply_matches`."""
    lines = ["apiVersion: voice-runtime/v1", f"agent: {agent}", "cases:"]
    line_of = {}
    for n, pattern in enumerate(patterns):
        lines += [f"  - name: pattern {n}", f"    script: [{{say: {json.dumps(reply)}}}]", "    turns:",
                  "      - user: hi", "        expect:"]
        lines.append(f"          - reply_matches: {json.dumps(pattern)}")
        line_of[pattern] = len(lines)
    return "\n".join(lines) + "\n", line_of


def offline_spec(agents: Path, name: str, extra: str = "") -> None:
    write(agents / f"{name}.yaml", "apiVersion: voice-runtime/v1\ninstructions: hi\n"
          "pipeline: {llm: {provider: openai, model: gpt-4o-mini}, text_only: true}\n" + extra)


def test_a_catastrophic_reply_matches_times_out_at_file_line_col_and_fails_only_its_case(agents: Path) -> None:
    offline_spec(agents, "desk")
    body, line_of = cases("desk", CATASTROPHIC + NESTED)
    body += ("  - name: an ordinary pattern\n    script: [{say: hello}]\n"
             "    turns: [{user: hi, expect: [{reply_matches: '^hel+o$'}]}]\n")
    write(agents / "tests" / "desk.yaml", body)
    result = run_cli("test", agents, "--format", "json", env={"OPENAI_API_KEY": None}, timeout=300)
    assert result.rc == 1, result.output
    report = json.loads(result.stdout)
    by_name = {c["name"]: c for c in report["cases"]}
    for n, pattern in enumerate(CATASTROPHIC + NESTED):
        case = by_name[f"pattern {n}"]
        assert case["outcome"] == "failed", case
        if pattern in CATASTROPHIC:
            where = f"{agents}/tests/desk.yaml:{line_of[pattern]}:13"
            assert case["failures"][0].startswith(
                f"turn 1 'hi': reply_matches {pattern!r} at {where} timed out after 0.25 s on 41 characters: "
                "the pattern backtracks too much"), case
        else:
            assert case["failures"][0] == f"turn 1 'hi': expected the reply to match {pattern!r}", case
    assert by_name["an ordinary pattern"]["outcome"] == "passed"


def test_a_catastrophic_claims_pattern_fails_the_case_naming_the_spec_at_file_line_col(agents: Path) -> None:
    offline_spec(agents, "desk", "claims:\n  patterns: ['(a|aa)+$']\n")
    write(agents / "tests" / "desk.yaml", cases("desk", ["a!$"])[0])
    result = run_cli("test", agents, env={"OPENAI_API_KEY": None}, timeout=120)
    assert result.rc == 1, result.output
    assert (f"turn 1 'hi': {agents}/desk.yaml:5:14: claims.patterns[0]: claims check timed out after 1 s on "
            "41 characters: the pattern backtracks too much") in result.stdout, result.stdout


def test_invalid_huge_and_slow_to_compile_patterns_are_refused_at_file_line_col(agents: Path) -> None:
    huge = "x" * 2001
    offline_spec(agents, "desk", "claims:\n  patterns: ['[a-', '(?:x{100}|y){1000}', '\\bticket raised\\b']\n")
    write(agents / "tests" / "desk.yaml", cases("desk", ["a(b", "((a{1000}){1000}){1000}", huge])[0])
    checked = run_cli("check", agents, timeout=60)
    assert checked.rc == 1, checked.output
    assert checked.stdout.splitlines()[:2] == [
        f"{agents}/desk.yaml:5:14: claims.patterns[0]: not a regular expression: unterminated character set at position 3",
        f"{agents}/desk.yaml:5:21: claims.patterns[1]: counted repetitions ({{n}}, nested ones multiplied, all added up) reach "
        "100000; at most 10000 (compiling it would take seconds)"], checked.stdout
    offline_spec(agents, "desk")
    tested = run_cli("test", agents, timeout=60)
    assert tested.rc == 2, tested.output
    assert tested.stderr.splitlines() == [
        f"{agents}/tests/desk.yaml:9:28: cases[0].turns[0].expect[0].reply_matches: not a regular expression: "
        "missing ) at position 3",
        f"{agents}/tests/desk.yaml:15:28: cases[1].turns[0].expect[0].reply_matches: counted repetitions "
        "({n}, nested ones multiplied, all added up) reach 1000000000; at most 10000 (compiling it would take seconds)",
        f"{agents}/tests/desk.yaml:21:28: cases[2].turns[0].expect[0].reply_matches: a pattern of 2001 characters; "
        "at most 2000",
        "found 3 errors in 1 test file",
    ]


# each accepted by the first bounds (none nested, under 2000 characters), each seconds to compile
SPREAD_OUT = "".join(f"(?:a{i}){{9999}}" for i in range(150))  # 150 separate {9999}: 1.5 s
DEEP = "(" * 400 + "a" + ")" * 400  # the parser recursed: RecursionError, a traceback from check


def test_repetitions_that_add_up_and_groups_nested_deep_are_refused_at_file_line_col(agents: Path) -> None:
    offline_spec(agents, "desk", "claims:\n  patterns:\n"
                 + "".join(f"    - {json.dumps(p)}\n" for p in (SPREAD_OUT, DEEP, "(?V1)" + "[" * 120 + "a" + "]" * 120)))
    write(agents / "tests" / "desk.yaml", cases("desk", [SPREAD_OUT, DEEP])[0])
    checked = run_cli("check", agents, timeout=120)
    assert checked.rc == 1, checked.output
    assert checked.stdout.splitlines()[:3] == [
        f"{agents}/desk.yaml:6:7: claims.patterns[0]: counted repetitions ({{n}}, nested ones multiplied, all added "
        "up) reach 1499850; at most 10000 (compiling it would take seconds)",
        f"{agents}/desk.yaml:7:7: claims.patterns[1]: groups and character sets nested 400 deep; at most 50",
        f"{agents}/desk.yaml:8:7: claims.patterns[2]: groups and character sets nested 120 deep; at most 50",
    ], checked.stdout
    assert "Traceback" not in checked.output
    offline_spec(agents, "desk", "claims:\n  patterns:\n" + "".join(f"    - 'w{n}'\n" for n in range(101)))
    checked = run_cli("check", agents, timeout=120)
    assert checked.rc == 1, checked.output
    assert checked.stdout.splitlines()[0] == (
        f"{agents}/desk.yaml:5:3: claims.patterns: list should have at most 100 items after validation, not 101")
    offline_spec(agents, "desk")
    tested = run_cli("test", agents, timeout=120)
    assert tested.rc == 2, tested.output
    assert tested.stderr.splitlines() == [
        f"{agents}/tests/desk.yaml:9:28: cases[0].turns[0].expect[0].reply_matches: counted repetitions "
        "({n}, nested ones multiplied, all added up) reach 1499850; at most 10000 (compiling it would take seconds)",
        f"{agents}/tests/desk.yaml:15:28: cases[1].turns[0].expect[0].reply_matches: groups and character sets "
        "nested 400 deep; at most 50",
        "found 2 errors in 1 test file",
    ]


def test_a_hundred_claims_patterns_slow_to_compile_never_block_a_calls_loop_through_serve(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    # the most each may cost (10 x {999}: ~30 ms to compile), as many as a spec may hold
    patterns = ["".join(f"(?:a{n}|c{i}){{999}}" for i in range(10)) for n in range(100)]
    write(agents / "sales.yaml", spec("You are sales.", fake_openai.base_url, extra="claims:\n  patterns:\n"
                                      + "".join(f"    - {json.dumps(p)}\n" for p in patterns)))
    with Serve(agents) as serve:
        serve.wait_ready(timeout=120)
        fake_openai.enqueue(text("hello there"), text("I've emailed you the invoice."))
        code, report = serve.post("/simulate?wait=1", b'{"agent": "sales", "turns": ["hi", "my invoice?"]}',
                                  timeout=120)
        assert code == 200 and report["ok"], report
        serve.wait_for(lambda: serve.metric('voice_runtime_unbacked_claims_total{agent="sales"}') == 1,
                       message="the claim in the second reply")
        # the job compiles them twice (reading the spec, then for the first check): never on its loop
        blocked = [line for line in serve.output().splitlines() if "event loop blocked" in line]
        assert not [line for line in blocked if "regex" in line or "claims" in line], blocked


def test_a_catastrophic_regex_in_a_test_gate_rejects_its_agent_while_serve_answers_and_stops_on_sigterm(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    record = tmp_path / "calls.jsonl"
    command, args = stdio_command(record=record, name="tools")
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url)
          + f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}\n")
    write(agents / "sales.yaml", spec("You are sales v1.", fake_openai.base_url))
    write(agents / "tests" / "sales.yaml", cases("sales", ["^a+!$"])[0])
    with Serve(agents, "--require-tests", "--scan-interval", "0",
               env={"TMPDIR": str(scratch), "PROMETHEUS_MULTIPROC_DIR": None}) as serve:
        serve.wait_ready()
        assert serve.agent("sales")["generation"] == 1
        body, line_of = cases("sales", CATASTROPHIC)
        write(agents / "tests" / "sales.yaml", body)
        write(agents / "sales.yaml", spec("You are sales v2.", fake_openai.base_url))
        # while the gate runs the patterns: serve answers, and another agent's call
        # borrows its MCP tool through the gateway
        calls, deadline = 0, time.monotonic() + 240
        while (serve.status()["last_reload"] or {}).get("outcome") != "rejected":
            assert time.monotonic() < deadline, serve.output()[-4000:]
            assert serve.get("/healthz")[0] == 200
            fake_openai.use_tool_then_answer("echo", {"text": f"call {calls}"})
            code, report = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["echo please"]}', timeout=120)
            assert code == 200 and report["ok"], report
            calls += 1
            assert len(read_records(record)) == calls
            assert serve.proc.poll() is None
        errors = serve.status()["last_reload"]["errors"]
        assert {e["file"] for e in errors} == {str(agents / "sales.yaml")}
        for n, pattern in enumerate(CATASTROPHIC):
            where = f"{agents}/tests/sales.yaml:{line_of[pattern]}:13"
            assert any(e["message"].startswith(f"conversation test 'pattern {n}' failed (") and
                       f"reply_matches {pattern!r} at {where} timed out after 0.25 s" in e["message"]
                       for e in errors), errors
        assert serve.agent("sales")["generation"] == 1  # the last good version keeps serving
        assert serve.get("/healthz")[0] == 200
        assert serve.stop(signal.SIGTERM, timeout=60) == 0
    assert list(scratch.glob("voice-runtime-*")) == []  # the state and metrics folders


def test_a_backtracking_claims_pattern_and_a_very_long_reply_never_stall_a_call_through_serve(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "sales.yaml", spec("You are sales.", fake_openai.base_url, extra="claims:\n  patterns: ['(a|aa)+$']\n"))
    # 40 k characters of conditions ("once I've checked...": each a match the old check
    # re-read the whole sentence for) and one claim at the very end
    long_reply = "Once I've checked the calendar, if we booked it, " * 800 + "fine. I've emailed you the invoice."
    with Serve(agents) as serve:
        serve.wait_ready()
        fake_openai.enqueue(text(BACKTRACKS), text(long_reply))
        code, report = serve.post("/simulate?wait=1", b'{"agent": "sales", "turns": ["hi", "my invoice?"]}',
                                  timeout=120)
        assert code == 200 and report["ok"], report
        assert [t["reply"] for t in report["turns"]] == [BACKTRACKS, long_reply]
        assert serve.get("/healthz")[0] == 200
        serve.wait_for(lambda: serve.metric('voice_runtime_unbacked_claims_total{agent="sales"}') == 1,
                       message="the claim at the end of the long reply")
        output = serve.output()
        assert f"{agents}/sales.yaml:7:14: claims.patterns[0]: claims check timed out after 1 s" in output, output[-3000:]
        assert "unbacked claim: the reply claims an action no tool call backs: \"I've emailed you the invoice.\"" in output
        # livekit's loop monitor names what blocks a call's event loop: never the claims check
        blocked = [line for line in output.splitlines() if "event loop blocked" in line]
        assert not [line for line in blocked if "claims" in line or "regex" in line], blocked
