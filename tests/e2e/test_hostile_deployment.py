"""What a hostile pass over a deployment found, each kept fixed: files in the specs
folder that are not files (a FIFO named *.yaml among the phone lines or the
conversation tests), webhook URLs carrying credentials (in their userinfo or
query, from ``${VAR}`` in ``serve --reports`` or written as text) reaching serve's log
and the dead-letter record, and a backlog of undelivered reports stalling serve. Every test runs the real CLI in a subprocess (serve with
the process executor) on real files."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
from fakes.openai_chat import FakeOpenAI
from fakes.webhook_receiver import WebhookReceiver
from helpers import run_cli, write
from mcp_servers.harness import free_port, stdio_command
from serve_harness import Serve, spec
from test_hostile_inputs import TEXT_AGENT

pytestmark = pytest.mark.timeout(180)



def test_a_fifo_named_yaml_among_the_phone_lines_is_an_error_naming_it_never_a_hang(agents: Path) -> None:
    # open() of a FIFO waits for a writer: check (and serve's reload) froze on it
    write(agents / "desk.yaml", TEXT_AGENT)
    (agents / "telephony").mkdir()
    os.mkfifo(agents / "telephony" / "lines.yaml")

    result = run_cli("check", "--offline", agents, timeout=30)

    assert result.rc == 1, result.output
    assert f"{agents / 'telephony' / 'lines.yaml'}:1:1: is a FIFO (named pipe), not a regular file" in result.stdout
    assert "Traceback" not in result.output


def test_a_fifo_named_yaml_among_the_conversation_tests_refuses_the_reload_instead_of_freezing_it(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You are the desk v1.", fake_openai.base_url))
    with Serve(agents, "--require-tests", "--scan-interval", "0") as serve:
        serve.wait_ready()
        (agents / "tests").mkdir()
        os.mkfifo(agents / "tests" / "desk.yaml")
        write(agents / "desk.yaml", spec("You are the desk v2.", fake_openai.base_url))
        # the reload thread hashed the test files with read_bytes() and waited on the FIFO for ever
        serve.wait_for(lambda: (serve.status()["last_reload"] or {}).get("outcome") == "rejected",
                       message="the reload rejected")
        [error] = serve.status()["last_reload"]["errors"]
        assert "is a FIFO (named pipe), not a regular file" in error["message"], error
        assert serve.agent("desk")["generation"] == 1
        # the reload thread is free: once the FIFO is gone the next edit is served
        (agents / "tests" / "desk.yaml").unlink()
        write(agents / "desk.yaml", spec("You are the desk v3.", fake_openai.base_url))
        serve.wait_for(lambda: serve.agent("desk")["generation"] > 1, message="v3 applied")


class NotHttp:
    """A receiver that answers every request with a line that is not HTTP: aiohttp's
    error then names the URL it posted to (``ClientResponseError ..., url='...'``)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


def test_credentials_in_a_webhook_url_never_reach_serves_log_or_the_dead_letter_record(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    env = {"HOOK_SIGNING": "whsec_" + base64.b64encode(b"report-signing-key-0123456789").decode(),
           # names no credential pattern knows (*_PASSWORD, *_TOKEN...): only their use in the file makes them secret
           "HOOK_PW": "pw-from-variable-4471", "HOOK_KEY": "key from/variable é+2"}
    redirecting = WebhookReceiver(free_port(), statuses=[302], redirect_to="http://127.0.0.1:1/elsewhere").start()
    garbage = NotHttp()
    write(agents / "desk.yaml", spec("hi", fake_openai.base_url))
    reports = tmp_path / "reports.yaml"
    write(reports, "apiVersion: voice-runtime/v1\nreports:\n" + "".join(
        f"  - webhook: {json.dumps({'url': url, 'secret': '${HOOK_SIGNING}', 'timeout_s': 5})}\n" for url in (
            f"http://hook:${{HOOK_PW}}@127.0.0.1:{redirecting.port}/hooks/calls?token=literal-token-0077",
            f"http://lit:literal-pass-0088@127.0.0.1:{garbage.port}/in?key=${{HOOK_KEY}}")))
    spool = tmp_path / "spool"
    try:
        with Serve(agents, "--reports", str(reports), "--report-spool", str(spool), env=env) as serve:
            serve.wait_ready()
            code, answer = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["hello"]}', timeout=90)
            assert code == 200, answer
            serve.wait_for(lambda: "could not be delivered" in serve.output(), message="the redirect dead-lettered")
            serve.wait_for(lambda: "not delivered to" in serve.output(), message="the garbage answer retried")
            output = serve.output()
    finally:
        redirecting.stop()
        garbage.close()
    assert f"could not be delivered to http://127.0.0.1:{redirecting.port}/hooks/calls: HTTP 302" in output
    assert f"not delivered to http://127.0.0.1:{garbage.port}/in (attempt 1): ClientResponseError" in output
    [dead] = [json.loads(p.read_text()) for p in (spool / "dead").iterdir()]
    pending = [json.loads(p.read_text()) for p in (spool / "pending").iterdir()]
    said = output + json.dumps([dead["last_error"], *(p["last_error"] for p in pending)])
    for secret in ("pw-from-variable-4471", "literal-pass-0088", "literal-token-0077", "key from/variable",
                   "key+from/variable", "key%20from", "key+from%2Fvariable"):
        assert secret not in said, secret


def _worst_healthz(serve: Serve, probes: int = 40) -> float:
    """The slowest of ``probes`` /healthz answers, 0.1 s apart (over several of the
    deliverer's half-second polls)."""
    worst = 0.0
    for _ in range(probes):
        started = time.perf_counter()
        assert serve.get("/healthz")[0] == 200
        worst = max(worst, time.perf_counter() - started)
        time.sleep(0.1)
    return worst


def test_a_backlog_of_thousands_of_undelivered_reports_neither_stalls_the_operator_port_nor_delays_a_due_one(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    # a receiver down for a day: 6,000 entries (~120 MB) waiting for their next attempt
    secret = "whsec_" + base64.b64encode(b"report-signing-key-0123456789").decode()
    receiver = WebhookReceiver(free_port()).start()
    write(agents / "desk.yaml", spec("hi", fake_openai.base_url))
    spool = tmp_path / "spool"
    try:
        with Serve(agents, "--report-spool", str(spool)) as serve:
            serve.wait_ready()
            baseline = _worst_healthz(serve)
            later = time.time() + 3600
            transcript = [{"role": "caller", "text": "x" * 200, "at": 0.0, "interrupted": False}] * 80
            for n in range(6000):
                entry = {"id": f"msg_backlog{n}", "attempts": 9, "created_at": time.time(), "next_at": later,
                         "last_error": "ClientConnectorError", "report": {"id": f"msg_backlog{n}", "transcript": transcript},
                         "target": {"webhook": {"url": "http://127.0.0.1:1/down", "secret": secret, "timeout_s": 5}}}
                write(spool / "pending" / f"msg_backlog{n}.0.json", json.dumps(entry))
            serve.wait_for(lambda: serve.metric("voice_runtime_reports_pending") == 6000, message="the backlog seen")
            # parsing every entry at every poll blocked serve's loop 2 s of every 2.5 s
            worst = _worst_healthz(serve)
            assert worst < 3 * baseline + 0.5, f"/healthz took {worst:.2f} s with the backlog, {baseline:.2f} s without"
            due = {"id": "msg_due", "attempts": 0, "created_at": time.time(), "next_at": 0, "last_error": None,
                   "report": {"id": "msg_due"}, "target": {"webhook": {"url": receiver.url, "secret": secret}}}
            write(spool / "pending" / "msg_due.0.json", json.dumps(due))
            serve.wait_for(lambda: [r.headers["webhook-id"] for r in receiver.delivered()] == ["msg_due"],
                           message="the due report delivered amid the backlog")
    finally:
        receiver.stop()
        shutil.rmtree(spool, ignore_errors=True)


def test_a_fifo_named_as_a_specs_tool_lock_approves_no_tool_and_never_hangs(tmp_path: Path, agents: Path) -> None:
    # the lock is read wherever a tool plan is made: check, tools, call, each call's job and serve's gateway
    command, args = stdio_command(record=tmp_path / "calls.jsonl", name="weather")
    write(agents / "desk.yaml", TEXT_AGENT + f"mcp_servers:\n  weather: {json.dumps({'command': command, 'args': args})}\n")
    os.mkfifo(agents / "desk.tools.lock")

    result = run_cli("check", agents, "--format", "json", timeout=45)

    assert result.rc == 0, result.output
    report = json.loads(result.stdout)
    [server] = report["mcp_servers"]
    assert server["reachable"] and server["tools"] == [], server  # nothing approved: the lock is unreadable
    assert all("withheld: new since the tool lock was written" in w["message"] for w in report["warnings"])
    assert report["warnings"], report


def test_checks_summary_of_the_phone_lines_names_the_first_rules_and_numbers_and_counts_the_rest(agents: Path) -> None:
    # 40 files of 1,000 rules each made the summary one line of 1 MB
    write(agents / "desk.yaml", TEXT_AGENT)
    numbers = [f"+1415555{n:04d}" for n in range(20)]
    rules = {"wide": {"numbers": numbers[:7], "agent": "desk"},
             **{f"r{n}": {"numbers": [numbers[n]], "agent": "desk"} for n in range(7, 20)}}
    write(agents / "telephony" / "lines.yaml", json.dumps({
        "apiVersion": "voice-runtime/v1", "inbound_trunks": {"in": {"numbers": numbers}}, "dispatch_rules": rules}))

    result = run_cli("check", "--offline", agents)

    assert result.rc == 0, result.output
    [summary] = [line for line in result.stdout.splitlines() if line.startswith("phone lines:")]
    assert summary == ("phone lines: 1 inbound trunk(s), 0 outbound trunk(s), 14 dispatch rule(s): "
                       "+14155550000, +14155550001, +14155550002, +14155550003, +14155550004, and 2 more number(s) "
                       "-> desk, " + ", ".join(f"{numbers[n]} -> desk" for n in range(7, 16)) + ", and 4 more rule(s)")


def test_a_lone_surrogate_in_a_spec_is_an_error_at_its_position_and_chat_never_crashes_on_one(agents: Path) -> None:
    # JSON and YAML escapes can write half of a character; check took "\udfff", then chat crashed printing it
    write(agents / "desk.yaml", TEXT_AGENT + 'greeting: "hello \\udfff there"\n')

    checked = run_cli("check", "--offline", agents)
    chatted = run_cli("chat", agents, "-a", "desk", timeout=60)

    message = "holds a lone surrogate (a \\ud800-\\udfff escape, or bytes of an environment variable that are not UTF-8)"
    assert checked.rc == 1 and f"{agents / 'desk.yaml'}:6:11: greeting: {message}" in checked.stdout, checked.output
    assert chatted.rc == 1 and message in chatted.output, chatted.output
    assert "Traceback" not in checked.output + chatted.output


def test_a_lone_surrogate_from_a_caller_refuses_its_context_value_and_is_replaced_in_a_turn(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    # dispatch metadata is JSON, which may escape half a character: every LLM request of the call failed on it
    write(agents / "desk.yaml", spec("You help ${call.caller}.", fake_openai.base_url)
          + "context:\n  caller: {from: 'dispatch:caller'}\n")
    with Serve(agents) as serve:
        serve.wait_ready()
        code, refused = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["hi"], "context": {"caller": "a\\udfffb"}}',
                                   timeout=90)
        assert refused["refused"] == "invalid", refused
        assert refused["error"] == "call refused: call context caller is not text: it holds a lone surrogate"
        assert serve.metric('voice_runtime_calls_refused_total{agent="desk",reason="invalid"}') == 1.0
        code, answered = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["hi \\ud800 there"], '
                                                        b'"context": {"caller": "Ann"}}', timeout=90)
        assert code == 200 and answered["ok"], answered
        assert fake_openai.chat_requests[-1]["messages"][-1]["content"] == "hi \ufffd there"
        assert "Traceback" not in serve.output()


def test_a_spool_that_cannot_be_written_keeps_the_retry_backoff_and_logs_one_line_per_attempt(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    # a full volume (the emptyDir's sizeLimit): retries could not be recorded, so the entry was due
    # again at every half-second poll, its receiver hammered and the log given a traceback each time
    secret = "whsec_" + base64.b64encode(b"report-signing-key-0123456789").decode()
    receiver = WebhookReceiver(free_port(), statuses=[500] * 1000).start()
    write(agents / "desk.yaml", spec("hi", fake_openai.base_url)
          + f"reports: [{{webhook: {{url: '{receiver.url}', secret: '${{HOOK_SIGNING}}'}}}}]\n")
    spool = tmp_path / "spool"
    try:
        with Serve(agents, "--report-spool", str(spool), env={"HOOK_SIGNING": secret}) as serve:
            serve.wait_ready()
            # the report is spooled before the answer; then the spool's writes fail as on a full disk
            code, answer = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["hello"]}', timeout=90)
            assert code == 200, answer
            shutil.rmtree(spool / "tmp")
            (spool / "tmp").write_text("not a folder: every durable write of the spool fails")
            serve.wait_for(lambda: "cannot record the delivery attempt" in serve.output(), message="the failed write")
            first = len(receiver.received)
            time.sleep(6)  # backoff 1, 2, 4 s: at most 3 more attempts; every poll was 12
            output = serve.output()
    finally:
        receiver.stop()
    assert len(receiver.received) - first <= 4, len(receiver.received) - first
    assert "Traceback" not in output and "call report delivery failed" not in output
    assert f"the spool {spool} cannot record the delivery attempt (File exists); the next attempt waits" in output


def test_the_junit_file_stays_well_formed_xml_when_a_case_or_a_reply_holds_control_characters(
    tmp_path: Path, agents: Path
) -> None:
    # XML 1.0 cannot carry \x01 or ESC at all: one made CI's parser reject the whole file
    write(agents / "desk.yaml", TEXT_AGENT)
    write(agents / "tests" / "desk.yaml", """apiVersion: voice-runtime/v1
agent: desk
cases:
  - name: "colours \\x1b[31m and \\x01"
    script: [{say: "bad \\x01\\x0b\\x1b[2J reply"}]
    turns: [{user: "hi \\x07", expect: [{reply_contains: "nope"}]}]
""")
    junit = tmp_path / "junit.xml"

    result = run_cli("test", agents, "--junit", junit, timeout=120)

    assert result.rc == 1, result.output
    case = ElementTree.parse(junit).find(".//testcase")
    assert case is not None and case.get("name") == "colours \\x1b[31m and \\x01"
    failure = case.find("failure")
    assert failure is not None and "reply 'bad \\x01\\x0b\\x1b[2J reply'" in (failure.text or "")
