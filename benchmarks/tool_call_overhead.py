"""What voice-runtime's tool path adds to an MCP tool call, over stdio and streamable HTTP.

voice-runtime: the tools a session sees (`voice_runtime.mcp.toolset.visible_tools` over a
warm `McpPool`'s connections) called with `call_tool(tool, args, recorder)` and a
`CallRecorder`: the call timeout, result text and cap, the `ToolCallRecord` (argument
digest, latency, outcome), its INFO log line (formatted and written to /dev/null, as a
production handler would pay for it), the Prometheus counter and histogram and the
`voice_runtime_tool_called` hook.

Baseline: `mcp.ClientSession.call_tool` on a raw connection of the same kind (its own
stdio server process; its own session on the same HTTP server).

Both call the real test recorder's `echo` tool (`tests/mcp_servers/recorder.py`)
sequentially. After `--warmup` untimed calls per side, the `--calls` timed calls per
side are made in alternating blocks of `--block` (who goes first alternates too), so
the noise of a shared machine falls on both sides alike.

    python benchmarks/tool_call_overhead.py                 # 2,000 calls per side and transport
    python benchmarks/tool_call_overhead.py --calls 20 --warmup 5 --block 5
    python benchmarks/tool_call_overhead.py --profile       # + where voice-runtime's time goes (stderr)

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ (the MCP harness) on sys.path
from _common import emit, load_spec, log_tool_calls_like_serve, machine, percentile, progress, quiet_logging

TARGET_RATIO_P50 = 1.10
ARGS = {"text": "hello from the benchmark"}


async def timed_block(call: Callable[[], Awaitable[Any]], n: int, out: list[float]) -> None:
    clock = time.perf_counter
    for _ in range(n):
        started = clock()
        await call()
        out.append((clock() - started) * 1000)


Side = tuple[Callable[[], Awaitable[Any]], Callable[[], None]]  # (one call, set-up before each block)


async def compare(label: str, sides: dict[str, Side], args: argparse.Namespace) -> dict[str, Any]:
    """Alternating blocks of every side; the first side is voice-runtime, "baseline" the raw session."""
    for call, prepare in sides.values():
        prepare()
        await timed_block(call, args.warmup, [])
    times: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    blocks = -(-args.calls // args.block)
    for i in range(blocks):
        n = min(args.block, args.calls - i * args.block)
        for name in order if i % 2 == 0 else reversed(order):
            call, prepare = sides[name]
            prepare()
            await timed_block(call, n, times[name])
    p50 = {name: percentile(ms, 50) for name, ms in times.items()}
    ours, base = p50["voice_runtime"], p50["baseline"]
    borrowed: dict[str, Any] = {}
    if "borrowed" in p50:
        progress(f"{label}: borrowed through a gateway process p50 {p50['borrowed']:.3f} ms, "
                 f"ratio {p50['borrowed'] / base:.3f}")
        borrowed = {f"{label}_borrowed_p50_ms": round(p50["borrowed"], 4),
                    f"{label}_borrowed_p99_ms": round(percentile(times["borrowed"], 99), 4),
                    f"{label}_borrowed_ratio_p50": round(p50["borrowed"] / base, 4)}
    progress(f"{label}: voice-runtime p50 {ours:.3f} ms, raw ClientSession p50 {base:.3f} ms, ratio {ours / base:.3f}"
             f" (connection only {p50['connection'] / base:.3f}, no log line {p50['no_log'] / base:.3f})")
    return {
        f"{label}_p50_ms": round(ours, 4),
        f"{label}_p99_ms": round(percentile(times["voice_runtime"], 99), 4),
        f"{label}_mean_ms": round(statistics.fmean(times["voice_runtime"]), 4),
        f"{label}_baseline_p50_ms": round(base, 4),
        f"{label}_baseline_p99_ms": round(percentile(times["baseline"], 99), 4),
        f"{label}_baseline_mean_ms": round(statistics.fmean(times["baseline"]), 4),
        f"{label}_ratio_p50": round(ours / base, 4),
        f"{label}_overhead_p50_us": round((ours - base) * 1000, 1),
        # where the overhead is: the same connection without the recorder, and the
        # recorder without its INFO line (both are voice-runtime code, measured alike)
        f"{label}_breakdown": {
            "connection_p50_ms": round(p50["connection"], 4),
            "connection_ratio_p50": round(p50["connection"] / base, 4),
            "no_log_line_p50_ms": round(p50["no_log"], 4),
            "no_log_line_ratio_p50": round(p50["no_log"] / base, 4),
        },
        **borrowed,
    }


@contextlib.asynccontextmanager
async def raw_session(transport: Any) -> Any:
    from mcp import ClientSession

    async with transport as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            yield session


def profile_ours(call: Callable[[], Awaitable[Any]], n: int) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            await call()
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        progress(out.getvalue())

    return run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx2
    from mcp import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp_servers.harness import start_http_server, stdio_command

    from voice_runtime.mcp.pool import McpPool
    from voice_runtime.mcp.toolset import call_tool, visible_tools
    from voice_runtime.session.activity import session_sinks
    from voice_runtime.observe.tool_calls import CallRecorder

    log_tool_calls_like_serve()
    tool_log = logging.getLogger("voice_runtime.tools")
    result: dict[str, Any] = {
        "benchmark": "tool_call_overhead",
        "tool": "echo",
        "calls": args.calls,
        "warmup": args.warmup,
        "block": args.block,
        "tool_call_log": "INFO, formatted, written to /dev/null",
    }
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tool_call_overhead-")))
        web = stack.enter_context(start_http_server(name="web"))
        command, cargs = stdio_command(name="local")
        spec = "\n".join([
            "apiVersion: voice-runtime/v1",
            "name: bench-tools",
            "instructions: Use the tools.",
            "pipeline:",
            "  llm: {provider: openai, model: gpt-4o-mini, base_url: 'http://127.0.0.1:9/v1', api_key: sk-fake}",
            "  text_only: true",
            "mcp_servers:",
            f"  local: {{command: {json.dumps(command)}, args: {json.dumps(cargs)}, allowed_tools: [echo]}}",
            f"  web: {{url: {json.dumps(web.url)}, allowed_tools: [echo]}}",
            "",
        ])
        plugins, loaded = load_spec(tmp / "agents.d", spec)
        # "borrowed": what a serve job process does, through a gateway in another process
        host = stack.enter_context(subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_gateway_host.py")), str(tmp), str(tmp / "agents.d")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        stack.callback(host.stdin.close)  # type: ignore[union-attr]
        if host.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise SystemExit("the gateway host did not start")
        from voice_runtime.mcp.gateway import GatewayPool

        gateway_pool = GatewayPool.from_state_dir(tmp, "bench")
        assert gateway_pool is not None
        lent = await gateway_pool.acquire(loaded)
        borrowed_tool = next(t for t in visible_tools(lent.connections) if t.server == "local")
        pool = McpPool()
        await pool.warm([loaded])
        acquired = await pool.acquire(loaded)
        if acquired.unavailable:
            raise SystemExit(f"MCP servers did not come up: {acquired.unavailable}")
        recorder = CallRecorder(loaded.name, "bench-session", session_sinks(plugins))
        tools = {t.server: t for t in visible_tools(acquired.connections)}  # local_echo, web_echo
        try:
            async with contextlib.AsyncExitStack() as raw:
                stdio = await raw.enter_async_context(
                    raw_session(stdio_client(StdioServerParameters(command=command, args=cargs))))
                http_client = await raw.enter_async_context(httpx2.AsyncClient())
                http = await raw.enter_async_context(
                    raw_session(streamable_http_client(web.url, http_client=http_client)))

                for label, server, session in (("stdio", "local", stdio), ("http", "web", http)):
                    tool = tools[server]

                    def ours(tool: Any = tool) -> Awaitable[str]:
                        return call_tool(tool, ARGS, recorder)

                    def connection(tool: Any = tool) -> Awaitable[Any]:
                        return tool.conn.call("echo", ARGS)

                    def base(session: Any = session) -> Awaitable[Any]:
                        return session.call_tool("echo", ARGS)

                    # both must really reach the server and answer the same
                    got, raw_result = await ours(), await base()
                    if got != ARGS["text"] or raw_result.content[0].text != ARGS["text"]:
                        raise SystemExit(f"{label}: unexpected echo {got!r} / {raw_result!r}")
                    log_on = lambda: tool_log.setLevel(logging.INFO)  # noqa: E731
                    log_off = lambda: tool_log.setLevel(logging.WARNING)  # noqa: E731
                    sides: dict[str, Side] = {
                        "voice_runtime": (ours, log_on),
                        "baseline": (base, log_on),
                        "connection": (connection, log_on),
                        "no_log": (ours, log_off),
                    }
                    if label == "stdio":
                        def borrowed() -> Awaitable[str]:
                            return call_tool(borrowed_tool, ARGS, recorder)

                        sides["borrowed"] = (borrowed, log_on)
                    result.update(await compare(label, sides, args))
                    log_on()
                    if args.profile:
                        await profile_ours(ours, min(args.calls, 500))()
        finally:
            await pool.aclose()
            await gateway_pool.aclose()
    # per transport: the check call, then warm-up and timed calls of the two recorder sides
    # (stdio: three, with the borrowed one)
    expected = 2 * (1 + 2 * (args.calls + args.warmup)) + (args.calls + args.warmup) \
        + (2 * min(args.calls, 500) if args.profile else 0)
    if len(recorder.records) != expected or any(r.outcome != "ok" for r in recorder.records):
        raise SystemExit(f"expected {expected} ok tool call records, got {len(recorder.records)}")
    result["records"] = len(recorder.records)
    result["target_ratio_p50"] = TARGET_RATIO_P50
    result["meets_target"] = max(result["stdio_ratio_p50"], result["http_ratio_p50"]) <= TARGET_RATIO_P50
    result["machine"] = machine()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per side and transport (default: 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per side first (default: 100)")
    parser.add_argument("--block", type=int, default=50, help="calls per alternating block (default: 50)")
    parser.add_argument("--profile", action="store_true", help="cProfile voice-runtime's calls; stats on stderr")
    args = parser.parse_args()
    if args.calls < 1 or args.warmup < 0 or args.block < 1:
        parser.error("--calls and --block must be at least 1, --warmup at least 0")
    quiet_logging()
    emit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
