"""Browser calls (`serve` with no LiveKit, GET /talk/<agent>): Debian's chromium driven
by playwright, with a fake microphone playing espeak-ng speech, talks to a real serve
(process executor: each call a job process) whose agent uses the fakes of tests/fakes
as providers and the recorder MCP server for its tool.

The tests that need serve's browser options and no other share one serve (``served``,
see docs/architecture.md "Tests"), each with agents of its own; a test with other
options (a call cap, another host, a token) or that stops serve keeps its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from fakes import espeak
from fakes.cartesia import FakeCartesia
from fakes.deepgram import FakeDeepgram
from fakes.openai_chat import FakeOpenAI
from helpers import require_tool, write
from mcp_servers.harness import read_records, stdio_command
from serve_harness import Serve

pytestmark = pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng")

NO_LIVEKIT = {"LIVEKIT_URL": None, "LIVEKIT_API_KEY": None, "LIVEKIT_API_SECRET": None}
# serve for browser calls alone (no LiveKit), with an idle job process ready for the next call;
# no OPENAI_API_KEY, so an agent whose spec has no key is blocked
SHARED_SERVE_ARGS = ("--idle-processes", "1")
SHARED_SERVE_ENV = {**NO_LIVEKIT, "OPENAI_API_KEY": None}
SHARED_SERVE_UNREGISTERED = False
QUESTION = "what time is it in Tokyo"


@pytest.fixture
def speech_fakes() -> Iterator[dict[str, Any]]:
    fakes = {"chat": FakeOpenAI(), "deepgram": FakeDeepgram("What time is it in Tokyo?"), "cartesia": FakeCartesia()}
    for fake in fakes.values():
        fake.start_in_thread()
    yield fakes
    for fake in fakes.values():
        fake.stop_thread()


def clock_server(tmp: Path) -> tuple[Path, str]:
    """The recorder MCP server with a get_time tool; (its record file, the spec's block)."""
    record, extra = tmp / "calls.jsonl", tmp / "extra-tools.json"
    extra.write_text(json.dumps({"get_time": "The local time in a city."}))
    command, args = stdio_command(record=record, name="clock", extra_tools=extra)
    return record, f"mcp_servers:\n  clock: {json.dumps({'command': command, 'args': args})}\n"


def voice_spec(fakes: dict[str, Any], servers: str) -> str:
    return (
        "apiVersion: voice-runtime/v1\ninstructions: You are the front desk.\npipeline:\n"
        f"  stt: {{provider: deepgram, base_url: '{fakes['deepgram'].listen_url}', api_key: k}}\n"
        f"  llm: {{provider: openai, base_url: '{fakes['chat'].base_url}', api_key: k}}\n"
        f"  tts: {{provider: cartesia, base_url: '{fakes['cartesia'].root_url}', api_key: k, voice: v}}\n"
        "  vad: {provider: silero}\n" + servers)


def text_spec(chat: FakeOpenAI, servers: str = "") -> str:
    return ("apiVersion: voice-runtime/v1\ninstructions: You are the front desk.\n"
            f"pipeline: {{llm: {{provider: openai, base_url: '{chat.base_url}', api_key: k}}, text_only: true}}\n"
            + servers)


def caller_wav(tmp: Path) -> Path:
    """The caller's speech with silence around it (chromium loops the file: the
    silence after it is the agent's time to answer)."""
    rate = 16000
    path = tmp / "caller.wav"
    espeak.write_wav(path, espeak.silence(0.5, rate) + espeak.speak(QUESTION, rate) + espeak.silence(8.0, rate), rate)
    return path


class Browser:
    """Headless chromium whose microphone plays ``wav`` (permission granted); with
    ``microphone=False`` it has none, as a machine without an audio input."""

    def __init__(self, wav: Path | None = None, *, microphone: bool = True) -> None:
        from playwright.sync_api import sync_playwright

        chromium = require_tool("chromium", "apt-get install chromium")
        args = ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream", *(["--use-fake-device-for-media-stream"] if microphone else [])]
        if wav is not None:
            args.append(f"--use-file-for-fake-audio-capture={wav}")
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=chromium, args=args)
        self.context = self.browser.new_context(permissions=["microphone"])

    def open(self, url: str) -> Any:
        page = self.context.new_page()
        page.goto(url)
        return page

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()


def wait_until(page: Any, what: str, timeout_s: float = 60.0) -> Any:
    """Until the JavaScript expression ``what`` is truthy in the page."""
    page.wait_for_function(what, timeout=timeout_s * 1000)
    return page.evaluate(what)


def test_a_spoken_question_in_the_browser_reaches_the_tool_and_the_agent_answers_aloud_on_the_page(
    tmp_path: Path, served: Serve, speech_fakes: dict[str, Any]
) -> None:
    serve = served
    record, servers = clock_server(tmp_path)
    write(serve.agents / "spoken.yaml", voice_spec(speech_fakes, servers))
    speech_fakes["chat"].use_tool_then_answer("get_time", {"text": "Tokyo"})
    serve.wait_agent("spoken")
    browser = Browser(caller_wav(tmp_path))
    assert f"talk to an agent in a browser at http://127.0.0.1:{serve.port}/talk/" in serve.whole_output()
    try:
        page = browser.open(serve.url("/talk/spoken?autostart=1"))
        page.locator("[data-testid=turn][data-speaker=agent]").first.wait_for(timeout=90_000)
        caller = page.locator("[data-testid=turn][data-speaker=caller]").first.inner_text()
        tool = page.locator("[data-testid=tool-call][data-tool=get_time]").first
        agent = page.locator("[data-testid=turn][data-speaker=agent]").first.inner_text()
        outcome = tool.get_attribute("data-outcome")
        tool_text = tool.inner_text()
        # the agent's voice reached the page's loudspeaker (the analyser on its playback)
        peak = wait_until(page, "talk.peak > 0.05 && talk.peak")

        # a typed turn, while the call goes on
        page.get_by_test_id("text-input").fill("and what about Paris?")
        page.get_by_test_id("text-input").press("Enter")
        page.locator("[data-testid=turn][data-speaker=caller]", has_text="and what about Paris?").wait_for()
        pid = int(page.evaluate("talk.pid"))
        assert psutil.pid_exists(pid)

        page.get_by_test_id("hangup").click()
        serve.wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                       timeout=30, message="the call's job process ended after the hang-up")
    finally:
        browser.close()
    assert "Tokyo" in caller, caller
    assert outcome == "ok" and '{"text":"Tokyo"}' in tool_text, tool_text
    assert "Result: Tokyo" in agent, agent
    assert peak > 0.05
    # the MCP server saw the spoken turn's call and the typed turn's
    assert [(r["tool"], r["args"]) for r in read_records(record)][:2] == [("get_time", {"text": "Tokyo"})] * 2


def test_a_browser_without_a_microphone_is_told_the_text_box_still_works_and_the_status_line_follows_the_call(
    served: Serve, speech_fakes: dict[str, Any]
) -> None:
    serve = served
    write(serve.agents / "typed.yaml", voice_spec(speech_fakes, ""))
    serve.wait_agent("typed")
    browser = Browser(microphone=False)
    try:
        page = browser.open(serve.url("/talk/typed?autostart=1"))
        wait_until(page, "talk.pid")
        alert = page.get_by_test_id("alert").inner_text()
        page.get_by_test_id("text-input").fill("hello there")
        page.get_by_test_id("text-input").press("Enter")
        page.locator("[data-testid=turn][data-speaker=agent]", has_text="echo: hello there").wait_for()
        wait_until(page, "talk.said.at(-1).startsWith('Your turn')")
        page.get_by_test_id("hangup").click()
        said = page.evaluate("talk.said")
        status_line = page.get_by_test_id("status").inner_text()
    finally:
        browser.close()
    assert alert.startswith("The microphone is unavailable (NotFoundError"), alert
    assert "the text box below still works" in alert
    # the status line went from connecting to connected, followed the agent's turn, and ended
    assert said[:3] == ["Starting the call\u2026", "Connecting: starting a job process for the call\u2026",
                        "Connected: type your turns below (no microphone)."], said
    assert "The agent is speaking." in said and "Your turn: type it below." in said, said
    assert said[-1] == status_line == "You hung up."


def test_the_caller_talking_over_the_agent_in_the_browser_stops_it(
    tmp_path: Path, served: Serve, speech_fakes: dict[str, Any]
) -> None:
    from fakes.openai_chat import text

    serve = served
    write(serve.agents / "barge.yaml", voice_spec(speech_fakes, ""))
    long_answer = "Tokyo is nine hours ahead of London, " * 6
    # every turn gets the long answer: under load the speech may reach the model as two
    # turns (or a preemptive one), and a queued single answer went to a turn cut unseen
    speech_fakes["chat"].script = lambda request: text(long_answer)
    rate = 16000
    wav = tmp_path / "barge-in.wav"
    question = espeak.speak(QUESTION, rate)
    # the caller asks, waits for the answer to begin, and asks again over it
    espeak.write_wav(wav, espeak.silence(0.5, rate) + question + espeak.silence(3.0, rate) + question
                     + espeak.silence(15.0, rate), rate)
    serve.wait_agent("barge")
    browser = Browser(wav)
    try:
        page = browser.open(serve.url("/talk/barge?autostart=1"))
        page.locator("[data-testid=turn][data-speaker=agent].interrupted").first.wait_for(timeout=90_000)
        cut = page.locator("[data-testid=turn][data-speaker=agent].interrupted").first.inner_text()
        cleared = page.evaluate("talk.cleared")
    finally:
        browser.close()
    # the long answer is marked as cut short on the page (livekit's interrupted reply)
    assert cut.startswith("barge Tokyo is nine hours ahead"), cut
    assert cleared >= 1  # the page dropped the agent's audio it still held


def test_a_second_tab_beyond_max_browser_calls_is_refused_with_the_reason_and_may_call_after_a_hang_up(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", text_spec(fake_openai))
    browser = Browser()
    with Serve(agents, "--idle-processes", "1", "--max-browser-calls", "1", env=NO_LIVEKIT,
               unregistered=False) as serve:
        serve.wait_ready()
        try:
            first = browser.open(serve.url("/talk/desk?autostart=1"))
            wait_until(first, "talk.pid")
            assert "text-only" in first.locator("#notice").inner_text()
            first.get_by_test_id("text-input").fill("hello there")
            first.get_by_test_id("text-input").press("Enter")
            first.locator("[data-testid=turn][data-speaker=agent]", has_text="echo: hello there").wait_for()

            second = browser.open(serve.url("/talk/desk"))
            second.get_by_test_id("start").click()
            wait_until(second, "document.body.dataset.refused")
            refused = second.locator("#notice").inner_text()
            status = second.evaluate("document.body.dataset.refused")

            first.get_by_test_id("hangup").click()
            pid = int(first.evaluate("talk.pid"))
            serve.wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                           timeout=30, message="the first call's job process ended")
            serve.wait_for(lambda: serve.status()["agents"][0]["sessions_active"] == 0, message="no session left")
            second.get_by_test_id("start").click()
            second_pid = wait_until(second, "talk.pid")
        finally:
            browser.close()
    assert status == "429"
    assert "429: 1 browser call(s) in progress or about to start: at most 1 at once (serve --max-browser-calls)" in refused, refused
    assert second_pid != pid


def _non_loopback_ipv4() -> str:
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family.name == "AF_INET" and not addr.address.startswith("127."):
                return addr.address
    raise AssertionError("this test needs a non-loopback IPv4 address on the machine")


def _request(url: str, *, method: str = "GET", token: str | None = None, data: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, str]:
    return _answer(url, method=method, token=token, data=data, headers=headers)[:2]


def _answer(url: str, *, method: str = "GET", token: str | None = None, data: bytes = b"",
            headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    """(status, body, response headers)."""
    req = urllib.request.Request(url, method=method, data=data if method == "POST" else None,
                                 headers={**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def test_browser_calls_from_another_host_need_talk_from_and_the_token_and_bad_pages_say_why(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    ip = _non_loopback_ipv4()
    write(agents / "desk.yaml", text_spec(fake_openai))
    # no api_key in the spec and none in the environment
    write(agents / "keyless.yaml", "apiVersion: voice-runtime/v1\ninstructions: x\n"
                                   "pipeline: {llm: {provider: openai}, text_only: true}\n")
    token = "talk-token-5d1e0c7a9b"
    env = {**NO_LIVEKIT, "OPENAI_API_KEY": None, "TALK_TOKEN": token}
    with Serve(agents, "--http-host", "0.0.0.0", env=env, unregistered=False) as loopback_only:
        loopback_only.wait_ready()
        remote = f"http://{ip}:{loopback_only.port}"
        page_code, page = _request(f"{remote}/talk/desk")
        call_code, call = _request(f"{remote}/talk/desk/calls", method="POST")
        local_code, _ = _request(loopback_only.url("/talk/desk"))
        unknown_code, unknown = _request(loopback_only.url("/talk/nope"))
        keyless_code, keyless = _request(loopback_only.url("/talk/keyless"))
    assert (page_code, call_code, local_code) == (403, 403, 200)
    assert "accepted from this machine only" in page and "--talk-from" in json.loads(call)["error"]
    assert unknown_code == 404 and "Agents: desk, keyless." in unknown
    assert keyless_code == 200 and "OPENAI_API_KEY" in keyless and '"blocked": true' in keyless

    with Serve(agents, "--http-host", "0.0.0.0", "--talk-from", f"{ip}/32", "--talk-token", "${TALK_TOKEN}",
               env=env, unregistered=False) as allowed:
        allowed.wait_ready()
        remote = f"http://{ip}:{allowed.port}"
        without = _request(f"{remote}/talk/desk/calls", method="POST")
        wrong = _request(f"{remote}/talk/desk/calls", method="POST", token="not-the-token-at-all")
        with_token = _request(f"{remote}/talk/desk/calls", method="POST", token=token)
        page_with_token = _request(f"{remote}/talk/desk?token={token}")[0]
        assert token not in allowed.output()
    assert without[0] == 403 and "${TALK_TOKEN}" in json.loads(without[1])["error"]
    assert wrong[0] == 403
    assert with_token[0] == 201 and json.loads(with_token[1])["socket"].startswith("/talk/desk/calls/")
    assert page_with_token == 200


def test_while_serve_drains_a_browser_call_goes_on_and_new_calls_are_told_serve_is_stopping(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", text_spec(fake_openai))
    browser = Browser()
    with Serve(agents, "--idle-processes", "1", env=NO_LIVEKIT, unregistered=False) as serve:
        serve.wait_ready()
        try:
            call = browser.open(serve.url("/talk/desk?autostart=1"))
            wait_until(call, "talk.pid")
            ticket = serve.post("/talk/desk/calls", b"")  # reserved before the stop signal
            serve.proc.send_signal(signal.SIGTERM)
            serve.wait_for(lambda: "stopping: draining" in serve.output(), message="the drain began")
            page = _answer(serve.url("/talk/desk"))
            reserve = _answer(serve.url("/talk/desk/calls"), method="POST")
            socket = _answer(serve.url(ticket[1]["socket"]))
            desk = serve.agent("desk")
            status_page = serve.get("/")[1]
            # the call in progress goes on
            call.get_by_test_id("text-input").fill("still there?")
            call.get_by_test_id("text-input").press("Enter")
            call.locator("[data-testid=turn][data-speaker=agent]", has_text="echo: still there?").wait_for()
            # a page opened now cannot start a call either
            late = browser.open(serve.url("/talk/desk"))
            late_text = late.locator("body").inner_text()
            call.get_by_test_id("hangup").click()
            rc = serve.proc.wait(60)
        finally:
            browser.close()
    assert ticket[0] == 201
    assert page[0] == 503 and page[2]["Retry-After"] == "10", page
    assert "serve is stopping: the calls in progress may finish, and no new call starts here" in page[1]
    assert "No agent named" not in page[1]
    for code, body, headers in (reserve, socket):
        assert code == 503 and headers["Retry-After"] == "10"
        assert json.loads(body)["error"].startswith("serve is stopping"), body
    assert "Serve is stopping" in late_text and "try again in a moment" in late_text.lower()
    # /status shows the agent as it is: draining its one call, not ready
    assert (desk["state"], desk["ready"], desk["draining"], desk["sessions_active"]) == ("draining", False, True, 1)
    assert "draining</span> (1 call(s) in progress; takes no new call)" in status_page
    assert rc == 0


def test_talk_from_without_a_token_and_a_literal_token_are_usage_errors(agents: Path) -> None:
    from helpers import run_cli

    write(agents / "desk.yaml", "apiVersion: voice-runtime/v1\ninstructions: x\n"
                                "pipeline: {llm: {provider: openai, api_key: k}, text_only: true}\n")
    no_token = run_cli("serve", agents, "--talk-from", "10.0.0.0/8", env=NO_LIVEKIT)
    literal = run_cli("serve", agents, "--talk-from", "10.0.0.0/8", "--talk-token", "hunter2hunter2hunter2", env=NO_LIVEKIT)
    bad_net = run_cli("serve", agents, "--talk-from", "tenth-floor", env=NO_LIVEKIT)
    assert no_token.rc == literal.rc == bad_net.rc == 2
    assert no_token.stderr.strip() == ("error: --talk-from needs --talk-token '${VAR}': callers from other hosts "
                                       "spend your provider keys, so they must give the token")
    assert "--talk-token takes a ${VAR}" in literal.stderr and "hunter2" not in literal.stderr
    assert "--talk-from 'tenth-floor' is not a network" in bad_net.stderr
    assert "Traceback" not in no_token.output + literal.output + bad_net.output


def test_another_sites_page_cannot_start_calls_or_read_serve_through_a_renamed_host(
    served: Serve, fake_openai: FakeOpenAI
) -> None:
    """A page the operator visits can make the browser POST to 127.0.0.1 (a "simple"
    request needs no preflight) and, through DNS rebinding, read the answers under
    its own host name: both are refused; serve's own page and non-browser clients are not."""
    serve = served
    write(serve.agents / "site.yaml", text_spec(fake_openai))
    write(serve.agents / "site-keyless.yaml", "apiVersion: voice-runtime/v1\ninstructions: x\n"
                                              "pipeline: {llm: {provider: openai}, text_only: true}\n")
    serve.wait_agent("site")
    serve.wait_for(lambda: serve.agent("site-keyless"), message="site-keyless served (blocked: no key)")
    own = f"http://127.0.0.1:{serve.port}"
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    body = json.dumps({"agent": "site", "turns": ["from another site"]}).encode()
    simulate_cross = _request(serve.url("/simulate"), method="POST", data=body, headers=evil)
    call_cross = _request(serve.url("/talk/site/calls"), method="POST", headers=evil)
    call_null = _request(serve.url("/talk/site/calls"), method="POST", headers={"Origin": "null"})
    rebound = _request(serve.url("/status"), headers={"Host": f"attacker.example:{serve.port}"})
    rebound_call = _request(serve.url("/talk/site/calls"), method="POST",
                            headers={"Host": f"attacker.example:{serve.port}",
                                     "Origin": f"http://attacker.example:{serve.port}"})
    own_page = _request(serve.url("/talk/site/calls"), method="POST", headers={"Origin": own})
    by_name = _request(serve.url("/status"), headers={"Host": f"localhost:{serve.port}"})
    keyless = _request(serve.url("/talk/site-keyless/calls"), method="POST", headers={"Origin": own})
    log = serve.output()
    assert simulate_cross[0] == 403 and "another site" in json.loads(simulate_cross[1])["error"]
    assert call_cross[0] == 403 and call_null[0] == 403
    assert rebound[0] == 403 and "not a name of this machine" in json.loads(rebound[1])["error"]
    assert rebound_call[0] == 403
    assert "from another site" not in json.dumps(fake_openai.chat_requests)  # no call ran
    assert own_page[0] == 201 and by_name[0] == 200
    # an agent whose keys are missing is refused before a job starts, naming the key
    assert keyless[0] == 409 and "OPENAI_API_KEY" in json.loads(keyless[1])["error"]
    assert "refused: a request from the page of another site" in log


def test_a_talk_token_read_from_a_mounted_secret_with_its_newline_is_accepted_as_a_bearer_token(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    ip = _non_loopback_ipv4()
    write(agents / "desk.yaml", text_spec(fake_openai))
    token = "talk-token-5d1e0c7a9b"
    env = {**NO_LIVEKIT, "TALK_TOKEN": token + "\n"}
    with Serve(agents, "--http-host", "0.0.0.0", "--talk-from", f"{ip}/32", "--talk-token", "${TALK_TOKEN}",
               env=env, unregistered=False) as serve:
        serve.wait_ready()
        code, answer = _request(f"http://{ip}:{serve.port}/talk/desk/calls", method="POST", token=token)
        with_newline = _request(f"http://{ip}:{serve.port}/talk/desk?token={token}%0A")[0]
        assert token not in serve.output()
    assert code == 201, answer
    assert with_newline == 403
