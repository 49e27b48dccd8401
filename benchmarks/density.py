"""What a `voice-runtime serve` costs per agent: memory, processes and idle CPU at
1, 10, 100 and 1,000 specs, reload latency at 1,000, and how soon a call on a
process that never served its agent has its tools.

Each size is a folder of copies of the shipped `agents.d/support.yaml` (its
prompt and `plugins/` beside it) that differ only in `name:`: a Deepgram →
OpenAI → Cartesia pipeline with the `mcp-server-time` stdio server and two plugin
tools. A real `voice-runtime serve DIR --unregistered --simulate` runs at its
default options (process executor, one prewarmed job process); the figures are
taken once /readyz says 200, the prewarmed process is idle and the MCP server is
up, after a settle of ``--settle`` seconds:

- ``pss_mb_N``: PSS (proportional set size: shared pages divided among the
  processes sharing them, so the sum is what the tree really holds) of serve and
  every descendant: the forkserver, the job processes, the MCP servers;
- ``processes_N``: how many processes that tree has;
- ``idle_cpu_pct_N``: CPU time of the whole tree over ``--idle-window`` seconds,
  as a percentage of one core.

Plus a 100-spec run where each spec has its own server block (``env:`` differs),
so the cost of a distinct MCP server shows (``pss_mb_100_own_servers``).

At 1,000 specs (and 10, for the ratio) one spec is rewritten ``--writes`` times
as an editor saves it, timed until /status serves the new generation (as
`reload_latency.py`). ``session_start_cold_agent_p50_ms`` comes from
``--calls`` calls (``POST /simulate?wait=1``), each for an agent no job process
has served, each on a prewarmed process: the job's own measure from its entry
to "spec read, MCP tools listed, tools built" (``tools_ready_ms`` in its report).
The LLM is the fake OpenAI server of tests/fakes.

    python benchmarks/density.py                                  # the full run, ~3 min
    python benchmarks/density.py --sizes 1,3 --own-servers 2 --writes 3 --calls 3   # a tiny run

Prints one JSON object on stdout; progress goes to stderr; exits 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ on sys.path
import psutil
from _common import REPO, emit, machine, percentile, progress
from reload_latency import BenchError, Serve, time_rewrites

TARGETS = {"marginal_mb_per_agent": 2.0, "pss_100_vs_1": 1.5, "idle_cpu_pct_1000": 5.0, "reload_p99_ms_1000": 250.0,
           "ratio_1000_vs_10": 1.5, "session_start_cold_agent_p50_ms": 20.0}
KEYS = {"OPENAI_API_KEY": "sk-bench", "DEEPGRAM_API_KEY": "dg-bench", "CARTESIA_API_KEY": "ca-bench"}


def agent_name(i: int) -> str:
    return f"support-{i:04d}"


def support_text(name: str, *, own_server: int | None = None, version: int = 0) -> str:
    text = (REPO / "agents.d" / "support.yaml").read_text(encoding="utf-8")
    text = text.replace("name: support\n", f"name: {name}\n", 1)
    if version:
        text = text.replace("greeting: ", f"greeting: (v{version}) ", 1)
    if own_server is not None:  # a distinct block: serve keeps one connection (and process) per block
        text = text.replace("    timeout: 5\n", f"    timeout: 5\n    env: {{BENCH_SPEC: \"{own_server}\"}}\n", 1)
    return text


def make_folder(root: Path, count: int, *, own_servers: bool = False) -> Path:
    base = root / (f"own-{count}" if own_servers else f"size-{count}")
    agents = base / "agents.d"
    (agents / "prompts").mkdir(parents=True)
    shutil.copy(REPO / "agents.d" / "prompts" / "support.md", agents / "prompts" / "support.md")
    shutil.copytree(REPO / "plugins", base / "plugins")
    for i in range(count):
        (agents / f"{agent_name(i)}.yaml").write_text(
            support_text(agent_name(i), own_server=i if own_servers else None), encoding="utf-8")
    return agents


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_pss_mb(pid: int) -> float:
    total = 0
    for proc in tree(pid):
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for proc in tree(pid):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def wait_settled(serve: Serve, count: int, timeout: float) -> dict[str, Any]:
    """/status once the prewarmed process is idle and every MCP server is up."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body, _ = serve.status()
        status = json.loads(body)
        servers = [s for a in status["agents"] for s in a["mcp_servers"].values()]
        if (len(status["agents"]) == count and status["jobs"]["idle_pids"]
                and all(s["state"] == "up" for s in servers)):
            return status
        time.sleep(0.2)
    raise BenchError(f"serve on {count} specs did not settle within {timeout:.0f} s:\n{serve.tail()}")


def cold_calls(serve: Serve, count: int, calls: int, timeout: float) -> list[float]:
    """tools_ready_ms of calls for agents never served yet, each on a prewarmed process."""
    import urllib.request

    ready: list[float] = []
    for c in range(calls):
        wait_settled(serve, count, timeout)
        name = agent_name((c * 7919) % count)  # spread over the folder, none twice while calls < count
        req = urllib.request.Request(f"http://127.0.0.1:{serve.port}/simulate?wait=1", method="POST",
                                     data=json.dumps({"agent": name, "turns": ["what time is it?"]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as response:
            report = json.loads(response.read())
        if not report.get("ok") or "tools_ready_ms" not in report:
            raise BenchError(f"call for {name} failed: {json.dumps(report)[:500]}")
        ready.append(report["tools_ready_ms"])
        progress(f"  call {c + 1} ({name}): tools ready in {report['tools_ready_ms']} ms {report.get('timings_ms')}")
    return ready


def measure(root: Path, count: int, args: argparse.Namespace, llm_url: str, *, own_servers: bool = False,
            reloads: bool = False, calls: int = 0) -> dict[str, Any]:
    folder = make_folder(root, count, own_servers=own_servers)
    env = {**KEYS, "OPENAI_BASE_URL": llm_url}
    serve = Serve(folder, root, None, options=(), env=env)  # serve's defaults
    suffix = f"{count}_own_servers" if own_servers else str(count)
    out: dict[str, Any] = {}
    try:
        out[f"ready_ms_{suffix}"] = round(serve.wait_ready(args.ready_timeout) * 1000, 1)
        wait_settled(serve, count, args.ready_timeout)
        time.sleep(args.settle)
        cpu0, t0 = tree_cpu_seconds(serve.proc.pid), time.perf_counter()
        time.sleep(args.idle_window)
        out[f"idle_cpu_pct_{suffix}"] = round(
            (tree_cpu_seconds(serve.proc.pid) - cpu0) / (time.perf_counter() - t0) * 100, 2)
        out[f"pss_mb_{suffix}"] = round(tree_pss_mb(serve.proc.pid), 1)
        out[f"processes_{suffix}"] = len(tree(serve.proc.pid))
        progress(f"[{suffix}] PSS {out[f'pss_mb_{suffix}']} MiB, {out[f'processes_{suffix}']} processes, "
                 f"idle CPU {out[f'idle_cpu_pct_{suffix}']} %")
        if reloads:
            name = agent_name(count // 2)
            body, _ = serve.status()
            # polled as an operator watching one agent would (the whole /status of 1,000
            # agents is ~0.8 MB, and polling it every 5 ms would load serve more than the reload)
            latencies, _ = time_rewrites(serve, folder / f"{name}.yaml", name, body, args,
                                         text_for=lambda w: support_text(name, version=w),
                                         status_path=f"/status?agent={name}")
            out[f"reload_p50_ms_{suffix}"] = round(percentile(latencies, 50), 1)
            out[f"reload_p99_ms_{suffix}"] = round(percentile(latencies, 99), 1)
            progress(f"[{suffix}] reload p50 {out[f'reload_p50_ms_{suffix}']} ms, p99 {out[f'reload_p99_ms_{suffix}']} ms")
        if calls:
            ready = cold_calls(serve, count, calls, args.ready_timeout)
            out["session_start_cold_agent_p50_ms"] = round(statistics.median(ready), 2)
            out["session_start_cold_agent_p95_ms"] = round(percentile(ready, 95), 2)
            out["session_start_cold_agent_calls"] = len(ready)
            progress(f"[{suffix}] cold-agent tools ready p50 {out['session_start_cold_agent_p50_ms']} ms")
        serve.stop()
    finally:
        serve.kill()
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,10,100,1000", help="spec counts, comma-separated (default 1,10,100,1000)")
    p.add_argument("--own-servers", type=int, default=100, help="specs in the run where each has its own MCP "
                   "server block (default 100; 0: skip)")
    p.add_argument("--writes", type=int, default=30, help="rewrites timed at the smallest size above 1 and the "
                   "largest (default 30)")
    p.add_argument("--calls", type=int, default=15, help="cold-agent calls at the largest size (default 15)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after settling before measuring (default 3)")
    p.add_argument("--idle-window", type=float, default=5.0, help="seconds of idle CPU measured (default 5)")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a rewrite may take to be served")
    p.add_argument("--gap", type=float, default=0.25, help="seconds between a served rewrite and the next")
    p.add_argument("--poll-ms", type=float, default=5.0)
    args = p.parse_args(argv)
    args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    args.write_mode = "replace"
    return args


def main(argv: list[str] | None = None) -> int:
    from fakes.openai_chat import FakeOpenAI

    args = parse_args(argv)
    started = time.perf_counter()
    llm = FakeOpenAI()
    llm_url = llm.start_in_thread()
    result: dict[str, Any] = {}
    largest = args.sizes[-1]
    reload_sizes = {largest, next((s for s in args.sizes if s > 1), largest)}
    try:
        with tempfile.TemporaryDirectory(prefix="density-") as tmp:
            for count in args.sizes:
                result.update(measure(Path(tmp), count, args, llm_url, reloads=count in reload_sizes,
                                      calls=args.calls if count == largest else 0))
            if args.own_servers:
                result.update(measure(Path(tmp), args.own_servers, args, llm_url, own_servers=True))
    except BenchError as exc:
        progress(f"density failed: {exc}")
        return 1
    finally:
        llm.stop_thread()
    smallest_reload = min(reload_sizes)
    summary: dict[str, Any] = {}
    first = args.sizes[0]
    if largest > first:
        summary["marginal_mb_per_agent"] = round(
            (result[f"pss_mb_{largest}"] - result[f"pss_mb_{first}"]) / (largest - first), 3)
    if 1 in args.sizes and 100 in args.sizes:
        summary["pss_100_vs_1"] = round(result["pss_mb_100"] / result["pss_mb_1"], 3)
    if smallest_reload != largest:
        summary[f"ratio_{largest}_vs_{smallest_reload}"] = round(
            result[f"reload_p50_ms_{largest}"] / result[f"reload_p50_ms_{smallest_reload}"], 3)
    checks = {key: summary.get(key, result.get(key)) for key in TARGETS}
    summary["targets"] = TARGETS
    summary["meets_target"] = {key: value <= TARGETS[key] for key, value in checks.items() if value is not None}
    emit({**summary, **result, "sizes": args.sizes, "options": "serve defaults (process executor, "
          "--idle-processes 1) + --unregistered --simulate", "wall_s": round(time.perf_counter() - started, 1),
          "machine": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
