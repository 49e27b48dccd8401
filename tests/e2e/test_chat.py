"""`voice-runtime chat`: the end-to-end proof that a tool the model calls really runs
on the MCP server, and that a model merely *claiming* a tool call shows none.

The real openai plugin talks to a fake OpenAI server (tests/fakes) through
OPENAI_BASE_URL; MCP servers are real processes (tests/mcp_servers)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from fakes.openai_chat import FakeOpenAI, text
from helpers import CLI, REPO, child_env
from mcp_servers.harness import read_records, start_http_server, stdio_command


def chat(agents: Path, agent: str, lines: str, fake: FakeOpenAI, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "chat", str(agents), "--agent", agent, *extra],
        input=lines, capture_output=True, text=True, timeout=90,
        env=child_env({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "x"}),
    )


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def write_spec(folder: Path, server_yaml: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "weather.yaml").write_text(
        "apiVersion: voice-runtime/v1\n"
        "instructions: You answer weather questions with the weather tool.\n"
        "pipeline:\n"
        "  llm: {provider: openai, model: gpt-4o-mini}\n"
        "  text_only: true\n"
        "mcp_servers:\n"
        f"  weather:\n{server_yaml}"
    )
    return folder


def stdio_yaml(record: Path) -> str:
    command, args = stdio_command(record=record, name="weather")
    return f"    command: {json.dumps(command)}\n    args: {json.dumps(args)}\n"


def assert_tool_really_ran(result: subprocess.CompletedProcess[str], record: Path, fake: FakeOpenAI) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    # (a) the MCP server itself recorded the call, with the exact arguments
    assert [(r["tool"], r["args"]) for r in read_records(record)] == [("get_weather", {"city": "Paris"})]
    # (b) the tool's result is in the next request to the LLM, as plain text
    second = fake.chat_requests[1]["messages"]
    assert {"role": "tool", "content": "sunny in Paris"}.items() <= second[-1].items()
    # (c) the user sees the call, its result and latency, and a reply containing it
    evs = events(result.stdout)
    kinds = [e["type"] for e in evs]
    assert kinds == ["user", "tool_call", "tool_result", "reply", "report"]  # the call's report last
    call, res, reply = evs[1], evs[2], evs[3]
    assert call == {"type": "tool_call", "tool": "get_weather", "server": "weather", "arguments": {"city": "Paris"}}
    assert res["outcome"] == "ok" and res["result"] == "sunny in Paris" and res["latency_ms"] > 0
    assert "sunny in Paris" in reply["text"]


def test_model_tool_call_reaches_the_stdio_mcp_server_and_its_result_reaches_the_user(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    agents = write_spec(tmp_path / "agents.d", stdio_yaml(record))
    fake_openai.use_tool_then_answer("get_weather", {"city": "Paris"})
    result = chat(agents, "weather", "weather in Paris?\n", fake_openai, "--json")
    assert_tool_really_ran(result, record, fake_openai)


def test_model_tool_call_reaches_the_streamable_http_mcp_server_and_its_result_reaches_the_user(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    with start_http_server("streamable-http", record=record, name="weather") as server:
        agents = write_spec(tmp_path / "agents.d", f"    url: {server.url}\n")
        fake_openai.use_tool_then_answer("get_weather", {"city": "Paris"})
        result = chat(agents, "weather", "weather in Paris?\n", fake_openai, "--json")
    assert_tool_really_ran(result, record, fake_openai)


def test_a_model_that_only_claims_to_have_used_a_tool_shows_no_tool_call(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    agents = write_spec(tmp_path / "agents.d", stdio_yaml(record))
    fake_openai.enqueue(text("I searched the web and emailed you the forecast: sunny in Paris."))
    result = chat(agents, "weather", "weather in Paris?\n", fake_openai, "--json")
    assert result.returncode == 0, result.stderr
    # no tool call is shown; the claim itself is flagged (see test_unbacked_claims.py)
    assert [e["type"] for e in events(result.stdout)] == ["user", "reply", "unbacked_claim", "report"]
    assert read_records(record) == []


def test_chat_with_the_example_support_agent_runs_a_real_time_server_tool_and_prints_its_latency(
    fake_openai: FakeOpenAI,
) -> None:
    # the README's acceptance command: a real `mcp-server-time` process from agents.d/support.yaml
    fake_openai.use_tool_then_answer("get_current_time", {"timezone": "UTC"})
    result = chat(REPO / "agents.d", "support", "what time is it?\n", fake_openai)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "support> Thanks for calling Acme support. What can I do for you?"
    assert lines[1] == "you> what time is it?"
    assert lines[2] == '  -> clock: get_current_time {"timezone": "UTC"}'
    assert lines[3].startswith("  <- get_current_time ok in ") and " ms: " in lines[3]
    assert '"timezone": "UTC"' in lines[3]
    assert lines[-1] == "}" and any(line.startswith("support> Result: {") for line in lines)
    assert "Traceback" not in result.stderr


def test_a_down_mcp_server_costs_only_its_tools_and_the_model_hears_it_is_unavailable(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    agents = write_spec(tmp_path / "agents.d", "    url: http://127.0.0.1:9/mcp\n    connect_timeout: 2\n")
    fake_openai.enqueue(text("Sorry, I cannot check the weather right now."))
    result = chat(agents, "weather", "weather in Paris?\n", fake_openai, "--json")
    assert result.returncode == 0, result.stderr
    evs = events(result.stdout)
    assert evs[0]["type"] == "warning" and "MCP server weather unavailable" in evs[0]["message"]
    assert "unavailable" not in result.stderr  # said once, as the event, not again as a log line
    assert [e["type"] for e in evs[1:]] == ["user", "reply", "report"]
    assert fake_openai.chat_requests[0].get("tools") in (None, [])


def test_a_required_mcp_server_that_is_down_refuses_the_session_with_the_reason(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    agents = write_spec(tmp_path / "agents.d", "    url: http://127.0.0.1:9/mcp\n    connect_timeout: 2\n    required: true\n")
    result = chat(agents, "weather", "hi\n", fake_openai, "--json")
    assert result.returncode == 1
    error = events(result.stdout)[-1]
    assert error["type"] == "error"
    assert error["message"].startswith("required MCP server weather is unavailable: cannot connect")
    assert fake_openai.chat_requests == []


def test_chat_with_an_unknown_agent_names_the_available_ones(fake_openai: FakeOpenAI) -> None:
    result = chat(REPO / "agents.d", "nobody", "", fake_openai)
    assert result.returncode == 2
    assert "no agent named 'nobody'" in result.stderr and "concierge, support" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_llm_shows_our_one_line_error_by_default_and_the_libraries_detail_with_v(
    tmp_path: Path,
) -> None:
    from mcp_servers.harness import free_port

    agents = tmp_path / "agents.d"
    agents.mkdir()
    (agents / "desk.yaml").write_text(
        "apiVersion: voice-runtime/v1\ninstructions: Be brief.\n"
        "pipeline:\n  llm: {provider: openai, model: gpt-4o-mini}\n  text_only: true\n"
    )
    nobody = {"OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "OPENAI_API_KEY": "x"}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "chat", str(agents), "--agent", "desk", "--json", *extra], input="hello\n",
                              capture_output=True, text=True, timeout=90, env=child_env(nobody))

    quiet = run()
    assert quiet.returncode == 1
    [error] = [e for e in events(quiet.stdout) if e["type"] == "error"]
    assert error["message"].startswith("APIConnectionError: ")
    # livekit's retry warnings and tracebacks (about 20 lines and two tracebacks) are not shown
    assert "Traceback" not in quiet.stderr and "livekit" not in quiet.stderr, quiet.stderr
    verbose = run("-v")
    assert verbose.returncode == 1
    assert "WARNING livekit.agents" in verbose.stderr and "Traceback" in verbose.stderr


def test_a_provider_error_shows_its_seconds_rounded_not_as_a_raw_float(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    # livekit's fallback adapter says "all LLMs failed (...) after 0.008476972579956055 seconds"
    dead = '{provider: openai, model: gpt-4o-mini, base_url: "http://127.0.0.1:9/v1"}'
    (tmp_path / "agents.d").mkdir()
    (tmp_path / "agents.d" / "desk.yaml").write_text(
        f"apiVersion: voice-runtime/v1\ninstructions: hi\npipeline:\n  llm: [{dead}, {dead}]\n  text_only: true\n")
    result = chat(tmp_path / "agents.d", "desk", "hi\n", fake_openai)
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
    assert "all LLMs failed" in line, line
    assert re.search(r"after (less than 0\.1|\d+\.\d) seconds\)$", line), line
