"""The gateway: serve's MCP connections lent to job processes over a unix socket.

Both ends run here over real recorder MCP server processes; the same classes run in
`serve` and its job processes (tests/e2e/test_density.py covers that path whole).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp_servers.harness import read_events, read_records, stdio_command

from voice_runtime.mcp.connection import ConnState, McpUnavailable
from voice_runtime.mcp import pins
from voice_runtime.mcp.gateway import ADDRESS_FILE, Gateway, GatewayPool, GatewayRefused
from voice_runtime.mcp.pool import McpPool, server_key
from voice_runtime.plugins.manager import make_plugin_manager
from voice_runtime.spec.loader import load_folder


def _spec(folder: Path, record: Path, *, extra: str = "") -> Any:
    command, args = stdio_command(record=record, name="tools")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "desk.yaml").write_text(
        "apiVersion: voice-runtime/v1\ninstructions: hi\npipeline:\n"
        "  llm: {provider: openai, base_url: 'http://127.0.0.1:9/v1', api_key: sk-test}\n  text_only: true\n"
        f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}{extra}}}\n")
    [loaded] = load_folder(folder, make_plugin_manager(None)).specs
    return loaded


@pytest.fixture
async def lent(tmp_path: Path) -> AsyncIterator[tuple[Any, McpPool, Gateway, Path]]:
    record = tmp_path / "calls.jsonl"
    loaded = _spec(tmp_path / "agents.d", record)
    pool = McpPool()
    await pool.warm([loaded])
    gateway = Gateway(pool, tmp_path, lambda agent: loaded if agent == "desk" else None, _jobs({"AJ_desk": "desk"}))
    await gateway.start()
    try:
        yield loaded, pool, gateway, record
    finally:
        await gateway.aclose()
        await pool.aclose()


def _jobs(routed: dict[str, str]) -> Any:
    """What serve knows of its jobs, for a gateway in this process: the job ids it
    routed (to which agent), each running here (the peer the kernel names)."""
    return lambda pid, job_id: routed.get(job_id) if pid == os.getpid() else None


async def test_a_borrowed_connection_calls_the_servers_one_process(lent: Any, tmp_path: Path) -> None:
    loaded, _, _, record = lent
    borrowed = GatewayPool.from_state_dir(tmp_path, "AJ_desk")
    assert borrowed is not None
    try:
        acquired = await borrowed.acquire(loaded)
        conn = acquired.connections["tools"]
        assert conn.state is ConnState.UP and "echo" in [t.name for t in conn.tools]
        result = await conn.call("echo", {"text": "through serve"})
        assert result.content[0].text == "through serve"
    finally:
        await borrowed.aclose()
    assert len(read_events(record)) == 1  # serve's server, no other started
    assert [r["args"] for r in read_records(record)] == [{"text": "through serve"}]


async def test_the_socket_and_its_token_are_private_and_a_request_without_the_token_is_refused(
    lent: Any, tmp_path: Path
) -> None:
    _, _, gateway, _ = lent
    address = tmp_path / ADDRESS_FILE
    assert oct(address.stat().st_mode & 0o777) == "0o600"
    assert oct(Path(gateway.path).stat().st_mode & 0o777) == "0o600"
    for token in (b"", b"guessed"):
        reader, writer = await asyncio.open_unix_connection(gateway.path)
        writer.write(token + b"\n" + _request({"id": 1, "op": "call", "key": "x", "tool": "echo"}))
        assert json.loads(await reader.readline())["status"] == 401
        assert await reader.readline() == b""  # and the connection is closed: nothing was run
        writer.close()
    reader, writer = await asyncio.open_unix_connection(gateway.path)
    writer.write(gateway.token.encode() + b" AJ_desk\n" + b"not json\n")
    assert json.loads(await reader.readline())["status"] == 400
    writer.write(_request({"id": 2, "op": "call", "tool": ["echo"]}))
    assert json.loads(await reader.readline()) == {"id": 2, "status": 400,
                                                   "error": '"tool" must be a name and "arguments" an object'}
    writer.write(_request({"id": 3, "op": "call", "key": "nope", "tool": "echo"}))
    assert json.loads(await reader.readline())["status"] == 403  # no block of the job's agent
    writer.close()


def _request(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


async def test_a_block_a_reload_replaced_stays_open_for_the_call_that_borrowed_it_then_closes(
    lent: Any, tmp_path: Path
) -> None:
    """A spec edit replaced the block while a call of the older generation still runs:
    the call keeps its tools on serve's connection, which closes when the call ends."""
    loaded, pool, _, record = lent
    borrowed = GatewayPool.from_state_dir(tmp_path, "AJ_desk")
    try:
        conn = (await borrowed.acquire(loaded)).connections["tools"]
        await pool.retain([])  # no spec wants the block any more
        result = await conn.call("echo", {"text": "still here"})
        assert result.content[0].text == "still here"
        assert len(pool.by_key()) == 1
    finally:
        await borrowed.aclose()
    await _until(lambda: pool.by_key() == {})  # the call ended: nothing holds the block
    [spawn] = read_events(record)  # one server all along
    assert read_records(record)[-1]["pid"] == spawn["pid"]


async def test_a_call_on_a_block_serve_no_longer_holds_connects_its_own(lent: Any, tmp_path: Path) -> None:
    loaded, pool, _, record = lent
    await pool.retain([])  # closed before the call asked for it (nobody had borrowed it)
    borrowed = GatewayPool.from_state_dir(tmp_path, "AJ_desk")
    try:
        conn = (await borrowed.acquire(loaded)).connections["tools"]
        assert (await conn.call("echo", {"text": "mine"})).content[0].text == "mine"
    finally:
        await borrowed.aclose()
    assert len(read_events(record)) == 2  # serve's (closed) and the call's own


async def test_a_shared_false_block_is_never_lent(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    loaded = _spec(tmp_path / "agents.d", record, extra=", shared: false")
    pool = McpPool()
    await pool.warm([loaded])
    assert pool.by_key() == {} and read_events(record) == []
    gateway = Gateway(pool, tmp_path, lambda agent: loaded, _jobs({"AJ_desk": "desk"}))
    await gateway.start()
    borrowed = GatewayPool.from_state_dir(tmp_path, "AJ_desk")
    try:
        acquired = await borrowed.acquire(loaded)
        assert "RemoteConnection" not in type(acquired.connections["tools"]).__name__
        await acquired.connections["tools"].call("echo", {"text": "mine"})
    finally:
        await borrowed.aclose()
        await gateway.aclose()
        await pool.aclose()
    assert len(read_events(record)) == 1 and pool.by_key() == {}


async def test_a_server_that_dies_during_a_borrowed_call_is_reported_unavailable(lent: Any, tmp_path: Path) -> None:
    loaded, _, _, _ = lent
    borrowed = GatewayPool.from_state_dir(tmp_path, "AJ_desk")
    try:
        conn = (await borrowed.acquire(loaded)).connections["tools"]
        with pytest.raises(McpUnavailable):
            await conn.call("crash", {})  # the recorder exits mid-call
        assert conn.state is ConnState.DOWN and conn.error
    finally:
        await borrowed.aclose()


async def test_a_borrowed_call_the_caller_interrupts_is_cancelled_in_serve_too(lent: Any, tmp_path: Path) -> None:
    loaded, _, gateway, record = lent
    borrowed = GatewayPool.from_state_dir(tmp_path, "AJ_desk")
    try:
        conn = (await borrowed.acquire(loaded)).connections["tools"]
        call = asyncio.ensure_future(conn.call("sleep", {"seconds": 30}))
        await _until(lambda: any(r["tool"] == "sleep" for r in read_records(record)))
        assert gateway.requests_in_flight == 1
        call.cancel()  # what livekit does to a tool's task when the caller interrupts
        with pytest.raises(asyncio.CancelledError):
            await call
        await _until(lambda: gateway.requests_in_flight == 0)  # serve's side of the call was cancelled
        assert (await conn.call("echo", {"text": "next"})).content[0].text == "next"
    finally:
        await borrowed.aclose()


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_huge_result_is_capped_in_serve_and_the_next_call_still_answers(lent: Any, tmp_path: Path) -> None:
    """A tool returning megabytes (a file or log reader): serve caps it to the block's
    max_result_chars before lending it, with the marker the job would have written."""
    loaded, _, _, _ = lent
    borrowed = GatewayPool.from_state_dir(tmp_path, "AJ_desk")
    try:
        conn = (await borrowed.acquire(loaded)).connections["tools"]
        text = (await conn.call("big", {"size": 3_000_000})).content[0].text
        assert text.endswith("\n[result truncated: 3000000 characters, showing the first 16384]")
        assert len(text) < 16384 + 100
        assert (await conn.call("echo", {"text": "after"})).content[0].text == "after"
    finally:
        await borrowed.aclose()


# -- policy: a connection may use only what its job's agent would --------------------


def _agents(folder: Path, tmp_path: Path) -> dict[str, Any]:
    """desk (allowed_tools, a tool lock, an extra tool with a name no model accepts)
    hands off to front; other is an agent of the same serve desk has no way to reach."""
    def block(name: str, extra: str = "", **kwargs: Any) -> str:
        command, args = stdio_command(record=tmp_path / f"{name}.jsonl", name=name, **kwargs)
        return f"  {name}: {{command: {json.dumps(command)}, args: {json.dumps(args)}{extra}}}\n"

    (tmp_path / "extra.json").write_text(json.dumps({"bad name": "listed with a name no model accepts"}))
    head = ("apiVersion: voice-runtime/v1\ninstructions: hi\npipeline:\n"
            "  llm: {provider: openai, base_url: 'http://127.0.0.1:9/v1', api_key: sk-test}\n  text_only: true\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "desk.yaml").write_text(
        head + "handoffs: [{agent: front, when: 'The caller asks for the front desk.'}]\nmcp_servers:\n"
        + block("tools", ", allowed_tools: [echo, add, whoami, 'bad name']", extra_tools=tmp_path / "extra.json"))
    (folder / "front.yaml").write_text(head + "mcp_servers:\n" + block("front_tools"))
    (folder / "other.yaml").write_text(head + "mcp_servers:\n" + block("other_tools"))
    return {loaded.name: loaded for loaded in load_folder(folder, make_plugin_manager(None)).specs}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], McpPool, Gateway]]:
    specs = _agents(tmp_path / "agents.d", tmp_path)
    pool = McpPool()
    await pool.warm(specs.values())
    # the operator approved echo and add of desk's server, not whoami
    listed = pool.connection(server_key(specs["desk"], "tools")).tools  # type: ignore[union-attr]
    pins.write_tool_lock(specs["desk"], {"tools": [t for t in listed if t.name in ("echo", "add", "bad name")]})
    gateway = Gateway(pool, tmp_path, specs.get, _jobs({"AJ_desk": "desk", "AJ_other": "other"}))
    await gateway.start()
    try:
        yield specs, pool, gateway
    finally:
        await gateway.aclose()
        await pool.aclose()


async def test_a_connection_bound_to_one_agent_uses_its_tools_and_its_handoff_targets_and_nothing_else(
    served: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs, _, gateway = served
    caplog.set_level(logging.WARNING, logger="voice_runtime.mcp")
    desk = GatewayPool.from_state_dir(tmp_path, "AJ_desk")
    other = GatewayPool.from_state_dir(tmp_path, "AJ_other")
    assert desk is not None and other is not None
    try:
        tools = (await desk.acquire(specs["desk"])).connections["tools"]
        assert (await tools.call("echo", {"text": "allowed"})).content[0].text == "allowed"
        front = (await desk.acquire(specs["front"])).connections["front_tools"]  # a handoff target's
        assert (await front.call("echo", {"text": "after a handoff"})).content[0].text == "after a handoff"
        refused = {
            "outside allowed_tools": "get_weather",
            "not in the tool lock": "whoami",
            "withheld (not a valid name for the model)": "bad name",
        }
        for why, name in refused.items():
            with pytest.raises(GatewayRefused, match="is not one agent desk's model is shown"):
                await tools.call(name, {"city": "SECRET-ARGUMENT"})
            assert tools.state is ConnState.UP, why  # the server is fine; only that tool is not desk's

        # another agent's block: refused when desk's job asks for it, and when it calls it by key
        acquired = await desk.acquire(specs["other"])
        assert "other_tools" in acquired.unavailable and "refused by serve" in acquired.unavailable["other_tools"]
        with pytest.raises(GatewayRefused):
            await acquired.connections["other_tools"].call("echo", {"text": "SECRET-ARGUMENT"})
        key = server_key(specs["other"], "other_tools")
        status, answer = await desk.client.request("call", {"key": key, "tool": "echo", "arguments": {"text": "x"}})
        assert status == 403 and "not agent desk's" in answer["refused"]
        # the same block, lent to a job routed to other
        mine = (await other.acquire(specs["other"])).connections["other_tools"]
        assert (await mine.call("echo", {"text": "other's own"})).content[0].text == "other's own"
    finally:
        await desk.aclose()
        await other.aclose()
    # only what was allowed reached the servers; the refusals are counted and logged without arguments
    assert [r["args"] for r in read_records(tmp_path / "tools.jsonl")] == [{"text": "allowed"}]
    assert [r["args"] for r in read_records(tmp_path / "other_tools.jsonl")] == [{"text": "other's own"}]
    assert gateway.refused == {("desk", "tool"): 3, ("desk", "block"): 2}
    assert "job AJ_desk (agent desk): tool 'whoami' of MCP server tools" in caplog.text
    assert "SECRET-ARGUMENT" not in caplog.text


async def test_a_process_that_runs_no_job_serve_routed_is_refused_whatever_token_it_holds(
    served: Any, tmp_path: Path
) -> None:
    specs, _, gateway = served
    key = server_key(specs["desk"], "tools")
    for job in (b"AJ_nobody", b"", b"x" * 10_000):  # a job serve did not route, none, one too long
        reader, writer = await asyncio.open_unix_connection(gateway.path)
        writer.write(gateway.token.encode() + b" " + job + b"\n"
                     + _request({"id": 1, "op": "call", "key": key, "tool": "echo", "arguments": {"text": "x"}}))
        assert json.loads(await reader.readline())["status"] == 403
        assert await reader.readline() == b""  # closed: nothing was run
        writer.close()
    assert read_records(tmp_path / "tools.jsonl") == []
    assert gateway.refused[("", "unbound")] == 3
