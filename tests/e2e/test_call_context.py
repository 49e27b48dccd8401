"""Call context through a real `serve` (process executor): values a call carries reach
the prompt the model is sent, the pinned argument the MCP server receives (never
shown to the model), and the per-call credentials an HTTP MCP server sees; a call
missing a required value is refused, logged and counted; a secret value never
reaches the log."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.livekit_server import FakeLiveKit
from fakes.openai_chat import FakeOpenAI
from helpers import CLI, child_env, write
from mcp_servers.harness import read_records, read_requests, start_http_server, stdio_command
from serve_harness import Serve, spec

REFUSED = 'voice_runtime_calls_refused_total{agent="desk",reason="missing"}'


def _simulate(serve: Serve, context: dict[str, str], turns: list[str] | None = None, code: int = 200
              ) -> dict[str, Any]:
    answered, report = serve.post("/simulate", json.dumps(
        {"agent": "desk", "turns": turns or ["what is the weather?"], "wait": True, "context": context}).encode(),
        timeout=90)
    assert answered == code, report
    return report


def _system_prompts(fake: FakeOpenAI) -> list[str]:
    return [m["content"] for r in fake.chat_requests for m in r["messages"] if m["role"] in ("system", "developer")]


def test_context_reaches_the_prompt_and_a_pinned_argument_the_model_never_sees(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    command, args = stdio_command(record=record, name="weather")
    server = {"command": command, "args": args, "tools": {"get_weather": {"arguments": {"city": "${call.city}"}}}}
    write(agents / "desk.yaml", spec("You help ${call.caller}.", fake_openai.base_url)
          + "context:\n  caller: {from: 'participant:sip.phoneNumber', required: true}\n"
            "  city: {from: 'dispatch:city', pattern: '[A-Za-z ]+'}\n"
          + f"mcp_servers:\n  weather: {json.dumps(server)}\n")
    # the model tries to forge the pinned argument: the spec's value wins
    fake_openai.use_tool_then_answer("get_weather", {"city": "Atlantis"})
    with Serve(agents) as serve:
        serve.wait_ready()
        # a value holding ${...} is data: never expanded from the environment or the context
        report = _simulate(serve, {"caller": "Ann ${OPENAI_API_KEY} ${call.city}", "city": "Paris"})
        assert report["ok"], report
        assert report["turns"][0]["reply"] == "Result: sunny in Paris"
    assert any("You help Ann ${OPENAI_API_KEY} ${call.city}." in p for p in _system_prompts(fake_openai))
    assert [r["args"] for r in read_records(record)] == [{"city": "Paris"}]
    [tool] = [t for t in fake_openai.chat_requests[0]["tools"] if t["function"]["name"] == "get_weather"]
    assert "city" not in tool["function"]["parameters"].get("properties", {})
    assert "city" not in tool["function"]["parameters"].get("required", [])


def test_a_call_missing_a_required_value_is_refused_logged_and_counted(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You help ${call.caller}.", fake_openai.base_url)
          + "context:\n  caller: {from: 'participant:sip.phoneNumber', required: true}\n"
            "  pin: {from: 'dispatch:pin', pattern: '[0-9]{4}'}\n")
    with Serve(agents) as serve:
        serve.wait_ready()
        report = _simulate(serve, {}, code=502)
        assert not report["ok"]
        assert report["error"] == "call refused: required call context caller is missing (from participant:sip.phoneNumber)"
        bad = _simulate(serve, {"caller": "Ann", "pin": "12345"}, code=502)
        assert bad["error"] == "call refused: call context pin does not match its pattern"
        serve.wait_for(lambda: serve.metric(REFUSED) == 1.0, message="the refused call in /metrics")
        assert serve.metric('voice_runtime_calls_refused_total{agent="desk",reason="pattern"}') == 1.0
        assert "refused the call: required call context caller is missing" in serve.output()
    assert fake_openai.chat_requests == []  # no session started: the model was never asked


def test_each_call_reaches_an_http_mcp_server_with_its_own_token_which_never_reaches_the_log(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    tokens = ["tok-alpha-7781", "tok-bravo-9902"]
    with start_http_server(record=record, name="crm") as crm:
        server = {"url": crm.url + "?tenant=${call.tenant}", "headers": {"Authorization": "Bearer ${call.token}"},
                  "tools": {"echo": {"arguments": {"text": "${call.token}"}}}}
        write(agents / "desk.yaml", spec("You help.", fake_openai.base_url)
              + "context:\n  token: {from: 'dispatch:token', required: true, secret: true}\n"
                "  tenant: {from: 'dispatch:tenant', default: main}\n"
              + f"mcp_servers:\n  crm: {json.dumps(server)}\n")
        # the pinned secret goes to the server and comes back as the result the agent repeats
        fake_openai.use_tool_then_answer("echo", {})
        with Serve(agents) as serve:
            serve.wait_ready()
            reports: list[dict[str, Any]] = []
            # two calls at once: neither may be given the other's credentials
            threads = [threading.Thread(target=lambda t=t, n=n: reports.append(
                _simulate(serve, {"token": t, "tenant": f"t&{n}"}, ["who are you?"])))
                for n, t in enumerate(tokens)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert [r["ok"] for r in reports] == [True, True], reports
            # a value that would add a header line is refused before anything connects
            injected = _simulate(serve, {"token": "tok-carol-1\r\nX-Admin: yes"}, code=502)
            assert injected["refused"] == "invalid" and "X-Admin" not in injected["error"]
            assert serve.metric('voice_runtime_calls_refused_total{agent="desk",reason="invalid"}') == 1.0
            log = serve.output()
        seen = {(r["authorization"], r["query"]) for r in read_requests(record)}
        # the query value is percent-encoded: a caller's "&" cannot add a parameter
        assert seen == {("Bearer tok-alpha-7781", "tenant=t%260"), ("Bearer tok-bravo-9902", "tenant=t%261")}
        assert sorted(r["args"]["text"] for r in read_records(record)) == tokens
    for token in tokens:
        assert token not in log
        assert token not in json.dumps(reports)  # /simulate's answer: turns, tool arguments, the report


def _chat(agents: Path, fake: FakeOpenAI, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "chat", str(agents), "--agent", "desk", "--json", *extra],
        input="what is the weather?\n", capture_output=True, text=True, timeout=90,
        env=child_env({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "x"}),
    )


def test_chat_context_fills_the_prompt_and_a_pinned_argument_and_refuses_a_missing_value(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    command, args = stdio_command(record=record, name="weather")
    server = {"command": command, "args": args, "tools": {"get_weather": {"arguments": {"city": "${call.city}"}}}}
    write(agents / "desk.yaml", spec("You help ${call.caller}.", fake_openai.base_url)
          + "context:\n  caller: {from: 'participant:sip.phoneNumber', required: true, secret: true}\n"
            "  city: {from: 'dispatch:city'}\n"
          + f"mcp_servers:\n  weather: {json.dumps(server)}\n")
    refused = _chat(agents, fake_openai, "--context", "city=Paris")
    assert refused.returncode == 2
    assert ("error: agent desk refuses the call: required call context caller is missing "
            "(from participant:sip.phoneNumber)") in refused.stderr
    fake_openai.use_tool_then_answer("get_weather", {})
    result = _chat(agents, fake_openai, "--context", "caller=+15550001234", "--context", "city=Oslo")
    assert result.returncode == 0, result.stderr
    assert [r["args"] for r in read_records(record)] == [{"city": "Oslo"}]
    assert any("You help +15550001234." in p for p in _system_prompts(fake_openai))
    assert "+15550001234" not in result.stdout + result.stderr  # secret: redacted in what chat prints
    # --json ends with the call's report: the non-secret context, the transcript, the tool call's record
    report = json.loads(result.stdout.splitlines()[-1])["report"]
    assert report["context"] == {"city": "Oslo"}
    assert [t["role"] for t in report["transcript"]] == ["caller", "agent"]
    assert [(c["tool"], c["outcome"]) for c in report["tool_calls"]] == [("get_weather", "ok")]


@pytest.fixture
def livekit() -> Iterator[FakeLiveKit]:
    fake = FakeLiveKit()
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


def test_a_livekit_job_reads_its_context_from_dispatch_metadata_and_the_callers_sip_attributes(
    agents: Path, fake_openai: FakeOpenAI, livekit: FakeLiveKit
) -> None:
    write(agents / "desk.yaml", spec("You help ${call.caller} of ${call.account}.", fake_openai.base_url)
          + "context:\n  caller: {from: 'participant:sip.phoneNumber', required: true, pattern: '\\+[0-9]{6,15}'}\n"
            "  account: {from: 'dispatch:account', required: true}\n")
    env = {"LIVEKIT_URL": livekit.url, "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "devsecret-" + "x" * 32}
    with Serve(agents, "--dispatch", "metadata", "--agent-name", "desk-line", "--idle-processes", "1",
               "--load-threshold", "1", env=env, unregistered=False) as serve:
        serve.wait_ready()
        route = {"agent": "desk"}

        def taken(prefix: str, metadata: dict[str, str], number: str) -> str:
            """The id of the job LiveKit got a process for: livekit answers "unavailable"
            while the prewarmed process is starting or a refused job's is being replaced
            (slow on a loaded machine), so the job is offered again under a new id."""
            attempts = iter(range(1000))

            def offered() -> str | None:
                job = f"{prefix}{next(attempts)}"
                answer = livekit.offer(job, "desk-line", metadata=json.dumps(metadata),
                                       attributes={"sip.phoneNumber": number})
                return job if answer.available else None

            return serve.wait_for(offered, timeout=90, message=f"a process free for {prefix}")

        # no account in the dispatch metadata: refused before any session
        job = taken("AJ_noacct", route, "+15550001234")
        serve.wait_for(lambda: f"job {job}: agent desk refused the call: required call context account is "
                               "missing (from dispatch:account)" in serve.output(), message="the refusal")
        # a SIP number that is not one: refused by the pattern
        job = taken("AJ_badsip", {**route, "account": "A-1"}, "anonymous")
        serve.wait_for(lambda: f"job {job}: agent desk refused the call: call context caller does not match "
                               "its pattern" in serve.output(), message="the pattern refusal")
        # both present: the job goes on to its session (no refusal for it)
        job = taken("AJ_good", {**route, "account": "A-1"}, "+15550001234")
        serve.wait_for(lambda: f"job {job}: agent desk generation 1" in serve.output(), message="the good job")
        serve.wait_for(lambda: serve.metric('voice_runtime_calls_refused_total{agent="desk",reason="pattern"}') == 1.0,
                       message="the pattern refusal counted")
        assert serve.metric('voice_runtime_calls_refused_total{agent="desk",reason="missing"}') == 1.0
        assert not re.search(r"AJ_good\d+: agent desk refused", serve.output())


def test_a_browser_calls_page_query_is_its_context_checked_like_any_call_and_reaches_the_prompt(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    """GET /talk/desk?caller=...: the page passes its query on when it reserves the call;
    serve refuses a name the spec does not declare or a value its pattern refuses (400,
    without the value), and the job puts the rest into the prompt. Driven here as the
    page drives it (reserve, then the call's WebSocket), without a browser."""
    import asyncio

    import aiohttp

    write(agents / "desk.yaml", spec("You help ${call.caller}.", fake_openai.base_url)
          + "context:\n  caller: {from: 'participant:sip.phoneNumber', required: true, pattern: '[A-Za-z ]+'}\n")

    async def talk(serve: Serve, query: str) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as http:
            async with http.post(serve.url(f"/talk/desk/calls{query}")) as reply:
                body = await reply.json()
                if reply.status != 201:
                    return reply.status, body, []
            events: list[dict[str, Any]] = []
            async with http.ws_connect(serve.url(body["socket"])) as ws:
                await ws.send_str(json.dumps({"type": "text", "text": "hello"}))
                async with asyncio.timeout(90):
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            events.append(json.loads(msg.data))
                            if events[-1].get("type") == "turn" and events[-1].get("speaker") == "agent":
                                break
                if not ws.closed:
                    await ws.send_str(json.dumps({"type": "hangup"}))
            return 201, body, events

    with Serve(agents, "--local", "--idle-processes", "1",
               env={"LIVEKIT_URL": None, "LIVEKIT_API_KEY": None, "LIVEKIT_API_SECRET": None},
               unregistered=False) as serve:
        serve.wait_ready()
        unknown = asyncio.run(talk(serve, "?caller=Ann&admin=1"))
        bad = asyncio.run(talk(serve, "?caller=Ann%0D%0AX-Admin:%201"))
        missing = asyncio.run(talk(serve, ""))
        code, _, events = asyncio.run(talk(serve, "?caller=Ann%20Smith&autostart=1"))
    assert unknown[:2] == (400, {"ok": False, "error": "call refused: no context value named admin is declared "
                                                       "(context: caller)"})
    assert bad[0] == 400 and bad[1]["error"] == "call refused: call context caller does not match its pattern"
    # no query: reserved, then the job refuses the call (required), as any call without it
    assert missing[0] == 201 and not [e for e in missing[2] if e.get("type") == "turn"], missing
    assert code == 201 and [e["text"] for e in events if e.get("type") == "turn"][-1] == "echo: hello"
    assert any("You help Ann Smith." in p for p in _system_prompts(fake_openai))
