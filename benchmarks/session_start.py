"""Time from job entry to "agent ready with every MCP tool listed", for a spec with three
MCP servers (one stdio, two streamable HTTP), voice-runtime against plain livekit.

voice-runtime (what a `serve` job does): the process's `McpPool` was warmed when the
spec was accepted; a job builds a `SessionRunner(loaded, plugins, pool=pool)` and
`start()`s it (text-only: no room, no audio). The clock stops when `start()` returned
and the agent holds all of the spec's tools.

Baseline (livekit's documented way): per session, one `mcp.MCPToolset` per server
(`MCPServerStdio`, `MCPServerHTTP(url, transport_type="streamable_http")`), set up
concurrently, then the same `AgentSession` text-only start with an `Agent` holding the
toolsets; its clock stops at the same point. Both sides build the same `openai.LLM`
against a local fake OpenAI server and see the same ten tools (allow-lists keep the
three recorder servers' names apart, because livekit raises on duplicate names).

`--path tools` times only the MCP part instead: `connect_mcp()` + `build_tools()`
against `toolset.setup()` x3 + their tools.

Sessions alternate between the two sides (the machine is shared and noisy); each side
first runs `--warmup` untimed sessions. MCP servers are the real test recorder
(`tests/mcp_servers/recorder.py`) on 127.0.0.1.

    python benchmarks/session_start.py                    # 30 sessions per side
    python benchmarks/session_start.py --sessions 3 --warmup 1

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ (the fakes, the MCP harness) on sys.path
from _common import emit, load_spec, machine, percentile, progress, quiet_logging, spec_yaml

TARGET_P50_MS = 20.0
TARGET_SPEEDUP = 20.0
INSTRUCTIONS = "You answer questions with the tools."
# the recorder serves the same ten tools on every transport; allow-lists give each
# server its own names (livekit refuses duplicate tool names at session start)
HTTP1_TOOLS = ["add"]
HTTP2_TOOLS = ["get_weather"]
STDIO_TOOLS = ["echo", "whoami", "get_env", "env_keys", "sleep", "big", "fail", "crash"]
ALL_TOOLS = sorted(STDIO_TOOLS + HTTP1_TOOLS + HTTP2_TOOLS)


def tool_names(tools: list[Any]) -> list[str]:
    names: list[str] = []
    for tool in tools:
        if hasattr(tool, "tools"):  # a livekit Toolset
            names.extend(tool_names(list(tool.tools)))
        else:
            names.append(tool.info.name)
    return sorted(names)


class Bench:
    def __init__(self, path: str, fake_url: str, plugins: Any, loaded: Any, stdio: tuple[str, list[str]],
                 urls: tuple[str, str]) -> None:
        self.path = path
        self.fake_url = fake_url
        self.plugins = plugins
        self.loaded = loaded
        self.stdio = stdio
        self.urls = urls
        self.pool: Any = None

    async def warm_pool(self) -> None:
        from voice_runtime.mcp.pool import McpPool

        self.pool = McpPool()
        await self.pool.warm([self.loaded])
        acquired = await self.pool.acquire(self.loaded)
        if acquired.unavailable:
            raise SystemExit(f"MCP servers did not come up: {acquired.unavailable}")

    # -- voice-runtime -----------------------------------------------------------------

    async def ours(self) -> float:
        from voice_runtime.session.runner import SessionRunner

        started = time.perf_counter()
        runner = SessionRunner(self.loaded, self.plugins, text_only=True, pool=self.pool)
        try:
            if self.path == "start":
                await runner.start()
                tools = list(runner.session.current_agent.tools)
            else:
                await runner.connect_mcp()
                tools = runner.build_tools()
            names = tool_names(tools)
            elapsed = time.perf_counter() - started
        finally:
            await runner.aclose()
        if names != ALL_TOOLS:
            raise SystemExit(f"voice-runtime session has tools {names}, expected {ALL_TOOLS}")
        return elapsed * 1000

    async def llm_init(self) -> float:
        """What building the session's `openai.LLM` alone costs (both sides build one per
        session): shown beside the figures as the part neither MCP path controls."""
        from livekit.plugins import openai

        started = time.perf_counter()
        llm = openai.LLM(model="gpt-4o-mini", base_url=self.fake_url, api_key="sk-fake")
        elapsed = time.perf_counter() - started
        await llm.aclose()
        return elapsed * 1000

    # -- plain livekit -----------------------------------------------------------------

    def _toolsets(self) -> list[Any]:
        from livekit.agents import mcp

        command, args = self.stdio
        return [
            mcp.MCPToolset(id="local", mcp_server=mcp.MCPServerStdio(command, args)),
            mcp.MCPToolset(id="web1", mcp_server=mcp.MCPServerHTTP(
                self.urls[0], transport_type="streamable_http", allowed_tools=HTTP1_TOOLS)),
            mcp.MCPToolset(id="web2", mcp_server=mcp.MCPServerHTTP(
                self.urls[1], transport_type="streamable_http", allowed_tools=HTTP2_TOOLS)),
        ]

    async def baseline(self) -> float:
        from livekit.agents import Agent, AgentSession
        from livekit.plugins import openai

        started = time.perf_counter()
        toolsets = self._toolsets()
        session = None
        try:
            if self.path == "start":
                session = AgentSession(
                    llm=openai.LLM(model="gpt-4o-mini", base_url=self.fake_url, api_key="sk-fake"),
                    vad=None, turn_handling={"turn_detection": None},
                )
            await asyncio.gather(*(ts.setup() for ts in toolsets))
            # stdio has no allow-list in livekit: filter after listing
            toolsets[0].filter_tools(lambda t: t.info.name in STDIO_TOOLS)
            if session is not None:
                await session.start(Agent(instructions=INSTRUCTIONS, tools=toolsets))
                tools = list(session.current_agent.tools)
            else:
                tools = toolsets
            names = tool_names(tools)
            elapsed = time.perf_counter() - started
        finally:
            if session is not None:
                with contextlib.suppress(Exception):
                    await session.aclose()
            for ts in toolsets:
                with contextlib.suppress(BaseException):
                    await ts.aclose()
        if names != ALL_TOOLS:
            raise SystemExit(f"baseline session has tools {names}, expected {ALL_TOOLS}")
        return elapsed * 1000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from fakes.openai_chat import FakeOpenAI
    from mcp_servers.harness import start_http_server, stdio_command

    from voice_runtime.session.providers import import_livekit_plugins

    import_livekit_plugins()  # on the main thread, as serve does before any job
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="session_start-")))
        web1 = stack.enter_context(start_http_server(name="web1"))
        web2 = stack.enter_context(start_http_server(name="web2"))
        stdio = stdio_command(name="local")
        fake = FakeOpenAI()
        fake_url = await fake.start()
        try:
            servers = {
                "local": {"command": stdio[0], "args": stdio[1], "allowed_tools": STDIO_TOOLS},
                "web1": {"url": web1.url, "allowed_tools": HTTP1_TOOLS},
                "web2": {"url": web2.url, "allowed_tools": HTTP2_TOOLS},
            }
            plugins, loaded = load_spec(tmp / "agents.d", spec_yaml("bench-start", fake_url, servers,
                                                                    instructions=INSTRUCTIONS))
            bench = Bench(args.path, fake_url, plugins, loaded, stdio, (web1.url, web2.url))
            pool_started = time.perf_counter()
            await bench.warm_pool()
            warm_ms = (time.perf_counter() - pool_started) * 1000
            progress(f"pool warmed in {warm_ms:.0f} ms (3 servers, before any job)")
            try:
                for _ in range(args.warmup):
                    await bench.ours()
                    await bench.baseline()
                ours: list[float] = []
                base: list[float] = []
                llm: list[float] = []
                for i in range(args.sessions):
                    # alternate who goes first: neither side always follows the other's teardown
                    order = (bench.ours, bench.baseline) if i % 2 == 0 else (bench.baseline, bench.ours)
                    for side in order:
                        ms = await side()
                        (ours if side == bench.ours else base).append(ms)
                    if args.path == "start":
                        llm.append(await bench.llm_init())
                    progress(f"session {i + 1}/{args.sessions}: voice-runtime {ours[-1]:.1f} ms, "
                             f"baseline {base[-1]:.1f} ms")
            finally:
                await bench.pool.aclose()
        finally:
            await fake.stop()

    p50, p95 = percentile(ours, 50), percentile(ours, 95)
    b50, b95 = percentile(base, 50), percentile(base, 95)
    speedup = b50 / p50
    return {
        "benchmark": "session_start",
        "path": args.path,
        "what": ("job entry -> SessionRunner.start() returned with every MCP tool on the agent (warm McpPool)"
                 if args.path == "start" else
                 "connect_mcp() + build_tools() from a warm McpPool"),
        "baseline": ("livekit MCPToolset x3 (stdio + 2 streamable HTTP) set up per session, then AgentSession.start"
                     if args.path == "start" else "livekit MCPToolset x3 setup() per session, then their tools"),
        "servers": {"stdio": 1, "streamable_http": 2},
        "tools": len(ALL_TOOLS),
        "sessions": args.sessions,
        "warmup": args.warmup,
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "mean_ms": round(statistics.fmean(ours), 2),
        "baseline_p50_ms": round(b50, 2),
        "baseline_p95_ms": round(b95, 2),
        "baseline_mean_ms": round(statistics.fmean(base), 2),
        "speedup": round(speedup, 1),
        "pool_warm_ms": round(warm_ms, 1),
        # inside both sides' figures: openai.LLM() builds an httpx client with a fresh
        # SSL context (it loads the CA bundle) for every session
        "openai_llm_init_p50_ms": round(percentile(llm, 50), 2) if llm else None,
        "target_p50_ms": TARGET_P50_MS,
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": p50 <= TARGET_P50_MS and speedup >= TARGET_SPEEDUP,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30, help="timed sessions per side (default: 30)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed sessions per side first (default: 2)")
    parser.add_argument("--path", choices=("start", "tools"), default="start",
                        help="start: the whole session start (default); tools: only MCP connect + tool list")
    args = parser.parse_args()
    if args.sessions < 1 or args.warmup < 0:
        parser.error("--sessions must be at least 1 and --warmup at least 0")
    quiet_logging()
    emit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
