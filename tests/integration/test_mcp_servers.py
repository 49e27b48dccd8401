"""The test MCP servers behave as the rest of the suite assumes.

Every test talks to a real recorder process through the real MCP SDK client (or
livekit's wrapper), so when a runtime test fails these say whether the fixture or the
runtime is to blame.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_servers.harness import (
    pid_alive,
    read_events,
    read_records,
    start_http_server,
    stdio_command,
    wait_gone,
)
from mcp_servers.recorder import CRASH_EXIT_CODE

ALL_TOOLS = {"echo", "add", "get_weather", "whoami", "get_env", "env_keys", "sleep", "big", "fail", "crash"}


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "calls.jsonl"


@asynccontextmanager
async def stdio_session(
    record: Path,
    *,
    name: str = "recorder",
    fault: str | None = None,
    env: dict[str, str] | None = None,
    errlog_path: Path | None = None,
    timeout: float = 30,  # a hang's guard; `initialize` waits for the server's start, which load stretches
) -> AsyncIterator[ClientSession]:
    command, args = stdio_command(record=record, name=name, fault=fault)
    params = StdioServerParameters(command=command, args=args, env=env)
    # A file, not pytest's captured stderr: keeps server noise out of test reports.
    errlog_path = errlog_path or record.with_suffix(".stderr")
    with errlog_path.open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=timeout) as session:
                await session.initialize()
                yield session


@asynccontextmanager
async def http_session(url: str, *, timeout: float = 30) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient() as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=timeout) as session:
                await session.initialize()
                yield session


@asynccontextmanager
async def sse_session(url: str) -> AsyncIterator[ClientSession]:
    async with sse_client(url) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=5) as session:
            await session.initialize()
            yield session


def text_of(result: object) -> str:
    return "\n".join(getattr(c, "text", "") for c in getattr(result, "content", []))


# --- transports -------------------------------------------------------------------------


async def test_stdio_echo_returns_text_and_is_recorded(record: Path) -> None:
    async with stdio_session(record) as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        result = await session.call_tool("echo", {"text": "hello"})
        # Read while the call's connection is still open: the line must already be there.
        calls = read_records(record)

    assert tools == ALL_TOOLS
    assert not result.is_error
    assert text_of(result) == "hello"
    assert [(c["tool"], c["args"]) for c in calls] == [("echo", {"text": "hello"})]
    assert calls[0]["pid"] == read_events(record)[0]["pid"]


async def test_streamable_http_add_returns_sum_and_is_recorded(record: Path) -> None:
    with start_http_server("streamable-http", record=record, name="calc") as server:
        assert server.url == f"http://127.0.0.1:{server.port}/mcp"
        async with http_session(server.url) as session:
            result = await session.call_tool("add", {"a": 2, "b": 3})
            calls = read_records(record)

    assert text_of(result) == "5"
    assert result.structured_content == {"result": 5}
    assert calls == [{"tool": "add", "args": {"a": 2, "b": 3}, "pid": server.pid, "ts": calls[0]["ts"]}]


async def test_sse_serves_tools_and_records_calls(record: Path) -> None:
    with start_http_server("sse", record=record, name="weather") as server:
        assert server.url.endswith("/sse")
        async with sse_session(server.url) as session:
            weather = await session.call_tool("get_weather", {"city": "Oslo"})
            me = await session.call_tool("whoami", {})

    assert text_of(weather) == "sunny in Oslo"
    assert text_of(me) == "weather"
    assert [c["tool"] for c in read_records(record)] == ["get_weather", "whoami"]


async def test_restart_keeps_the_port_and_serves_again(record: Path) -> None:
    with start_http_server(record=record) as server:
        port, first_pid, url = server.port, server.pid, server.url
        async with http_session(url) as session:
            await session.call_tool("echo", {"text": "before"})

        server.restart()

        assert (server.port, server.url) == (port, url)
        assert server.pid != first_pid
        async with http_session(url) as session:
            result = await session.call_tool("echo", {"text": "after"})

    assert text_of(result) == "after"
    assert [(c["args"]["text"], c["pid"]) for c in read_records(record)] == [
        ("before", first_pid),
        ("after", server.pid),
    ]
    assert [e["pid"] for e in read_events(record)] == [first_pid, server.pid]


async def test_stop_leaves_nothing_listening(record: Path) -> None:
    server = start_http_server(record=record)
    try:
        server.stop()
        assert not server.running
        with pytest.raises(httpx2.ConnectError):
            async with httpx2.AsyncClient() as http:
                await http.get(server.url)
    finally:
        server.close()


# --- tool behaviour -----------------------------------------------------------------------


async def test_fail_tool_reports_is_error_with_the_message(record: Path) -> None:
    async with stdio_session(record) as session:
        result = await session.call_tool("fail", {"message": "boom"})
        still_fine = await session.call_tool("add", {"a": 1, "b": 1})

    assert result.is_error
    assert "boom" in text_of(result)
    assert text_of(still_fine) == "2"
    assert [c["tool"] for c in read_records(record)] == ["fail", "add"]


async def test_get_env_sees_only_what_the_client_passes(record: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_RUNTIME_TEST_CANARY", "leaked")
    async with stdio_session(record, env={"PASSED_ON": "yes"}) as session:
        passed = await session.call_tool("get_env", {"name": "PASSED_ON"})
        canary = await session.call_tool("get_env", {"name": "VOICE_RUNTIME_TEST_CANARY"})
        keys = await session.call_tool("env_keys", {})

    assert text_of(passed) == "yes"
    # The SDK's stdio client passes only a safe default environment plus `env`.
    assert text_of(canary) == "<unset>"
    assert keys.structured_content is not None
    names = keys.structured_content["result"]
    assert names == sorted(names) and "PASSED_ON" in names and "VOICE_RUNTIME_TEST_CANARY" not in names


async def test_sleep_and_big_return_what_they_promise(record: Path) -> None:
    async with stdio_session(record) as session:
        started = time.monotonic()
        slept = await session.call_tool("sleep", {"seconds": 0.2})
        elapsed = time.monotonic() - started
        big = await session.call_tool("big", {"size": 100_000})

    assert text_of(slept) == "slept" and elapsed >= 0.2
    assert text_of(big) == "x" * 100_000


async def test_crash_kills_the_server_mid_call(record: Path) -> None:
    with start_http_server(record=record) as server:
        with pytest.raises(ExceptionGroup) as excinfo:
            async with http_session(server.url, timeout=3) as session:
                await session.call_tool("crash", {})
        exit_code = server.wait(timeout=5)

    assert excinfo.group_contains(MCPError)
    assert exit_code == CRASH_EXIT_CODE
    assert [c["tool"] for c in read_records(record)] == ["crash"]


# --- faults -------------------------------------------------------------------------------


async def test_slow_start_delays_listening(record: Path) -> None:
    started = time.monotonic()
    with start_http_server(record=record, fault="slow-start=0.5"):
        assert time.monotonic() - started >= 0.5
    assert read_events(record)[0]["faults"] == ["slow-start"]


async def test_slow_init_listens_at_once_but_answers_initialize_late(record: Path) -> None:
    with start_http_server(record=record, fault="slow-init=0.6") as server:
        started = time.monotonic()
        async with http_session(server.url) as session:
            handshake = time.monotonic() - started
            result = await session.call_tool("echo", {"text": "late"})
    assert handshake >= 0.6
    assert text_of(result) == "late"
    assert read_events(record)[0]["faults"] == ["slow-init"]


async def test_descriptions_file_replaces_tool_descriptions_at_each_start(record: Path, tmp_path: Path) -> None:
    descriptions = tmp_path / "descriptions.json"
    command, args = stdio_command(record=record, descriptions=descriptions)

    async def listed() -> dict[str, str | None]:
        async with stdio_client(StdioServerParameters(command=command, args=args), errlog=sys.stderr) as (r, w):
            async with ClientSession(r, w, read_timeout_seconds=5) as session:
                await session.initialize()
                return {t.name: t.description for t in (await session.list_tools()).tools}

    before = await listed()  # no file yet: the docstrings
    descriptions.write_text(json.dumps({"echo": "Something else entirely."}))
    after = await listed()

    assert before["echo"] == "Return the text unchanged."
    assert after["echo"] == "Something else entirely."
    assert after["add"] == before["add"] == "Add two integers."


async def test_hang_never_answers_initialize(record: Path) -> None:
    with start_http_server(record=record, fault="hang") as server:
        with pytest.raises(ExceptionGroup) as excinfo:
            async with http_session(server.url, timeout=0.5):
                pass
        assert excinfo.group_contains(MCPError, match="'initialize' timed out")
        server.stop()  # uvicorn's short graceful timeout: a hung request must not block stop
        assert server.returncode is not None


async def test_ignore_sigterm_needs_sigkill_for_server_and_grandchild(record: Path) -> None:
    with start_http_server(record=record, fault="ignore-sigterm") as server:
        (spawn,) = read_events(record)
        grandchild = spawn["grandchild_pid"]
        assert pid_alive(grandchild)

        started = time.monotonic()
        server.stop(timeout=0.5)

        assert time.monotonic() - started >= 0.5  # SIGTERM was ignored for the full wait
        assert server.returncode == -9
        assert wait_gone([grandchild], timeout=2)


async def test_garbage_stdout_is_skipped_by_the_sdk_client(record: Path) -> None:
    async with stdio_session(record, fault="garbage-stdout") as session:
        result = await session.call_tool("echo", {"text": "still works"})
    assert text_of(result) == "still works"


async def test_stderr_flood_keeps_writing_while_serving(record: Path) -> None:
    errlog = record.with_suffix(".flood")
    async with stdio_session(record, fault="stderr-flood", errlog_path=errlog) as session:
        await session.call_tool("sleep", {"seconds": 0.3})
        result = await session.call_tool("echo", {"text": "heard"})
    assert text_of(result) == "heard"
    assert errlog.stat().st_size > 64 * 1024  # more than a pipe buffer: an undrained pipe would stall


def test_unknown_fault_is_a_usage_error() -> None:
    command, args = stdio_command(fault="nope")
    proc = subprocess.run([command, *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "unknown fault: 'nope'" in proc.stderr


# --- livekit ------------------------------------------------------------------------------


async def test_livekit_stdio_wrapper_lists_and_calls_tools(record: Path) -> None:
    from livekit.agents.llm.mcp import MCPServerStdio

    command, args = stdio_command(record=record, name="lk")
    server = MCPServerStdio(command=command, args=args, client_session_timeout_seconds=10)
    try:
        await server.initialize()
        tools = {t.info.name: t for t in await server.list_tools()}
        output = await tools["get_weather"](raw_arguments={"city": "Paris"})
    finally:
        await server.aclose()

    assert set(tools) == ALL_TOOLS
    # livekit's default resolver hands the LLM the content item as JSON, not the bare text.
    assert json.loads(output)["text"] == "sunny in Paris"
    assert [(c["tool"], c["args"]) for c in read_records(record)] == [("get_weather", {"city": "Paris"})]


def test_stdio_command_uses_this_interpreter_and_absolute_paths(record: Path) -> None:
    command, args = stdio_command(record=record, name="n", fault=["hang", "slow-start=2"])
    assert command == sys.executable
    assert Path(args[0]).is_absolute() and args[0].endswith("recorder.py")
    assert args[1:] == [
        "--transport", "stdio", "--name", "n", "--record", str(record),
        "--fault", "hang", "--fault", "slow-start=2",
    ]  # fmt: skip

