"""How long a spec edit takes to be served by a running `voice-runtime serve`, and
whether that grows with the folder.

For each folder size (default 10 and 1,000 minimal specs, unique names) a real
`voice-runtime serve DIR --unregistered --simulate --idle-processes 0` is started
and, once /readyz says 200, one spec in the middle of the folder is rewritten
``--writes`` times. Each rewrite changes its instructions (so its digest changes)
and is written like an editor saves: a temporary file beside it, then
``os.replace`` over the spec (``--write-mode plain`` writes the file in place
instead). The latency of one rewrite is the time from just before the write
until GET /status shows that agent's ``generation`` higher than before; /status
is polled over one keep-alive connection every ``--poll-ms`` (5 ms) after the
previous answer arrived. It includes the watcher, the Reloader's settle window
(debounce), the catalog reload and the answer of /status. serve keeps its default
periodic hash scan (``--scan-interval`` 10 s) unless ``--scan-interval`` is given.

The baseline is what a user would otherwise do on a change: restart the process.
``baseline_restart_ms_N`` is the median time from spawning `voice-runtime serve` on
the largest folder to /readyz 200 (``--baseline-runs`` fresh processes).

Also reported per size, because they shape the figures above: the serve process's
startup time, RSS and idle CPU, and what one GET /status costs (its answer holds
every agent).

    python benchmarks/reload_latency.py                                # 10 and 1,000 specs, 50 writes each
    python benchmarks/reload_latency.py --sizes 3,5 --writes 3 --baseline-runs 1   # a tiny run

Prints one JSON object on stdout; progress and failures go to stderr; exits 1 if
serve fails to start or a rewrite is not served within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine, percentile, progress
from mcp_servers.harness import free_port
from serve_harness import stop_process

TARGET_P99_MS = 250.0
TARGET_RATIO = 1.5
TARGET_SIZE, SMALL_SIZE = 1000, 10

_SCRIPT = Path(sys.executable).with_name("voice-runtime")
# the console script beside this interpreter (what users run), not a pyenv shim
CLI: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "voice_runtime.cli"]


class BenchError(Exception):
    pass


def agent_name(i: int) -> str:
    return f"agent-{i:04d}"


def spec_text(name: str, instructions: str) -> str:
    """A minimal valid spec (the shape of tests/serve_harness.py's ``spec()``); no job
    runs here, so the LLM's base_url is never contacted."""
    return (
        "apiVersion: voice-runtime/v1\n"
        f"name: {name}\n"
        f"instructions: {json.dumps(instructions)}\n"
        "pipeline:\n"
        '  llm: {provider: openai, model: gpt-4o-mini, base_url: "http://127.0.0.1:9/v1", api_key: sk-test}\n'
        "  text_only: true\n"
    )


def make_folder(root: Path, count: int) -> Path:
    agents = root / "agents.d"
    agents.mkdir(parents=True)
    for i in range(count):
        name = agent_name(i)
        (agents / f"{name}.yaml").write_text(spec_text(name, f"You are {name}, version 0."), encoding="utf-8")
    return agents


def write_spec(path: Path, text: str, mode: str) -> None:
    if mode == "plain":
        path.write_text(text, encoding="utf-8")
        return
    # an editor's save: a temporary file beside the spec, renamed over it
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its descendants (job processes, if any)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total_kib, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


class Serve:
    """One `voice-runtime serve` subprocess and a keep-alive connection to its port."""

    def __init__(self, agents: Path, log_dir: Path, scan_interval: float | None,
                 options: tuple[str, ...] = ("--idle-processes", "0"), env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = log_dir / f"serve-{self.port}.log"
        args = ["serve", str(agents), "--unregistered", "--simulate", "--http-port", str(self.port),
                "--http-host", "127.0.0.1", *options]
        if scan_interval is not None:
            args += ["--scan-interval", str(scan_interval)]
        env = dict(os.environ, **(env or {}), TMPDIR=str(log_dir))  # serve's state and metrics folders go away with ours
        self._log_file = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([*CLI, *args], stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self._conn.request("GET", path)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def tail(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-3000:]

    def wait_ready(self, timeout: float, poll: float = 0.01) -> float:
        """Seconds from spawn to the first /readyz 200."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"serve exited with {self.proc.returncode} before it was ready:\n{self.tail()}")
            try:
                code, _ = self.get("/readyz")
            except OSError:
                code = 0
            if code == 200:
                return time.perf_counter() - self.started
            time.sleep(poll)
        raise BenchError(f"serve was not ready within {timeout:.0f} s:\n{self.tail()}")

    def status(self, path: str = "/status") -> tuple[bytes, float]:
        """/status's body and the moment it had arrived (before any parsing)."""
        code, body = self.get(path)
        arrived = time.perf_counter()
        if code != 200:
            raise BenchError(f"/status answered {code}: {body[:300]!r}")
        return body, arrived

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM, then seconds until the process exited."""
        if self._conn is not None:
            self._conn.close()
        started = time.perf_counter()
        stop_process(self.proc, signal.SIGTERM, timeout)
        self._log_file.close()
        return time.perf_counter() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if not self._log_file.closed:
            self._log_file.close()


def generation_of(body: bytes, name: str) -> int | None:
    """That agent's generation in a /status body. Parsing 0.5 MB of JSON per poll (1,000
    agents) would cost the poller, on the same 2 cores as serve, more than the search:
    the agent's object is found by its name and read alone; json.loads of the whole body
    is the fallback."""
    at = body.find(b'"name": ' + json.dumps(name).encode())
    if at >= 0:
        start = body.rfind(b"{", 0, at)
        match = _GENERATION.search(body, at)
        if start >= 0 and match:
            try:
                agent = json.loads(body[start:match.end()] + b"}")
                if agent.get("name") == name:
                    return int(agent["generation"])
            except ValueError:
                pass
    for agent in json.loads(body)["agents"]:
        if agent["name"] == name:
            return int(agent["generation"])
    return None


_GENERATION = re.compile(rb'"generation": (\d+)')


def time_rewrites(serve: Serve, path: Path, name: str, body: bytes, args: argparse.Namespace,
                  text_for: Callable[[int], str] | None = None, status_path: str = "/status"
                  ) -> tuple[list[float], list[int]]:
    """Rewrite one spec ``args.writes`` times (``text_for(w)``: the w-th text, a new
    digest each time); the ms from each write until /status serves the new
    generation, and the /status polls each took."""
    generation = generation_of(body, name)
    if generation is None or generation != next(
            a["generation"] for a in json.loads(body)["agents"] if a["name"] == name):
        raise BenchError(f"cannot read {name}'s generation from /status")
    latencies, polls = [], []
    for w in range(1, args.writes + 1):
        time.sleep(args.gap)  # the previous reload is over; this write is a reload of its own
        text = text_for(w) if text_for else spec_text(name, f"You are {name}, version {w} ({time.time_ns()}).")
        started = time.perf_counter()
        write_spec(path, text, args.write_mode)
        deadline, n = started + args.timeout, 0
        while True:
            body, arrived = serve.status(status_path)
            n += 1
            now = generation_of(body, name)
            if now is not None and now > generation:
                break
            if arrived > deadline:
                raise BenchError(f"write {w} of {path.name} was not served within {args.timeout} s "
                                 f"(generation still {now}):\n{serve.tail()}")
            time.sleep(args.poll_ms / 1000)
        latencies.append((arrived - started) * 1000)
        polls.append(n)
        generation = now
    return latencies, polls


def measure_size(root: Path, count: int, args: argparse.Namespace) -> dict[str, Any]:
    folder = make_folder(root / f"size-{count}", count)
    serve = Serve(folder, root, args.scan_interval)
    try:
        startup = serve.wait_ready(args.ready_timeout)
        body, _ = serve.status()
        listed = [a["name"] for a in json.loads(body)["agents"]]
        if sorted(listed) != sorted(agent_name(i) for i in range(count)):
            raise BenchError(f"/status lists {len(listed)} agents, not the {count} written:\n{serve.tail()}")
        progress(f"[{count} specs] serve ready in {startup * 1000:.0f} ms")

        # what the serve process costs at rest, and what one /status costs
        time.sleep(1.0)
        cpu0, t0 = proc_cpu_seconds(serve.proc.pid), time.perf_counter()
        time.sleep(2.0)
        idle_cpu = (proc_cpu_seconds(serve.proc.pid) - cpu0) / (time.perf_counter() - t0) * 100
        rss = tree_rss_mb(serve.proc.pid)
        status_ms, size = [], 0
        for _ in range(20):
            started = time.perf_counter()
            code, body = serve.get("/status")
            status_ms.append((time.perf_counter() - started) * 1000)
            size = len(body)
            time.sleep(0.02)
        progress(f"[{count} specs] RSS {rss:.0f} MiB, idle CPU {idle_cpu:.0f} %, GET /status median "
                 f"{statistics.median(status_ms):.1f} ms ({size / 1024:.0f} KiB)")

        name = agent_name(count // 2)
        latencies, polls = time_rewrites(serve, folder / f"{name}.yaml", name, body, args)
        progress(f"[{count} specs] {args.writes} rewrites: p50 {percentile(latencies, 50):.0f} ms, "
                 f"p99 {percentile(latencies, 99):.0f} ms, max {max(latencies):.0f} ms")
        if serve.proc.poll() is not None:
            raise BenchError(f"serve exited with {serve.proc.returncode}:\n{serve.tail()}")
        serve.stop()
    finally:
        serve.kill()
    return {
        "folder": folder,
        f"p50_ms_{count}": round(percentile(latencies, 50), 1),
        f"p99_ms_{count}": round(percentile(latencies, 99), 1),
        f"max_ms_{count}": round(max(latencies), 1),
        f"min_ms_{count}": round(min(latencies), 1),
        f"status_polls_per_write_{count}": round(statistics.mean(polls), 1),
        f"startup_ms_{count}": round(startup * 1000, 1),
        f"serve_rss_mb_{count}": round(rss, 1),
        f"serve_idle_cpu_pct_{count}": round(idle_cpu, 1),
        f"status_get_ms_{count}": round(statistics.median(status_ms), 2),
        f"status_bytes_{count}": size,
    }


def measure_restart(folder: Path, root: Path, count: int, args: argparse.Namespace) -> dict[str, Any]:
    ready_ms, stop_ms = [], []
    for run in range(args.baseline_runs):
        serve = Serve(folder, root, args.scan_interval)
        try:
            ready_ms.append(serve.wait_ready(args.ready_timeout) * 1000)
            stop_ms.append(serve.stop() * 1000)
        finally:
            serve.kill()
        progress(f"[{count} specs] restart {run + 1}/{args.baseline_runs}: ready in {ready_ms[-1]:.0f} ms, "
                 f"SIGTERM to exit {stop_ms[-1]:.0f} ms")
    return {
        f"baseline_restart_ms_{count}": round(statistics.median(ready_ms), 1),
        f"baseline_restart_runs_ms_{count}": [round(v, 1) for v in ready_ms],
        f"baseline_stop_ms_{count}": round(statistics.median(stop_ms), 1),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=f"{SMALL_SIZE},{TARGET_SIZE}",
                   help="folder sizes, comma-separated; the ratio is largest vs smallest (default 10,1000)")
    p.add_argument("--writes", type=int, default=50, help="rewrites of one spec per size (default 50)")
    p.add_argument("--baseline-runs", type=int, default=3, help="restarts timed on the largest folder (default 3)")
    p.add_argument("--write-mode", choices=("replace", "plain"), default="replace",
                   help="replace: temp file + os.replace, like an editor (default); plain: write in place")
    p.add_argument("--poll-ms", type=float, default=5.0, help="pause between /status polls (default 5)")
    p.add_argument("--gap", type=float, default=0.25, help="seconds between a served write and the next (default 0.25)")
    p.add_argument("--scan-interval", type=float, default=None,
                   help="passed to serve as --scan-interval; default: serve's own (10 s)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a write may take to be served (default 10)")
    p.add_argument("--ready-timeout", type=float, default=90.0, help="seconds serve may take to be ready (default 90)")
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        p.error("--sizes must be comma-separated integers")
    if not args.sizes or min(args.sizes) < 1 or args.writes < 1 or args.baseline_runs < 1:
        p.error("sizes, --writes and --baseline-runs must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="reload-latency-") as tmp:
        root = Path(tmp)
        folders: dict[int, Path] = {}
        try:
            for count in args.sizes:
                measured = measure_size(root, count, args)
                folders[count] = measured.pop("folder")
                result.update(measured)
            largest, smallest = args.sizes[-1], args.sizes[0]
            result.update(measure_restart(folders[largest], root, largest, args))
        except BenchError as exc:
            progress(f"reload_latency failed: {exc}")
            return 1
    p50, p99 = result[f"p50_ms_{largest}"], result[f"p99_ms_{largest}"]
    ratio = round(p50 / result[f"p50_ms_{smallest}"], 3)
    measured_target = largest == TARGET_SIZE and smallest == SMALL_SIZE
    summary = {
        "p50_ms": p50,
        "p99_ms": p99,
        "ratio_1000_vs_10": ratio,
        "ratio_of": f"p50_ms_{largest} / p50_ms_{smallest}",
        "specs_used": largest,
        "sizes": args.sizes,
        "writes": args.writes,
        "write_mode": "temp file + os.replace" if args.write_mode == "replace" else "plain write in place",
        "poll_interval_ms": args.poll_ms,
        "scan_interval_s": args.scan_interval if args.scan_interval is not None else "serve default (10)",
        "baseline": "restart: spawn `voice-runtime serve` on the largest folder until /readyz 200",
        "baseline_runs": args.baseline_runs,
        "restart_vs_reload_p50": round(result[f"baseline_restart_ms_{largest}"] / p50, 1),
        "target_p99_ms": TARGET_P99_MS,
        "target_ratio": TARGET_RATIO,
        "meets_target": (p99 <= TARGET_P99_MS and ratio <= TARGET_RATIO) if measured_target else None,
    }
    out = {**summary, **result, "wall_s": round(time.perf_counter() - started, 1),
           "machine": machine()}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
