"""Many text sessions in one process, each running one tool-calling turn: turns per second
and memory per session, voice-runtime against the same sessions built by hand with livekit.

Every session talks to the real `openai.LLM` plugin pointed at a local fake OpenAI server
(`tests/fakes/openai_chat.py`, scripted: call `echo`, then answer with its result) and to
one shared MCP server (the test recorder over streamable HTTP), and runs one turn: model
-> `echo` tool on the MCP server -> model -> answer. Each turn's events are checked.

voice-runtime: `SessionRunner(loaded, plugins, text_only=True, pool=shared_pool)` +
`start()` + `run_turn(...)`, the pool warmed once for the process (as `serve` does).

Baseline: `AgentSession(llm=openai.LLM(base_url=fake), vad=None, turn_handling=
{"turn_detection": None})` with `Agent(instructions, tools=[mcp.MCPToolset(...)])`, its
MCP connection made per session (livekit's way), and `session.run(user_input=...)`.

Each side and size runs in a fresh worker process (this script with `--worker`): after
imports and one untimed warm-up session it measures RSS, starts N sessions concurrently,
then runs `--rounds` rounds of N concurrent turns (one per session). `turns_per_s` is N /
the median round's wall time; `rss_mb_per_session` is (peak RSS while all N sessions are
open - RSS before) / N, the peak taken from the kernel's high-water mark (reset before
the sessions start).

    python benchmarks/concurrency.py                  # N = 10, 50, 100
    python benchmarks/concurrency.py --sizes 2 --rounds 1

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ (the fakes, the MCP harness) on sys.path
from _common import emit, load_spec, log_tool_calls_like_serve, machine, progress, quiet_logging, spec_yaml

INSTRUCTIONS = "You echo what the caller says with the echo tool."
TOOL_ARGS = {"text": "hello"}
USER_INPUT = "please echo hello"
WORKER_TIMEOUT = 110.0


# -- memory --------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        kib = _status_kib("VmRSS")
        if kib is None:
            raise SystemExit("cannot read this process's RSS (no psutil, no /proc)") from None
        return kib / 1024


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_mb(sampled: float) -> float:
    """The high-water mark since `reset_peak`, or the largest sample without one."""
    kib = _status_kib("VmHWM")
    return max(sampled, kib / 1024) if kib is not None else sampled


# -- the two kinds of session -------------------------------------------------------------


def check_turn(result: Any) -> None:
    kinds = [type(ev).__name__ for ev in result.events]
    outputs = [ev.item for ev in result.events if type(ev).__name__ == "FunctionCallOutputEvent"]
    replies = [ev.item for ev in result.events if type(ev).__name__ == "ChatMessageEvent" and ev.item.role == "assistant"]
    # livekit's default MCP result is the content item's JSON ({"type":"text","text":"hello",...});
    # voice-runtime hands the model the text
    if (len(outputs) != 1 or outputs[0].is_error or TOOL_ARGS["text"] not in outputs[0].output
            or not replies or (replies[-1].text_content or "") != f"Result: {outputs[0].output}"):
        raise RuntimeError(f"unexpected turn: {kinds} {[(o.output, o.is_error) for o in outputs]} "
                           f"{[r.text_content for r in replies]}")


class Ours:
    def __init__(self, plugins: Any, loaded: Any, pool: Any) -> None:
        self.plugins, self.loaded, self.pool = plugins, loaded, pool
        self.runner: Any = None

    async def start(self) -> None:
        from voice_runtime.session.runner import SessionRunner

        self.runner = SessionRunner(self.loaded, self.plugins, text_only=True, pool=self.pool)
        await self.runner.start()

    async def turn(self) -> None:
        check_turn(await self.runner.run_turn(USER_INPUT))

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.aclose()


class Baseline:
    def __init__(self, llm_url: str, mcp_url: str) -> None:
        self.llm_url, self.mcp_url = llm_url, mcp_url
        self.session: Any = None
        self.toolset: Any = None

    async def start(self) -> None:
        from livekit.agents import Agent, AgentSession, mcp
        from livekit.plugins import openai

        self.toolset = mcp.MCPToolset(
            id="web", mcp_server=mcp.MCPServerHTTP(self.mcp_url, transport_type="streamable_http"))
        self.session = AgentSession(
            llm=openai.LLM(model="gpt-4o-mini", base_url=self.llm_url, api_key="sk-fake"),
            vad=None, turn_handling={"turn_detection": None},
        )
        await self.session.start(Agent(instructions=INSTRUCTIONS, tools=[self.toolset]))

    async def turn(self) -> None:
        check_turn(await self.session.run(user_input=USER_INPUT))

    async def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.session.aclose()
        if self.toolset is not None:
            with contextlib.suppress(BaseException):
                await self.toolset.aclose()


# -- a worker: one side, one size, its own process ----------------------------------------


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from voice_runtime.session.providers import import_livekit_plugins
    from voice_runtime.mcp.pool import McpPool

    import_livekit_plugins()  # main thread, as serve does before any job
    log_tool_calls_like_serve()
    pool = None
    with tempfile.TemporaryDirectory(prefix="concurrency-") as tmp:
        if args.worker == "voice-runtime":
            plugins, loaded = load_spec(Path(tmp) / "agents.d", spec_yaml(
                "bench-concurrency", args.llm_url, {"web": {"url": args.mcp_url}}, instructions=INSTRUCTIONS))
            pool = McpPool()
            await pool.warm([loaded])
            if (await pool.acquire(loaded)).unavailable:
                raise SystemExit("the MCP server is not reachable")

            def make() -> Any:
                return Ours(plugins, loaded, pool)
        else:
            def make() -> Any:
                return Baseline(args.llm_url, args.mcp_url)

        try:
            # untimed: lazy imports and first connections are not a session's cost
            first = make()
            try:
                await first.start()
                await first.turn()
            finally:
                await first.close()
            del first
            gc.collect()
            before = rss_mb()
            hwm_reset = reset_peak()
            sessions = [make() for _ in range(args.n)]
            try:
                t0 = time.perf_counter()
                await asyncio.gather(*(s.start() for s in sessions))
                start_s = time.perf_counter() - t0
                rounds = []
                for _ in range(args.rounds):
                    t1 = time.perf_counter()
                    await asyncio.gather(*(s.turn() for s in sessions))
                    rounds.append(time.perf_counter() - t1)
                peak = peak_mb(rss_mb())  # every session is still open
            finally:
                await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        finally:
            if pool is not None:
                await pool.aclose()
    turns_s = statistics.median(rounds)
    return {
        "n": args.n,
        "start_s": round(start_s, 3),
        "turns_s": round(turns_s, 3),
        "round_s": [round(r, 3) for r in rounds],
        "turns_per_s": round(args.n / turns_s, 2),
        "sessions_started_per_s": round(args.n / start_s, 2),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_mb_per_session": round((peak - before) / args.n, 3),
        "peak_from": "VmHWM" if hwm_reset else "sampled RSS",
    }


def run_worker(side: str, n: int, rounds: int, llm_url: str, mcp_url: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--n", str(n), "--rounds", str(rounds),
           "--llm-url", llm_url, "--mcp-url", mcp_url]
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=WORKER_TIMEOUT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{side} worker for N={n} failed with exit code {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    data = json.loads(lines[-1])
    progress(f"N={n:>3} {side:>13}: {data['turns_per_s']:7.1f} turns/s, "
             f"{data['rss_mb_per_session']:6.2f} MiB/session, start {data['start_s']:.2f} s "
             f"(worker {time.perf_counter() - started:.1f} s)")
    return data


def parent(args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    from fakes.openai_chat import FakeOpenAI
    from mcp_servers.harness import start_http_server

    fake = FakeOpenAI()
    fake.use_tool_then_answer("echo", TOOL_ARGS)
    llm_url = fake.start_in_thread()  # its own loop: the workers only run sessions
    try:
        with start_http_server(name="web") as web:
            per_n: dict[str, dict[str, Any]] = {}
            for i, n in enumerate(sizes):
                sides = ["voice-runtime", "baseline"] if i % 2 == 0 else ["baseline", "voice-runtime"]
                got = {side: run_worker(side, n, args.rounds, llm_url, web.url) for side in sides}
                per_n[str(n)] = {"voice_runtime": got["voice-runtime"], "baseline": got["baseline"]}
    finally:
        fake.stop_thread()
    chat_requests = len(fake.chat_requests)
    expected = sum(2 * 2 * (n * args.rounds + 1) for n in sizes)  # 2 sides x (N x rounds + warm-up) turns x 2 requests
    if chat_requests != expected:
        raise SystemExit(f"the fake LLM saw {chat_requests} chat requests, expected {expected}")

    top = per_n[str(max(sizes))]
    ours, base = top["voice_runtime"], top["baseline"]
    return {
        "benchmark": "concurrency",
        "what": "N concurrent text sessions in one process, one tool-calling turn each (LLM -> MCP echo -> LLM)",
        "baseline": "livekit AgentSession + Agent(tools=[MCPToolset]) per session, MCP connected per session",
        "sizes": sizes,
        "n": max(sizes),
        "rounds": args.rounds,
        "stat": "turns_per_s = N / median wall time of a round of N concurrent turns (one per session)",
        "turns_per_s": ours["turns_per_s"],
        "baseline_turns_per_s": base["turns_per_s"],
        "rss_mb_per_session": ours["rss_mb_per_session"],
        "baseline_rss_mb_per_session": base["rss_mb_per_session"],
        "sessions_started_per_s": ours["sessions_started_per_s"],
        "baseline_sessions_started_per_s": base["sessions_started_per_s"],
        "per_n": per_n,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,100", help="comma-separated session counts (default: 10,50,100)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of N concurrent turns per worker; the median round counts (default: 3)")
    parser.add_argument("--worker", choices=("voice-runtime", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--llm-url", help=argparse.SUPPRESS)
    parser.add_argument("--mcp-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_logging()
    if args.worker:
        emit(asyncio.run(asyncio.wait_for(worker(args), WORKER_TIMEOUT - 10)))
        return
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes takes comma-separated integers")
    if not sizes or sizes[0] < 1 or args.rounds < 1:
        parser.error("--sizes needs positive counts and --rounds at least 1")
    emit(parent(args, sizes))


if __name__ == "__main__":
    main()
