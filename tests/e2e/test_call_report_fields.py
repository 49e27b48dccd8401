"""What a call's report holds, through one real `serve` (process executor) shared by
the module: fillers, per-turn latency, livekit's usage, the post-call analysis (and
each way it can fail, recorded, never dropped), serve-wide targets (`serve --reports`),
the `voice_runtime_call_report` hook (a raising plugin loses no report), and every end
reason: hang-up, error, timeout, a SIGKILLed job process, serve draining."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.openai_chat import FakeOpenAI, Reply, error, hang, text, tool_call
from helpers import write
from mcp_servers.harness import stdio_command
from serve_harness import Serve, spec

# the topic's pattern backtracks for ever (with `re`) on "aaa...a!": see "redos" below
BACKTRACKS = "^([a-z]|a)+$"
SCHEMA = {"type": "object", "required": ["resolved", "topic"],
          "properties": {"resolved": {"type": "boolean"}, "topic": {"type": "string", "pattern": BACKTRACKS}}}
HOOK_PLUGIN = '''
import json, os
import voice_runtime


@voice_runtime.hookimpl
def voice_runtime_call_report(report):
    with open(os.environ["HOOK_LOG"], "a") as fh:
        fh.write(json.dumps(report) + "\\n")
    raise RuntimeError("a plugin that fails after reading the report")
'''


def _said(request: dict[str, Any], role: str) -> str:
    for msg in reversed(request.get("messages") or []):
        if msg.get("role") == role:
            content = msg.get("content")
            return content if isinstance(content, str) else "".join(p.get("text", "") for p in content or [])
    return ""


def _model(request: dict[str, Any]) -> Reply:
    """The call's model and the analysis model in one fake: the analysis request is the
    one whose system message carries the schema; the caller's words choose the rest."""
    if "must match this JSON Schema" in _said(request, "system"):
        transcript = _said(request, "user")
        if "badjson" in transcript:
            return text("I think it went well.")
        if "mismatch" in transcript:
            return text('{"resolved": "yes", "topic": "weather"}')
        if "provider-down" in transcript:
            return error(503, "overloaded")
        if "analysis-hangs" in transcript:
            return hang()
        if "redos" in transcript:
            return text(json.dumps({"resolved": True, "topic": "a" * 40 + "!"}))
        return text('{"resolved": true, "topic": "weather"}')
    for msg in reversed(request.get("messages") or []):  # a filler line may follow the tool's result
        if msg.get("role") == "user":
            break
        if msg.get("role") == "tool":
            return text(f"Result: {_said(request, 'tool')}")
    caller = _said(request, "user")
    if caller.startswith("sleep"):
        return tool_call("sleep", {"seconds": float(caller.split()[1])})
    if caller == "model-fails":
        return error(400, "bad request")
    return text(f"echo: {caller}")


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, Path, Path, Path]]:
    root = tmp_path_factory.mktemp("reports")
    fake = FakeOpenAI(_model)
    fake.start_in_thread()
    agents, spool, out, hooks = root / "agents", root / "spool", root / "out", root / "hooks.jsonl"
    command, args = stdio_command(record=root / "calls.jsonl", name="booking")
    server = {"command": command, "args": args, "filler": {"after_ms": 200, "say": ["One moment please."]},
              "timeout": 120}
    write(agents / "desk.yaml", spec("You are the desk.", fake.base_url)
          + f"mcp_servers:\n  booking: {json.dumps(server)}\n"
          + f"analysis:\n  schema: {json.dumps(SCHEMA)}\n  instructions: Was the caller's question answered?\n"
            "  timeout_s: 3\n")
    write(root / "plugins" / "hooks.py", HOOK_PLUGIN)
    # serve-wide: every agent's reports also go to this folder (the spec names no target)
    write(root / "reports.yaml", "apiVersion: voice-runtime/v1\nreports:\n  - file: {dir: out}\n")
    serve = Serve(agents, "--report-spool", str(spool), "--reports", str(root / "reports.yaml"),
                  "--drain-timeout", "2", env={"HOOK_LOG": str(hooks)})
    try:
        serve.wait_ready()
        yield serve, spool, out, hooks
    finally:
        serve.__exit__()
        fake.stop_thread()


def _call(serve: Serve, turns: list[str], **extra: Any) -> dict[str, Any]:
    code, answer = serve.post("/simulate", json.dumps(
        {"agent": "desk", "turns": turns, "wait": True, **extra}).encode(), timeout=120)
    assert code in (200, 502), answer
    return answer["call_report"]


def _delivered(serve: Serve, out: Path, report_id: str) -> dict[str, Any]:
    path = out / f"{report_id}.json"
    serve.wait_for(path.exists, timeout=30, message=f"report {report_id} in the serve-wide folder")
    return json.loads(path.read_text())


def test_a_report_has_fillers_latency_usage_and_a_validated_analysis_and_reaches_serve_wide_targets_and_the_hook(
    desk: tuple[Serve, Path, Path, Path]
) -> None:
    serve, _spool, out, hooks = desk
    report = _call(serve, ["sleep 1", "thanks, bye"])
    assert report["end_reason"] == "hang_up"
    assert [(f["text"], f["kind"], f["tool"]) for f in report["fillers"]] == [
        ("One moment please.", "filler", "sleep")]
    assert report["fillers"][0]["at"] >= report["started_at"]
    replies = [t for t in report["transcript"] if t["role"] == "agent"]
    assert [t["latency_of"] for t in replies if "latency_s" in t] == ["text", "text"]
    assert report["latency"]["measured"] == ["text"] and len(report["latency"]["turns"]) == 2
    assert all(v > 0 for v in report["latency"]["turns"])
    # the fake answers every completion with 10 prompt and 5 completion tokens: three model requests
    assert (report["usage"]["llm_prompt_tokens"], report["usage"]["llm_completion_tokens"]) == (30, 15)
    assert report["usage"]["models"][0]["type"] == "llm_usage"
    assert report["analysis"]["result"] == {"resolved": True, "topic": "weather"}
    assert report["analysis"]["model"] == "gpt-4o-mini" and "error" not in report["analysis"]
    assert _delivered(serve, out, report["id"]) == report
    # the plugin's hook saw the same report, and its exception lost nothing
    serve.wait_for(lambda: hooks.exists() and report["id"] in hooks.read_text(), message="the hook")
    assert "raised in voice_runtime_call_report" in serve.output()


@pytest.mark.parametrize(("said", "why"), [
    ("badjson", "invalid JSON"),
    ("mismatch", "does not match the schema at resolved: 'yes' is not of type 'boolean'"),
    ("provider-down", "provider error"),
    ("analysis-hangs", "timeout: no answer within 3s"),
    # the schema's pattern is bounded and off the event loop: the job ends, the report says why
    ("redos", f"schema validation took too long: pattern {BACKTRACKS!r} at topic"),
])
def test_a_failed_analysis_is_recorded_in_the_report_which_is_still_delivered(
    desk: tuple[Serve, Path, Path, Path], said: str, why: str
) -> None:
    serve, _spool, out, _hooks = desk
    report = _call(serve, [said])
    assert "result" not in report["analysis"]
    assert report["analysis"]["error"].startswith(why), report["analysis"]
    assert report["end_reason"] == "hang_up"
    assert _delivered(serve, out, report["id"])["analysis"] == report["analysis"]


def test_a_call_that_fails_ends_with_error_and_one_cut_by_its_limit_with_timeout(
    desk: tuple[Serve, Path, Path, Path]
) -> None:
    serve, _spool, _out, _hooks = desk
    failed = _call(serve, ["model-fails"])
    assert failed["end_reason"] == "error" and failed["error"]
    cut = _call(serve, ["sleep 60"], max_call_s=2)
    assert cut["end_reason"] == "timeout"
    assert cut["error"] == "the simulated call took longer than 2s"
    assert [c["tool"] for c in cut["tool_calls"]] == ["sleep"]


def _running_call(serve: Serve, spool: Path, turns: list[str] | None = None, gap_s: float = 0,
                  holding: str = '"sleep"') -> Path:
    """Start a call (by default one whose tool sleeps); its checkpoint once it holds
    ``holding`` (the tool call)."""
    code, answer = serve.post("/simulate", json.dumps(
        {"agent": "desk", "turns": turns or ["sleep 60"], "gap_s": gap_s}).encode())
    assert code in (200, 202), answer

    def checkpoint() -> Path | None:
        for path in (spool / "calls").glob("*.json"):
            with contextlib.suppress(OSError):  # replaced meanwhile
                if holding in path.read_text():
                    return path
        return None

    return serve.wait_for(checkpoint, timeout=60, message=f"the running call's checkpoint holding {holding}")


def test_a_sigkilled_job_process_still_gets_a_report_marked_job_killed_and_the_spool_is_private(
    desk: tuple[Serve, Path, Path, Path]
) -> None:
    serve, spool, out, hooks = desk
    path = _running_call(serve, spool)
    # README: spool files are 0600 in 0700 folders (the checkpoint holds the transcript and targets)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in [spool, *spool.iterdir()]} == {
        "spool": "0o700", "pending": "0o700", "dead": "0o700", "tmp": "0o700", "calls": "0o700", ".lock": "0o600"}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    os.kill(int(path.name.rsplit(".", 2)[-2]), signal.SIGKILL)  # the job process, named in its checkpoint
    def killed() -> list[dict[str, Any]]:
        return [r for r in map(lambda p: json.loads(p.read_text()), out.glob("*.json")) if r["end_reason"] == "job_killed"]

    # serve spools it from the checkpoint, then delivers it to the serve-wide folder
    serve.wait_for(killed, timeout=30, message="serve reporting the killed call")
    assert not path.exists()
    [report] = killed()
    assert [c["tool"] for c in report["tool_calls"]] == ["sleep"]
    assert [t["text"] for t in report["transcript"] if t["role"] == "caller"] == ["sleep 60"]
    assert report["analysis"] == {"error": "not run: the call's job process was killed"}
    assert report["id"] in hooks.read_text()  # serve told the hook too


def test_chat_json_ends_with_the_same_report_as_a_served_call_analysis_included(
    desk: tuple[Serve, Path, Path, Path]
) -> None:
    import subprocess

    from helpers import CLI, child_env

    serve, _spool, _out, hooks = desk
    served = _call(serve, ["hello"])
    chat = subprocess.run([*CLI, "chat", str(serve.agents), "--agent", "desk", "--json"], input="hello\n",
                          capture_output=True, text=True, timeout=120, env=child_env({"HOOK_LOG": str(hooks)}))
    assert chat.returncode == 0, chat.stderr
    report = json.loads(chat.stdout.splitlines()[-1])["report"]
    assert sorted(report) == sorted(served)
    assert report["analysis"]["result"] == served["analysis"]["result"] == {"resolved": True, "topic": "weather"}
    assert [(t["role"], t["text"]) for t in report["transcript"]] == [
        (t["role"], t["text"]) for t in served["transcript"]]
    assert report["end_reason"] == served["end_reason"] == "hang_up"
    assert report["id"] in hooks.read_text()  # chat tells the hook too


def test_calls_cut_by_serve_draining_end_with_serve_draining_a_simulated_one_between_turns_too(
    desk: tuple[Serve, Path, Path, Path]
) -> None:
    serve, spool, out, _hooks = desk
    before = {p.name for p in out.glob("*.json")}
    _running_call(serve, spool)
    # between its turns when the drain (2 s) ends: cut then, not 12 s later as a hang-up
    # (livekit waits 15 s for a closing job's entrypoint, which a simulated call is)
    _running_call(serve, spool, ["first turn", "second turn"], gap_s=12, holding="echo: first turn")
    assert serve.stop(signal.SIGTERM, timeout=90) == 0  # --drain-timeout 2: the call is cut
    # the first call's job awaits its 60 s tool call and never ends its close: serve
    # kills it 20 s after the drain instead of waiting for the tool (and exits 0)
    assert "job processes still closing 20 s after the drain: killing them" in serve.output()
    # the log says the drain ran out with the calls up, not that the agent drained
    # (two calls, or more: the module's serve may still hold an earlier test's call)
    assert re.search(r"agent desk unregistered with [2-9] call\(s\) still in progress: --drain-timeout \(2 s\) "
                     r"passed; they are cut", serve.output()) and "agent desk drained and unregistered" not in serve.output()
    assert not re.search(r"booking/sleep ok in [1-9]\d{4,} ms", serve.output())  # no 10 s+ sleep ended
    # the module's plugin raises in every report hook (in the job process): one traceback each
    # (livekit's log queue had serve print each job's traceback twice)
    raised = serve.output().count("plugin hooks raised in voice_runtime_call_report")
    assert raised >= 2 and serve.output().count("RuntimeError: a plugin that fails after reading the report") == raised
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not [p for p in out.glob("*.json") if p.name not in before]:
        # serve is gone: its spool still holds the report, which a next serve delivers
        pending = list((spool / "pending").glob("*.json"))
        if pending:
            break
        time.sleep(0.2)
    reports = [json.loads(p.read_text()) for p in out.glob("*.json") if p.name not in before]
    reports += [json.loads(p.read_text())["report"] for p in (spool / "pending").glob("*.json")]
    assert [r["end_reason"] for r in reports] == ["serve_draining", "serve_draining"], reports
    callers = sorted([t["text"] for t in r["transcript"] if t["role"] == "caller"] for r in reports)
    assert callers == [["first turn"], ["sleep 60"]], reports


def test_a_bad_serve_reports_file_stops_serve_with_each_error_at_its_location(tmp_path: Path) -> None:
    import subprocess

    from helpers import CLI, child_env

    (tmp_path / "agents").mkdir()
    write(tmp_path / "reports.yaml", "apiVersion: voice-runtime/v1\nreports:\n"
          "  - webhook: {url: 'ftp://x/', secret: whsec_c2hvcnQ=}\n  - {file: {dir: a}, webhook: null, extra: 1}\n")
    result = subprocess.run([*CLI, "serve", str(tmp_path / "agents"), "--unregistered", "--reports",
                             str(tmp_path / "reports.yaml")], capture_output=True, text=True, timeout=60,
                            env=child_env({}))
    assert result.returncode == 2
    err = result.stderr.replace(str(tmp_path) + "/", "")
    assert "error: reports.yaml:3:20: reports[0].webhook.url: must be an http:// or https:// URL with a host" in err
    assert "reports.yaml:3:40: reports[0].webhook.secret: must be `whsec_` followed by base64 of at least 16" in err
    assert "c2hvcnQ" not in err  # the secret is not echoed
    assert "reports.yaml:4:" in err and "extra" in err
    assert "Traceback" not in err
