"""The gateway: serve's MCP connections lent to job processes over a unix socket.

Both ends run here over real recorder MCP server processes; the same classes run in
`serve` and its job processes (tests/e2e/test_density.py covers that path whole).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp_servers.harness import read_events, read_records, stdio_command

from voice_runtime.mcp.connection import ConnState, McpUnavailable
from voice_runtime.mcp.gateway import ADDRESS_FILE, Gateway, GatewayPool
from voice_runtime.mcp.pool import McpPool
from voice_runtime.plugins import make_plugin_manager
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
    gateway = Gateway(pool, tmp_path, lambda agent: loaded if agent == "desk" else None)
    await gateway.start()
    try:
        yield loaded, pool, gateway, record
    finally:
        await gateway.aclose()
        await pool.aclose()


async def test_a_borrowed_connection_calls_the_servers_one_process(lent: Any, tmp_path: Path) -> None:
    loaded, _, _, record = lent
    borrowed = GatewayPool.from_state_dir(tmp_path)
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
    writer.write(gateway.token.encode() + b"\n" + b"not json\n")
    assert json.loads(await reader.readline())["status"] == 400
    writer.write(_request({"id": 2, "op": "call", "tool": ["echo"]}))
    assert json.loads(await reader.readline()) == {"id": 2, "status": 400,
                                                   "error": '"tool" must be a name and "arguments" an object'}
    writer.write(_request({"id": 3, "op": "call", "key": "nope", "tool": "echo"}))
    assert json.loads(await reader.readline()) == {"id": 3, "status": 404, "unknown": True}
    writer.close()


def _request(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


async def test_a_block_a_reload_replaced_stays_open_for_the_call_that_borrowed_it_then_closes(
    lent: Any, tmp_path: Path
) -> None:
    """A spec edit replaced the block while a call of the older generation still runs:
    the call keeps its tools on serve's connection, which closes when the call ends."""
    loaded, pool, _, record = lent
    borrowed = GatewayPool.from_state_dir(tmp_path)
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
    borrowed = GatewayPool.from_state_dir(tmp_path)
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
    gateway = Gateway(pool, tmp_path, lambda agent: loaded)
    await gateway.start()
    borrowed = GatewayPool.from_state_dir(tmp_path)
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
    borrowed = GatewayPool.from_state_dir(tmp_path)
    try:
        conn = (await borrowed.acquire(loaded)).connections["tools"]
        with pytest.raises(McpUnavailable):
            await conn.call("crash", {})  # the recorder exits mid-call
        assert conn.state is ConnState.DOWN and conn.error
    finally:
        await borrowed.aclose()


async def test_a_borrowed_call_the_caller_interrupts_is_cancelled_in_serve_too(lent: Any, tmp_path: Path) -> None:
    loaded, _, gateway, record = lent
    borrowed = GatewayPool.from_state_dir(tmp_path)
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
    borrowed = GatewayPool.from_state_dir(tmp_path)
    try:
        conn = (await borrowed.acquire(loaded)).connections["tools"]
        text = (await conn.call("big", {"size": 3_000_000})).content[0].text
        assert text.endswith("\n[result truncated: 3000000 characters, showing the first 16384]")
        assert len(text) < 16384 + 100
        assert (await conn.call("echo", {"text": "after"})).content[0].text == "after"
    finally:
        await borrowed.aclose()
