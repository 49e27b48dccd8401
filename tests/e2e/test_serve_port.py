"""The operator port of a real `voice-runtime serve` process under hostile and
careless clients: half-sent requests, bad /simulate bodies, too many simulated
calls, callers from other hosts; and `POST /simulate?wait=1` as an operator's
smoke test (the real openai plugin against the fake LLM, a real MCP server).

The tests that take serve's default options share one (``served``, docs/architecture.md
"Tests"): they send it requests and read what it answers and logs from their own start
(open files, log size), each with agents of its own. A test with other options (another
executor, another host) keeps its own serve, and so does the malformed-requests one: its
one line per 10 s is serve-wide, so an earlier test's bad request would hide it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from fakes.openai_chat import FakeOpenAI
from helpers import write
from mcp_servers.harness import read_records, stdio_command
from serve_harness import Serve, spec

from voice_runtime.serve.http import IDLE_TIMEOUT_S, MAX_CONNECTIONS
from voice_runtime.serve.simulate import MAX_CONCURRENT, MAX_GAP_S, MAX_TURNS

FLOOD = MAX_CONNECTIONS + 150  # more half-sent requests than the port keeps open


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _healthz_within(serve: Serve, seconds: float) -> bool:
    with urllib.request.urlopen(serve.url("/healthz"), timeout=seconds) as r:
        return r.status == 200 and r.read() == b"ok\n"


def _settled_fds(pid: int) -> int:
    """serve's open files once start-up is over (the job pool and the MCP gateway open
    theirs just after /readyz first says 200)."""
    last, deadline = _fds(pid), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _fds(pid)
        if now == last:
            return now
        last = now
    return last


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except (BlockingIOError, TimeoutError):
        return False


def test_half_sent_requests_neither_stop_healthz_nor_pile_up_and_are_closed_after_the_idle_timeout(
    served: Serve,
) -> None:
    serve = served
    socks: list[socket.socket] = []
    before = _settled_fds(serve.proc.pid)
    log_size = len(serve.output())
    try:
        for i in range(FLOOD):
            sock = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # the head never ends
            socks.append(sock)
            if i % 100 == 99:
                assert _healthz_within(serve, 1.0)
        flooded_at = time.monotonic()
        for _ in range(5):
            assert _healthz_within(serve, 1.0)
        # the port keeps at most MAX_CONNECTIONS open: the oldest idle ones went first
        assert _fds(serve.proc.pid) - before <= MAX_CONNECTIONS + 5
        for sock in socks:
            sock.settimeout(0)
        evicted = sum(_closed_by_server(s) for s in socks)
        assert evicted >= FLOOD - MAX_CONNECTIONS
        for sock in socks:
            sock.settimeout(max(0.1, flooded_at + IDLE_TIMEOUT_S + 3 - time.monotonic()))
        # every one of them is closed once it has been idle for IDLE_TIMEOUT_S
        assert all(_closed_by_server(s) for s in socks)
    finally:
        for sock in socks:
            sock.close()
    assert _healthz_within(serve, 1.0)
    flood_log = serve.output()[log_size:]
    assert len(flood_log) < 2000, flood_log[:2000]
    assert "Too many open files" not in flood_log


BAD_BODIES = [
    (b'{"agent": ["x"]}', '"agent" must be a non-empty string (an agent name), not ["x"]'),
    (b'{"agent": "desk", "turns": 5}', '"turns" must be a list of strings (what the caller says), not 5'),
    (b'{"agent": "desk", "turns": ["hi", 3]}', '"turns" must be a list of strings'),
    (b'{"agent": "desk", "gap_s": "abc"}', f'"gap_s" must be a number of seconds from 0 to {MAX_GAP_S:g}, not "abc"'),
    (b'{"agent": "desk", "gap_s": 1e9}', '"gap_s" must be a number of seconds from 0 to 60, not 1000000000.0'),
    (b'{"agent": "desk", "gap_s": NaN}', '"gap_s" must be a number of seconds from 0 to 60, not NaN'),
    (b'{"agent": "desk", "gap_s": -1}', '"gap_s" must be a number of seconds'),
    (b'{"agent": "desk", "gap_s": true}', '"gap_s" must be a number of seconds'),
    (json.dumps({"agent": "desk", "turns": ["hi"] * (MAX_TURNS + 1)}).encode(), f'"turns" has {MAX_TURNS + 1} entries; at most {MAX_TURNS}'),
    (json.dumps({"agent": "desk", "turns": ["hi"] * 11, "gap_s": 60}).encode(), "11 turns 60s apart would last over 300s"),
    (json.dumps({"agent": "desk", "turns": ["x" * 4001]}).encode(), '"turns"[0] must be non-blank text of at most 4000 characters'),
    (b'{"agent": "desk", "turns": ["  "]}', '"turns"[0] must be non-blank text'),
    (b'{"agent": "desk", "room": "../../etc"}', '"room" must be 1-64 letters, digits'),
    (b'{"agent": "desk", "wait": "yes"}', '"wait" must be true or false, not "yes"'),
    (b'{"agent": "desk", "max_call_s": 0}', '"max_call_s" must be a number of seconds above 0, at most 300, not 0'),
    (b'{"agent": "desk", "max_call_s": 301}', '"max_call_s" must be a number of seconds above 0, at most 300'),
    (b'{"agent": "desk", "turn": ["hi"]}', "unknown field(s) 'turn'; valid: agent, turns, gap_s, room, wait"),
    (b'["desk"]', "body must be a JSON object"),
    (b"", "body must be a JSON object"),
    (b"agent=desk", "body is not JSON: Expecting value: line 1 column 1 (char 0)"),
    (b"[" * 8000 + b"]" * 8000, "the body is not JSON this endpoint takes (nested too deep)"),
    (b'{"agent": ' + b"[" * 900 + b"]" * 900 + b"}", "the body is not JSON this endpoint takes (nested too deep)"),
]


def test_every_bad_simulate_body_gets_400_with_the_reason_and_no_traceback(
    served: Serve, module_fake_openai: FakeOpenAI
) -> None:
    serve = served
    log_size = len(serve.output())
    for body, reason in BAD_BODIES:
        code, answer = serve.post("/simulate", body)
        assert (code, answer["ok"]) == (400, False), (body, answer)
        assert reason in answer["error"], (body, answer)
    code, answer = serve.post("/simulate?wait=maybe", b'{"agent": "desk"}')
    assert (code, answer["error"]) == (400, "wait='maybe': use wait=1 or wait=0")
    code, answer = serve.post("/simulate", b'{"agent": "nobody"}')
    assert (code, answer["error"]) == (404, "no agent named 'nobody' is serving")
    code, answer = serve.post("/simulate", b'{"agent": "desk", "turns": ["' + b"x" * 70_000 + b'"]}')
    assert (code, answer["error"]) == (413, "the body is over 65536 bytes")
    assert module_fake_openai.chat_requests == []  # no bad body started a job
    assert "Traceback" not in serve.output()[log_size:]
    assert "Error handling request" not in serve.output()[log_size:]


def test_simulated_calls_over_the_cap_are_refused_with_429(agents: Path, fake_openai: FakeOpenAI) -> None:
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    # thread executor: the cap is the same for both executors, and four job threads
    # are far lighter on a shared test machine than four job processes
    with Serve(agents, "--executor", "thread") as serve:
        serve.wait_ready()
        body = json.dumps({"agent": "desk", "turns": ["hello", "later"], "gap_s": 30}).encode()
        for _ in range(MAX_CONCURRENT):
            code, answer = serve.post("/simulate", body)
            assert code == 200, answer
        code, answer = serve.post("/simulate", body)
        assert code == 429
        assert answer["error"] == f"{MAX_CONCURRENT} simulated calls are running; at most {MAX_CONCURRENT} at once"
        serve.wait_for(lambda: len(fake_openai.chat_requests) == MAX_CONCURRENT, message="the calls' first turns")
        assert len(fake_openai.chat_requests) == MAX_CONCURRENT  # the refused call never ran


def _other_address() -> str | None:
    """An address of this machine that is not loopback: a peer connecting through
    it is, for serve, another host."""
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return addr.address
    return None


@pytest.mark.parametrize("allowed", [False, True], ids=["default", "simulate-from-anywhere"])
def test_simulate_is_refused_from_other_hosts_unless_the_operator_allows_it(
    agents: Path, fake_openai: FakeOpenAI, allowed: bool
) -> None:
    address = _other_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    flags = ["--http-host", "0.0.0.0", *(["--simulate-from-anywhere"] if allowed else [])]
    with Serve(agents, *flags) as serve:
        serve.wait_ready()
        body = b'{"agent": "desk", "turns": ["from afar"]}'
        code, answer = serve.post("/simulate", body, host=address)
        if allowed:
            assert code == 200, answer
        else:
            assert code == 403
            assert "only accepted from this machine" in answer["error"]
            assert "--simulate-from-anywhere" in answer["error"]
            assert serve.post("/simulate", body)[0] == 200  # from loopback it works


def test_simulate_wait_returns_the_transcript_and_the_tool_calls_the_mcp_server_received(
    tmp_path: Path, served: Serve, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    command, args = stdio_command(record=record, name="tools")
    write(served.agents / "smoke.yaml", spec("You are the desk.", fake_openai.base_url)
          + f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}\n")
    fake_openai.use_tool_then_answer("echo", {"text": "smoke"})
    serve = served
    generation = serve.wait_agent("smoke")["generation"]  # the serve's count of reloads: earlier tests' add to it
    code, report = serve.post("/simulate?wait=1", b'{"agent": "smoke", "turns": ["echo smoke"], "room": "smoke-1"}',
                              timeout=120)
    assert code == 200, report
    assert (report["ok"], report["agent"], report["room"], report["generation"], report["error"]) == (
        True, "smoke", "smoke-1", generation, None)
    [turn] = report["turns"]
    assert (turn["user"], turn["reply"], turn["error"]) == ("echo smoke", "Result: smoke", None)
    assert [(c["server"], c["tool"], c["arguments"], c["outcome"], c["result"]) for c in turn["tool_calls"]] == [
        ("tools", "echo", {"text": "smoke"}, "ok", "smoke")]
    assert [(r["tool"], r["args"]) for r in read_records(record)] == [("echo", {"text": "smoke"})]
    # the report went through serve's private folder and is gone once answered
    assert list(Path(p) for p in serve.agents.parent.glob("**/simulations/*.json")) == []
    # at the default level the log tells the call, not each HTTP request of the LLM client or
    # each file change watchfiles saw (new-user pass)
    assert "HTTP Request:" not in serve.output() and "change detected" not in serve.output()


def test_simulate_wait_reports_a_refused_session_as_an_error(served: Serve, fake_openai: FakeOpenAI) -> None:
    write(served.agents / "refused.yaml", spec("You are the desk.", fake_openai.base_url)
          + "mcp_servers:\n  billing: {command: /nonexistent/billing-mcp, required: true, connect_timeout: 2}\n")
    serve = served
    serve.wait_agent("refused")
    code, report = serve.post("/simulate", b'{"agent": "refused", "turns": ["hello"], "wait": true}', timeout=120)
    assert code == 502
    assert report["ok"] is False
    assert report["error"].startswith("required MCP server billing is unavailable: "
                                      "command not found: /nonexistent/billing-mcp"), report
    assert report["turns"] == []
    assert fake_openai.chat_requests == []


def test_malformed_requests_are_logged_once_per_interval_without_tracebacks(agents: Path, fake_openai: FakeOpenAI) -> None:
    """aiohttp logged each malformed request (an HTTP/2 preface, a header line over
    its limit) with a traceback at ERROR: 300 such connections wrote 164 KB in under
    a second."""
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url))
    with Serve(agents) as serve:
        serve.wait_ready()
        before = len(serve.output())
        bad = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"]
        for i in range(300):  # half of them hung up on at once
            with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as sock:
                with contextlib.suppress(OSError):
                    sock.sendall(bad[i % 2])
                if i % 2:
                    with contextlib.suppress(OSError):
                        sock.recv(1024)
        assert _healthz_within(serve, 1.0)
        logged = serve.output()[before:]
        assert "Traceback" not in logged
        assert logged.count("aiohttp.server") == 1, logged[-2000:]
        assert len(logged) < 2000


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(served: Serve) -> None:
    serve = served
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as sock:
        sock.sendall(b"POST /simulate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 99999999999\r\n\r\n{")
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert time.monotonic() - started < 2  # not after the body timeout
