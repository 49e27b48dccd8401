"""MCP faults that must cost one tool call, never the process: a server that
never replies, one that writes garbage, a 50 MB result. Real recorder servers,
voice-runtime's own connection pool and tool path."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path

from helpers import write
from mcp_servers.harness import read_records, stdio_command
from voice_runtime.mcp.pool import McpPool
from voice_runtime.mcp.toolset import ToolFailure, call_tool, visible_tools
from voice_runtime.plugins.manager import make_plugin_manager
from voice_runtime.spec.loader import load_folder
from voice_runtime.observe.tool_calls import CallRecorder


def load(tmp_path: Path, servers: dict[str, str]) -> object:
    body = "".join(f"  {name}: {{{block}}}\n" for name, block in servers.items())
    write(tmp_path / "agents.d" / "desk.yaml", (
        "apiVersion: voice-runtime/v1\ninstructions: x\n"
        "pipeline:\n  llm: {provider: openai, model: gpt-4o-mini, api_key: x}\n  text_only: true\n"
        f"mcp_servers:\n{body}"
    ))
    result = load_folder(tmp_path / "agents.d", make_plugin_manager(None, entry_points=False))
    assert not result.errors, result.errors
    return result.specs[0]


def stdio_block(tmp_path: Path, name: str, *faults: str, extra: str = "") -> str:
    command, args = stdio_command(record=tmp_path / f"{name}.jsonl", name=name,
                                  **({"fault": list(faults)} if faults else {}))
    return f"command: {json.dumps(command)}, args: {json.dumps(args)}{extra}"


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def rss_mb() -> float:
    return _status_mb("VmRSS")


async def test_a_server_that_never_replies_times_out_and_the_event_loop_stays_responsive(tmp_path: Path) -> None:
    loaded = load(tmp_path, {"slow": stdio_block(tmp_path, "slow", extra=", timeout: 1.5")})
    pool = McpPool()
    try:
        got = await pool.acquire(loaded)
        tool = next(t for t in visible_tools(got.connections) if t.exposed == "sleep")
        lags: list[float] = []

        async def ticker() -> None:  # what every other session on this loop feels
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - before - 0.01)

        ticking = asyncio.ensure_future(ticker())
        started = time.perf_counter()
        recorder = CallRecorder("desk", "s1")
        try:
            await call_tool(tool, {"seconds": 600}, recorder)
        except ToolFailure as exc:
            failure = str(exc)
        else:
            raise AssertionError("a call with no answer did not fail")
        elapsed = time.perf_counter() - started
        ticking.cancel()
        assert failure == "the slow service did not answer in time"
        assert 1.4 < elapsed < 60  # the 1.5 s timeout, not the server's 600 s sleep
        assert recorder.records[-1].outcome == "timeout"
        # a loop that waited on the server would stall for the whole 1.5 s timeout; a
        # loaded machine's scheduling lag is far below that
        assert max(lags) < 0.5, f"loop lag {max(lags) * 1000:.0f} ms while the server hung"
        # the request was cancelled, not left running: the connection still serves
        echo = next(t for t in visible_tools(got.connections) if t.exposed == "echo")
        assert await call_tool(echo, {"text": "still here"}, recorder) == "still here"
    finally:
        await pool.aclose()


async def test_a_server_writing_garbage_to_stdout_fails_alone_and_other_servers_keep_working(tmp_path: Path) -> None:
    loaded = load(tmp_path, {
        "noisy": stdio_block(tmp_path, "noisy", "garbage-stdout", extra=", connect_timeout: 5"),
        "calm": stdio_block(tmp_path, "calm"),
    })
    pool = McpPool(retry_in_background=False)
    try:
        got = await pool.acquire(loaded)
        calm = got.connections["calm"]
        assert calm.state == "up"
        recorder = CallRecorder("desk", "s1")
        tools = {t.exposed: t for t in visible_tools(got.connections)}
        calm_echo = tools.get("calm_echo") or tools["echo"]
        assert await call_tool(calm_echo, {"text": "fine"}, recorder) == "fine"
        assert [r["args"] for r in read_records(tmp_path / "calm.jsonl")] == [{"text": "fine"}]
        noisy = got.connections["noisy"]
        if noisy.state == "up":  # the SDK skips lines that are not JSON-RPC: the server works
            noisy_echo = tools.get("noisy_echo") or tools["echo"]
            assert await call_tool(noisy_echo, {"text": "through the noise"}, recorder) == "through the noise"
        else:  # or it is reported down with the reason, and only its tools are missing
            assert noisy.error
            assert "noisy" in got.unavailable
    finally:
        await pool.aclose()


async def test_a_50_mb_result_is_capped_with_a_marker_and_memory_stays_bounded(tmp_path: Path) -> None:
    loaded = load(tmp_path, {"bulk": stdio_block(tmp_path, "bulk", extra=", timeout: 60")})
    pool = McpPool()
    try:
        got = await pool.acquire(loaded)
        tool = next(t for t in visible_tools(got.connections) if t.exposed == "big")
        before = peak_rss_mb()
        recorder = CallRecorder("desk", "s1")
        text = await call_tool(tool, {"size": 50 * 1024 * 1024}, recorder)
        grown = peak_rss_mb() - before
        assert len(text) < 16384 + 200
        assert text.endswith("showing the first 16384]")
        assert recorder.records[-1].result_chars == len(text)
        # the SDK holds the message while it decodes it (the recorder sends the text
        # twice, as content and as structured content: a 100 MB line, decoded into a
        # few copies); the bound comes from stdio_lines.MAX_LINE_CHARS, and nothing
        # keeps the result afterwards: a second call does not raise the peak
        assert grown < 1024, f"peak RSS grew {grown:.0f} MB"
        gc.collect()
        held = rss_mb()
        await call_tool(tool, {"size": 50 * 1024 * 1024}, recorder)
        gc.collect()
        assert rss_mb() - held < 100, "memory held on to after a capped result"
    finally:
        await pool.aclose()


async def test_a_stdio_line_over_the_limit_is_skipped_unread_and_its_request_gets_an_error() -> None:
    from voice_runtime.mcp.stdio_lines import whole_lines

    async def chunks():  # a response too long to hold, between two ordinary messages
        yield '{"jsonrpc": "2.0", "id": 1, "result": {}}\n{"jsonrpc": "2.0", "id": 7, "result": {"text": "'
        for _ in range(50):
            yield "x" * 1000
        yield '"}}\n{"jsonrpc": "2.0", "method": "notifications/message"}\n'

    out = "".join([piece async for piece in whole_lines(chunks(), limit=10_000)])
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert lines[1]["id"] == 7 and lines[1]["error"]["message"].startswith("message too large")
    assert lines[2] == {"jsonrpc": "2.0", "method": "notifications/message"}
    assert len(lines) == 3


async def test_whole_lines_hands_on_every_line_intact_however_the_text_is_chunked() -> None:
    from voice_runtime.mcp.stdio_lines import whole_lines

    text = "".join(f'{{"n": {i}, "pad": "{"y" * (i * 37 % 500)}"}}\n' for i in range(300))

    async def chunks(size: int):
        for i in range(0, len(text), size):
            yield text[i:i + size]

    for size in (1, 7, 64, 4096, len(text)):
        pieces = [p async for p in whole_lines(chunks(size))]
        assert "".join(pieces) == text
        assert all(p.endswith("\n") for p in pieces)


async def test_a_stdio_server_crash_looping_ten_times_backs_off_more_and_more_and_leaves_no_zombie(
    tmp_path: Path,
) -> None:
    from mcp_servers.harness import is_zombie, pid_alive, read_events
    from voice_runtime.mcp.connection import McpConnection

    loaded = load(tmp_path, {
        "flaky": stdio_block(tmp_path, "flaky", "exit-after=0.3"),
        "steady": stdio_block(tmp_path, "steady"),
    })
    servers = loaded.spec.mcp_servers
    # the backoff's scale is shortened so the crashes fit in a test; its shape is the product's.
    # Ten crashes: the wait doubles from 0.05 s to its 0.4 s cap by the fourth, then holds
    # (each start costs a second of CPU importing the MCP SDK: twenty missed a 60 s budget
    # on a loaded machine, and proved no more)
    flaky = McpConnection("flaky", servers["flaky"], backoff=(0.05, 0.4))
    steady = McpConnection("steady", servers["steady"])
    await steady.connect()
    recorder = CallRecorder("desk", "s1")
    echo = next(t for t in visible_tools({"steady": steady}) if t.exposed == "echo")
    try:
        await flaky.start()
        deadline = time.monotonic() + 60
        answered = 0
        while len(read_events(tmp_path / "flaky.jsonl")) < 10 and time.monotonic() < deadline:
            # the agent keeps talking: the other server answers all along
            assert await call_tool(echo, {"text": f"turn {answered}"}, recorder) == f"turn {answered}"
            answered += 1
            await asyncio.sleep(0.1)
        spawns = read_events(tmp_path / "flaky.jsonl")
        assert len(spawns) >= 10, f"only {len(spawns)} starts in 60 s"
        delays = flaky.retry_delays
        # jittered doubling (x0.8-1.2) up to the cap: each wait at least 1.3x the one before, until the cap
        for before, after in zip(delays, delays[1:]):
            assert after >= min(before * 1.3, 0.4 * 0.8), delays
        assert max(delays) >= 0.3 and delays[0] < 0.1
        assert answered > 10
    finally:
        await flaky.aclose()
        await steady.aclose()
    pids = [e["pid"] for e in read_events(tmp_path / "flaky.jsonl")]
    await asyncio.sleep(0.5)
    assert not [p for p in pids if pid_alive(p) or is_zombie(p)]


async def test_a_call_cancelled_when_the_user_interrupts_is_recorded_as_cancelled_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    loaded = load(tmp_path, {"slow": stdio_block(tmp_path, "slow")})
    pool = McpPool()
    try:
        got = await pool.acquire(loaded)
        tools = {t.exposed: t for t in visible_tools(got.connections)}
        recorder = CallRecorder("desk", "s1")
        call = asyncio.ensure_future(call_tool(tools["sleep"], {"seconds": 30}, recorder))
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        call.cancel()  # what livekit does to a tool's task when the caller interrupts
        try:
            await call
        except asyncio.CancelledError:
            pass
        assert time.perf_counter() - started < 10  # at once, not after the server's 30 s sleep
        assert recorder.records[-1].outcome == "cancelled"
        assert await call_tool(tools["echo"], {"text": "next"}, recorder) == "next"
    finally:
        await pool.aclose()
