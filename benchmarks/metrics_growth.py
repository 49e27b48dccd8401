"""What `voice-runtime serve` keeps for the job processes that have come and gone,
and what one /metrics scrape costs, after 10 calls and after 1,000.

Two real `voice-runtime serve DIR --unregistered --simulate --idle-processes 2`
(the process executor: one job process per call, as in production), identical,
each serving one agent whose model (the fake OpenAI server of tests/fakes) calls
the `echo` tool of a real MCP server (tests/mcp_servers/recorder.py over stdio)
once per call. Calls are `POST /simulate?wait=1` with one turn, ``--concurrency``
at a time (default 4, the /simulate cap). "held" serves the small number of calls
(``--calls``, default 10) and stops there; "grown" serves the small number, then
up to the large one (default 1,000). Each checkpoint is read once no call runs (on
/metrics: every job process has ended and serve has seen it):

- ``metrics_files_N``, ``metrics_bytes_N``: the *.db files in grown's
  PROMETHEUS_MULTIPROC_DIR and their size (``metrics_disk_bytes_N``: blocks
  allocated; prometheus_client's files are sparse 64 KiB);
- ``journal_files_N``, ``journal_bytes_N``, ``journal_calls_N``: its tool-call
  journal (the status page's; it keeps the newest 100 calls by design);
- ``tool_calls_total_N``: the counter on /metrics, checked against the calls the
  MCP server answered;
- ``serve_rss_mb_N``, ``serve_fds_N``, ``serve_threads_N``, ``forkserver_rss_mb_N``,
  ``tree_processes_N``: grown's serve process, livekit's forkserver and the processes
  under serve (prewarmed jobs, the forkserver, MCP servers), to see a soak leak.

``scrape_ms_N`` (median) and ``scrape_p95_ms_N``: ``--scrapes`` GET /metrics of
held (at the small checkpoint) and of grown (at the large one), in turn over one
keep-alive connection each, once both process trees are quiet (under 10 % of a
core over 0.5 s: a pool refilling its prewarmed processes is not timed), so load
from elsewhere on the machine falls on both alike (``load_avg``: the 1-minute load
then).

Ratios (large vs small): ``ratio_scrape_ms``, ``ratio_metrics_files``,
``ratio_metrics_bytes``; target <= 1.2 each (``meets_target`` is null unless
the checkpoints are 10 and 1,000). Before serve folded ended processes' files
away (issue 20) the folder gained three files per call: 864 after 300 calls, and
a scrape took 41 ms at ~290 calls, 234 ms at ~2,900 and 1,322 ms at ~8,700.

    python benchmarks/metrics_growth.py                          # 10 and 1,000 calls; 10-25 min on 2 cores
    python benchmarks/metrics_growth.py --calls 2,6 --scrapes 5   # a tiny run (what the test uses)

Prints one JSON object on stdout; progress goes to stderr; exits 1 if serve fails,
a call is refused (429) or the counter and the MCP server disagree.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ on sys.path
import psutil
from _common import emit, machine, percentile, progress
from reload_latency import BenchError, Serve

TARGET_RATIO = 1.2
AGENT = "bench"
TOOL_CALLS = f'voice_runtime_tool_calls_total{{agent="{AGENT}",outcome="ok",server="tools",tool="echo"}}'
SESSIONS_ACTIVE = f'voice_runtime_sessions_active{{agent="{AGENT}"}}'


def metric(body: bytes, series: str) -> float | None:
    for line in body.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def call(port: int, timeout: float) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/simulate?wait=1", method="POST",
                                 data=json.dumps({"agent": AGENT, "turns": ["echo please"]}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def settle(serve: Serve, timeout: float) -> None:
    """No call running: serve has seen every job process end (not /status, which
    would prune the journal as a page view does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = serve.get("/metrics")
        if code == 200 and metric(body, SESSIONS_ACTIVE) == 0.0:
            return
        time.sleep(0.1)
    raise BenchError(f"calls still running after {timeout:.0f} s:\n{serve.tail()}")


def tree_cpu_seconds(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def quiet(serve: Serve, timeout: float, window: float = 0.5, busy: float = 0.1) -> None:
    """Until serve's tree (the job processes prewarming after the last calls, their
    MCP clients closing) uses under ``busy`` of a core: a scrape timed while the pool
    refills would measure the refill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(serve.proc.pid)
        time.sleep(window)
        if tree_cpu_seconds(serve.proc.pid) - before < busy * window:
            return
    progress(f"  serve still busy after {timeout:.0f} s; measuring anyway")


def folder_figures(folder: Path, pattern: str) -> tuple[int, int, int]:
    """(files, bytes, bytes allocated on disk) of the files matching ``pattern``."""
    files = [p.stat() for p in folder.rglob(pattern)]
    return len(files), sum(s.st_size for s in files), sum(s.st_blocks * 512 for s in files)


class Side:
    """One serve with its own agents, metrics and state folders under ``base``, one
    agent calling the echo tool of its own MCP server."""

    def __init__(self, base: Path, llm_url: str) -> None:
        from mcp_servers.harness import stdio_command

        self.base, self.agents, self.metrics_dir = base, base / "agents.d", base / "metrics"
        self.agents.mkdir(parents=True)
        self.metrics_dir.mkdir()
        self.record = base / "calls.jsonl"
        command, cmd_args = stdio_command(record=self.record, name="tools")
        (self.agents / f"{AGENT}.yaml").write_text(
            "apiVersion: voice-runtime/v1\n"
            f"name: {AGENT}\ninstructions: You answer with the tools.\n"
            f"pipeline:\n  llm: {{provider: openai, model: gpt-4o-mini, base_url: {json.dumps(llm_url)},"
            " api_key: sk-bench}\n  text_only: true\n"
            f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(cmd_args)}}}\n",
            encoding="utf-8")
        self.serve = Serve(self.agents, base, None, options=("--idle-processes", "2"),
                           env={"PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)})
        self.codes: list[int] = []

    def figures(self, n: int) -> dict[str, Any]:
        """The folders once no call runs, and the counter checked against the MCP server."""
        from mcp_servers.harness import read_records

        files, size, disk = folder_figures(self.metrics_dir, "*.db")
        journals = [p / "tool_calls" for p in self.base.glob("voice-runtime-*") if (p / "agents").is_dir()]
        journal = journals[0] if journals else self.base / "none"
        j_files, j_bytes, _ = folder_figures(journal, "*.jsonl")
        j_calls = sum(len(p.read_text().splitlines()) for p in journal.glob("*.jsonl"))
        _, body = self.serve.get("/metrics")
        counted, answered = metric(body, TOOL_CALLS) or 0.0, len(read_records(self.record))
        if counted != answered:
            raise BenchError(f"/metrics counts {counted} tool calls; the MCP server answered {answered}")
        procs = process_figures(self.serve.proc.pid, n)
        progress(f"[{n} calls] metrics folder {files} files, {size} bytes; journal {j_files} files, {j_calls} calls; "
                 f"serve {procs[f'serve_rss_mb_{n}']} MiB, {procs[f'serve_fds_{n}']} fds")
        return {f"metrics_files_{n}": files, f"metrics_bytes_{n}": size, f"metrics_disk_bytes_{n}": disk,
                f"journal_files_{n}": j_files, f"journal_bytes_{n}": j_bytes, f"journal_calls_{n}": j_calls,
                f"tool_calls_total_{n}": counted, **procs}


def process_figures(pid: int, n: int) -> dict[str, Any]:
    """serve's memory, descriptors and threads, its forkserver's memory and how many
    processes run under it, read with no call running."""
    serve = psutil.Process(pid)
    forkservers = [p for p in serve.children() if "forkserver" in " ".join(p.cmdline())]
    return {f"serve_rss_mb_{n}": round(serve.memory_info().rss / 2**20, 1), f"serve_fds_{n}": serve.num_fds(),
            f"serve_threads_{n}": serve.num_threads(),
            f"forkserver_rss_mb_{n}": round(forkservers[0].memory_info().rss / 2**20, 1) if forkservers else None,
            f"tree_processes_{n}": len(serve.children(recursive=True))}


def interleaved_scrapes(sides: list[Side], scrapes: int) -> list[list[float]]:
    """GET /metrics of each side in turn (who goes first alternates), so a neighbour's
    load falls on every side alike."""
    for side in sides:
        for _ in range(3):  # warm: the connection, the collector's imports
            side.serve.get("/metrics")
    times: list[list[float]] = [[] for _ in sides]
    for i in range(scrapes):
        order = list(range(len(sides)))[:: 1 if i % 2 == 0 else -1]
        for k in order:
            started = time.perf_counter()
            code, _ = sides[k].serve.get("/metrics")
            times[k].append((time.perf_counter() - started) * 1000)
            if code != 200:
                raise BenchError(f"/metrics answered {code}")
    return times


def run_calls(side: Side, count: int, args: argparse.Namespace) -> None:
    codes, done = side.codes, len(side.codes)
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        for code in pool.map(lambda _: call(side.serve.port, args.timeout), range(count)):
            codes.append(code)
            if len(codes) % 50 == 0:
                progress(f"  {len(codes)} calls ({codes.count(200)} ok)")
    if 429 in codes[done:]:
        raise BenchError(f"/simulate refused {codes[done:].count(429)} of {count} calls at concurrency "
                         f"{args.concurrency} (429), below its cap")
    settle(side.serve, args.timeout)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="10,1000", help="the two checkpoints: calls served in all, SMALL,LARGE "
                   "(default 10,1000)")
    p.add_argument("--concurrency", type=int, default=4, help="calls at once (default 4, the /simulate cap)")
    p.add_argument("--scrapes", type=int, default=100, help="GET /metrics timed per serve (default 100)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds after the last call ended (default 1)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds a call (or the settling) may take")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    try:
        args.calls = sorted({int(s) for s in args.calls.split(",") if s.strip()})
    except ValueError:
        args.calls = []
    if len(args.calls) != 2 or args.calls[0] < 1:
        p.error("--calls takes two checkpoints, whole numbers of at least 1 (e.g. 10,1000)")
    if args.concurrency < 1 or args.scrapes < 1:
        p.error("--concurrency and --scrapes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from fakes.openai_chat import FakeOpenAI

    args = parse_args(argv)
    small, large = args.calls
    started = time.perf_counter()
    llm = FakeOpenAI()
    llm.start_in_thread()
    llm.use_tool_then_answer("echo", {"text": "count me"})
    result: dict[str, Any] = {}
    sides: list[Side] = []
    try:
        with tempfile.TemporaryDirectory(prefix="metrics-growth-") as tmp:
            try:
                # held: stops at the small checkpoint, the baseline its scrapes are timed against
                held, grown = (Side(Path(tmp) / name, llm.base_url) for name in ("held", "grown"))
                sides = [held, grown]
                for side in sides:
                    side.serve.wait_ready(args.ready_timeout)
                run_calls(held, small, args)
                run_calls(grown, small, args)
                result.update(grown.figures(small))
                run_calls(grown, large - small, args)
                result.update(grown.figures(large))
                time.sleep(args.settle)
                for side in sides:
                    quiet(side.serve, args.timeout / 6)
                result["load_avg"] = round(os.getloadavg()[0], 2)
                times = interleaved_scrapes(sides, args.scrapes)
                for n, side_times in zip((small, large), times):
                    result[f"scrape_ms_{n}"] = round(statistics.median(side_times), 3)
                    result[f"scrape_p95_ms_{n}"] = round(percentile(side_times, 95), 3)
                progress(f"scrape p50: {result[f'scrape_ms_{small}']} ms after {small} calls, "
                         f"{result[f'scrape_ms_{large}']} ms after {large}")
                for side in sides:
                    side.serve.stop()
            finally:
                for side in sides:
                    side.serve.kill()
    except BenchError as exc:
        progress(f"metrics_growth failed: {exc}")
        return 1
    finally:
        llm.stop_thread()
    ratios = {f"ratio_{key}": round(result[f"{key}_{large}"] / result[f"{key}_{small}"], 3)
              for key in ("scrape_ms", "metrics_files", "metrics_bytes")}
    wall = time.perf_counter() - started
    codes = [code for side in sides for code in side.codes]
    measured = (small, large) == (10, 1000)  # the target is stated for these two
    emit({**ratios, "ratio_of": f"{large} vs {small} calls", "target_ratio": TARGET_RATIO,
          "meets_target": all(v <= TARGET_RATIO for v in ratios.values()) if measured else None, **result,
          "calls": args.calls, "calls_ok": codes.count(200), "calls_failed": len(codes) - codes.count(200),
          "calls_per_s": round(len(codes) / wall, 2), "concurrency": args.concurrency, "scrapes": args.scrapes,
          "options": "serve --unregistered --simulate --idle-processes 2 (process executor)",
          "wall_s": round(wall, 1), "machine": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
