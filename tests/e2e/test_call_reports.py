"""Call reports through a real `serve` (process executor): when a call ends its report
is spooled, then delivered to the spec's webhook (signed the Standard Webhooks way,
verified here with the `standardwebhooks` package) and folder; a receiver that fails
gets it later, one that refuses it for good leaves it dead-lettered and counted, and a
serve SIGKILLed with reports spooled delivers them when started again."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

from fakes.openai_chat import FakeOpenAI
from fakes.webhook_receiver import WebhookReceiver
from helpers import write
from mcp_servers.harness import free_port, stdio_command
from serve_harness import Serve, spec

SECRET = "whsec_" + base64.b64encode(b"report-signing-key-0123456789").decode()
ENV = {"CALL_WEBHOOK_SECRET": SECRET}  # a webhook secret comes from the environment, never the file


def _desk(agents: Path, base_url: str, hooks: list[str], record: Path, extra: str = "") -> None:
    command, args = stdio_command(record=record, name="weather")
    reports = [{"webhook": {"url": url, "secret": "${CALL_WEBHOOK_SECRET}"}} for url in hooks] + [{"file": {"dir": "../reports-out"}}]
    write(agents / "desk.yaml", spec("You help ${call.caller}.", base_url)
          + "context:\n  caller: {from: 'participant:sip.phoneNumber'}\n  pin: {from: 'dispatch:pin', secret: true}\n"
          + f"mcp_servers:\n  weather: {json.dumps({'command': command, 'args': args})}\n"
          + f"reports: {json.dumps(reports)}\n" + extra)


def _call(serve: Serve, context: dict[str, str], turn: str = "weather in Paris?") -> dict[str, Any]:
    code, answer = serve.post("/simulate", json.dumps(
        {"agent": "desk", "turns": [turn], "wait": True, "context": context}).encode(), timeout=90)
    assert code == 200, answer
    return answer


def _verified(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    hook = Webhook(SECRET)
    return [hook.verify(r.body, r.headers) for r in receiver.delivered()]


def test_a_calls_report_reaches_its_webhook_signed_and_its_folder_without_secret_context(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    receiver = WebhookReceiver(free_port()).start()
    spool = tmp_path / "spool"
    _desk(agents, fake_openai.base_url, [receiver.url], tmp_path / "calls.jsonl")
    fake_openai.use_tool_then_answer("get_weather", {"city": "Paris"})
    try:
        with Serve(agents, "--report-spool", str(spool), env=ENV) as serve:
            serve.wait_ready()
            # the caller says the secret value: the transcript carries it redacted
            answer = _call(serve, {"caller": "+15550001", "pin": "pin-4411-secret"},
                           "weather in Paris? my pin is pin-4411-secret")
            report = answer["call_report"]
            serve.wait_for(lambda: len(receiver.delivered()) == 1, message="the webhook delivery")
            serve.wait_for(lambda: serve.metric('voice_runtime_reports_total{outcome="delivered"}') == 2.0,
                           message="two deliveries counted (webhook and folder)")
    finally:
        receiver.stop()
    [sent] = _verified(receiver)
    assert sent["id"] == report["id"] and receiver.delivered()[0].headers["webhook-id"] == report["id"]
    assert sent["agent"] == "desk" and sent["call_id"] and sent["end_reason"] == "hang_up"
    assert sent["context"] == {"caller": "+15550001"}  # the secret pin is not in it
    assert [(t["role"], t["text"]) for t in sent["transcript"]] == [
        ("caller", "weather in Paris? my pin is ${call.pin}"), ("agent", "Result: sunny in Paris")]
    [call] = sent["tool_calls"]
    assert (call["server"], call["tool"], call["outcome"]) == ("weather", "get_weather", "ok")
    assert "arguments" not in call and "result" not in call  # report_tool_io is off
    assert sent["duration_s"] >= 0 and sent["ended_at"] >= sent["started_at"]
    on_disk = json.loads((tmp_path / "reports-out" / f"{report['id']}.json").read_text())
    assert on_disk == sent
    assert "pin-4411-secret" not in json.dumps(sent) and report == sent  # /simulate answers the same report
    assert list((spool / "pending").iterdir()) == []


def test_a_receiver_that_fails_gets_the_report_later_and_one_that_refuses_dead_letters_it(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    flaky = WebhookReceiver(free_port(), statuses=[500, 503]).start()
    refusing = WebhookReceiver(free_port(), statuses=[400]).start()
    redirecting = WebhookReceiver(free_port(), statuses=[307], redirect_to=flaky.url).start()
    spool = tmp_path / "spool"
    _desk(agents, fake_openai.base_url, [flaky.url, refusing.url, redirecting.url], tmp_path / "calls.jsonl")
    fake_openai.use_tool_then_answer("get_weather", {"city": "Paris"})
    try:
        with Serve(agents, "--report-spool", str(spool), env=ENV) as serve:
            serve.wait_ready()
            report = _call(serve, {"caller": "+15550002"})["call_report"]
            serve.wait_for(lambda: len(flaky.delivered()) == 1, timeout=60, message="delivery after 500, 503")
            serve.wait_for(lambda: serve.metric('voice_runtime_reports_total{outcome="dead"}') == 2.0,
                           message="the 400 and the redirect dead-lettered")
            log = serve.output()
            # the backlog on /status, the status page and /metrics
            assert serve.status()["reports"]["dead"] == 2
            assert serve.metric("voice_runtime_reports_dead") == 2.0
            code, page = serve.get("/")
            assert code == 200 and "2 dead-lettered" in page
    finally:
        for r in (flaky, refusing, redirecting):
            r.stop()
    assert [r.status for r in flaky.received] == [500, 503, 200]
    assert len({r.headers["webhook-id"] for r in flaky.received}) == 1  # one id: the receiver deduplicates
    assert [r.status for r in refusing.received] == [400]
    assert [r.status for r in redirecting.received] == [307]  # not followed: the flaky receiver got only its own
    assert _verified(flaky)[0]["id"] == report["id"]
    dead = sorted(p.name for p in (spool / "dead").iterdir())
    assert len(dead) == 2 and all(name.startswith(report["id"]) for name in dead)
    assert "could not be delivered to http://127.0.0.1" in log and "HTTP 400" in log


def test_a_serve_killed_with_reports_spooled_delivers_them_when_started_again(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    port = free_port()
    receiver = WebhookReceiver(port)  # down: nothing listens yet
    spool = tmp_path / "spool"
    _desk(agents, fake_openai.base_url, [receiver.url], tmp_path / "calls.jsonl")
    fake_openai.use_tool_then_answer("get_weather", {"city": "Paris"})
    with Serve(agents, "--report-spool", str(spool), env=ENV) as serve:
        serve.wait_ready()
        ids = [_call(serve, {"caller": f"+1555000{n}"})["call_report"]["id"] for n in range(2)]
        serve.wait_for(lambda: (serve.metric('voice_runtime_reports_total{outcome="retried"}') or 0) >= 2,
                       message="failed attempts while the receiver is down")
        os.killpg(serve.proc.pid, signal.SIGKILL)  # the whole pod at once: no shutdown code runs
        serve.proc.wait(10)
    left = [json.loads(p.read_text()) for p in (spool / "pending").iterdir()]
    assert sorted(e["id"] for e in left if "webhook" in e["target"]) == sorted(ids)
    receiver.start()
    try:
        with Serve(agents, "--report-spool", str(spool), env=ENV) as again:
            again.wait_for(lambda: len(receiver.delivered()) == 2, timeout=60, message="the predecessor's reports")
            again.wait_for(lambda: not list((spool / "pending").iterdir()), message="the spool emptied")
    finally:
        receiver.stop()
    assert sorted(r["id"] for r in _verified(receiver)) == sorted(ids)


def test_a_second_serve_on_a_spool_another_serve_holds_is_refused_naming_it_and_the_first_goes_on(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """Two serves delivering one spool would both report a killed job's call as
    job_killed and both send every pending report (a new user's two serves did)."""
    import subprocess

    from helpers import CLI, child_env

    spool = tmp_path / "spool"
    _desk(agents, fake_openai.base_url, [], tmp_path / "calls.jsonl")
    fake_openai.use_tool_then_answer("get_weather", {"city": "Paris"})
    with Serve(agents, "--report-spool", str(spool), env=ENV) as serve:
        serve.wait_ready()
        second = subprocess.run([*CLI, "serve", str(agents), "--unregistered", "--report-spool", str(spool),
                                 "--http-port", str(free_port())], capture_output=True, text=True, timeout=90,
                                env=child_env(ENV))
        report = _call(serve, {"caller": "+15550009"})["call_report"]
        serve.wait_for(lambda: (tmp_path / "reports-out" / f"{report['id']}.json").exists(),
                       message="the first serve still delivering")
    assert second.returncode == 2, second.stderr
    assert f"the report spool {spool} is in use by another serve (pid {serve.proc.pid})" in second.stderr
    assert "give this serve its own --report-spool" in second.stderr and "Traceback" not in second.stderr


def test_a_literal_webhook_secret_is_refused_where_it_is_written_in_a_spec_and_in_a_reports_file(
    tmp_path: Path, agents: Path
) -> None:
    import subprocess

    from helpers import CLI, child_env

    write(agents / "desk.yaml", spec("You help.", "http://127.0.0.1:9/v1")
          + f"reports:\n  - webhook: {{url: 'https://hooks.example.com/calls', secret: '{SECRET}'}}\n")
    write(tmp_path / "reports.yaml", "apiVersion: voice-runtime/v1\nreports:\n"
          f"  - webhook: {{url: 'https://hooks.example.com/all', secret: '{SECRET}'}}\n")
    check = subprocess.run([*CLI, "check", str(agents), "--offline"], capture_output=True, text=True, timeout=60,
                           env=child_env({}))
    served = subprocess.run([*CLI, "serve", str(agents), "--unregistered", "--reports", str(tmp_path / "reports.yaml")],
                            capture_output=True, text=True, timeout=60, env=child_env({}))
    assert (check.returncode, served.returncode) == (1, 2), (check.stdout, served.stderr)
    said = "write the signing secret as a ${VAR} read from the environment"
    line = next(n for n, text in enumerate((agents / "desk.yaml").read_text().splitlines(), 1) if "secret:" in text)
    assert f"desk.yaml:{line}:" in check.stdout and f"reports[0].webhook.secret: {said}" in check.stdout, check.stdout
    assert f"reports.yaml:3:61: reports[0].webhook.secret: {said}" in served.stderr, served.stderr
    assert SECRET not in check.stdout + check.stderr + served.stdout + served.stderr


def _dead_letter(folder: Path, name: str, age_s: float) -> None:
    write(folder / f"{name}.0.json", json.dumps({"id": name, "target": {}, "report": {}, "last_error": "HTTP 400"}))
    when = time.time() - age_s
    os.utime(folder / f"{name}.0.json", (when, when))


def test_dead_letters_past_the_retention_are_removed_oldest_first_logged_once_and_counted(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    """A receiver that refuses every report must not fill the pod's disk: dead/ keeps
    at most --report-dead-max letters, none older than --report-dead-max-days."""
    refusing = WebhookReceiver(free_port(), statuses=[400] * 5).start()
    spool = tmp_path / "spool"
    # what a previous serve left: two letters dead for two days, four recent ones (oldest first)
    for n in range(2):
        _dead_letter(spool / "dead", f"msg_expired{n}", 2 * 86400 + n)
    for n in range(4):
        _dead_letter(spool / "dead", f"msg_recent{n}", 400 - n * 100)
    write(spool / "dead" / "notes.txt", "an operator's file, not a letter")
    _desk(agents, fake_openai.base_url, [refusing.url], tmp_path / "calls.jsonl")
    fake_openai.use_tool_then_answer("get_weather", {"city": "Paris"})
    try:
        with Serve(agents, "--report-spool", str(spool), "--report-dead-max", "3", "--report-dead-max-days", "1",
                   env=ENV) as serve:
            serve.wait_ready()
            serve.wait_for(lambda: serve.metric('voice_runtime_reports_dead_removed_total{reason="count"}') == 1.0,
                           message="the oldest recent letter removed at start")
            assert serve.metric('voice_runtime_reports_dead_removed_total{reason="age"}') == 2.0
            report = _call(serve, {"caller": "+15550003"})["call_report"]
            serve.wait_for(lambda: serve.metric('voice_runtime_reports_dead_removed_total{reason="count"}') == 2.0,
                           message="the next oldest removed when the new letter came")
            serve.wait_for(lambda: serve.status()["reports"]["dead"] == 3, message="three letters on /status")
            assert serve.metric("voice_runtime_reports_dead") == 3.0
            log = serve.output()
    finally:
        refusing.stop()
    kept = sorted(p.name for p in (spool / "dead").iterdir())
    assert kept == sorted([f"{report['id']}.0.json", "msg_recent2.0.json", "msg_recent3.0.json", "notes.txt"])
    removals = [line for line in log.splitlines() if "undeliverable call report(s)" in line]
    assert len(removals) == 2, removals  # one line per pass, not one per letter
    assert "removed 3 undeliverable call report(s)" in removals[0]
    assert "2 dead longer than 1 day(s) (--report-dead-max-days)" in removals[0]
    assert "1 beyond the newest 3 (--report-dead-max)" in removals[0]
    assert "removed 1 undeliverable call report(s)" in removals[1]
