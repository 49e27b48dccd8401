"""What a browser call blocks in its job process, and what a job process costs to start:
livekit's "event loop blocked" warnings (its loop monitor: 100 ms or more without the
loop running) in serve's log per browser call, and the CPU time of a prewarmed job
process (forked from livekit's forkserver, warmed, idle), against a baseline in the
same run.

Each side is `voice-runtime serve` (process executor, no LIVEKIT_URL, one prewarmed job
process) with a text-only agent answering through the fake OpenAI server, called from
headless chromium's /talk page: a typed turn, its answer, a hang-up, one call after
another. The baseline is another copy of the package (``--baseline FOLDER``: a folder
holding a ``voice_runtime`` package, e.g. main's worktree through a symlink), run in
turns with this one, so both see the same load of the machine.

    python benchmarks/browser_call_blocking.py --baseline /work/main.pkg            # 2 rounds of 5 calls
    python benchmarks/browser_call_blocking.py --baseline /work/main.pkg --calls 2 --rounds 1

Prints one JSON object on stdout; progress goes to stderr. Without --baseline, this
copy alone.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ (the fakes, the serve harness) on sys.path
from _common import REPO, emit, machine, progress

BLOCKED = re.compile(r"event loop blocked for (\d+)ms([^;]*)")
NO_LIVEKIT = {"LIVEKIT_URL": None, "LIVEKIT_API_KEY": None, "LIVEKIT_API_SECRET": None}


def job_cpu_s(pid: int) -> float:
    """A prewarmed job process's CPU once it stopped warming (two equal readings)."""
    import psutil

    proc, last = psutil.Process(pid), -1.0
    for _ in range(100):
        times = proc.cpu_times()
        now = times.user + times.system
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    return last


def one_side(package: Path, tmp: Path, calls: int) -> dict[str, Any]:
    from fakes.openai_chat import FakeOpenAI
    from playwright.sync_api import sync_playwright
    from serve_harness import Serve

    chat = FakeOpenAI()
    chat.start_in_thread()
    agents = Path(tempfile.mkdtemp(dir=tmp)) / "agents.d"
    agents.mkdir()
    (agents / "desk.yaml").write_text(
        "apiVersion: voice-runtime/v1\ninstructions: You are the front desk.\n"
        f"pipeline: {{llm: {{provider: openai, base_url: '{chat.base_url}', api_key: k}}, text_only: true}}\n")
    blocked: list[int] = []
    cpu: list[float] = []
    try:
        with Serve(agents, "--idle-processes", "1", env={**NO_LIVEKIT, "PYTHONPATH": str(package)},
                   unregistered=False) as serve, sync_playwright() as pw:
            serve.wait_ready()
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"),
                                         args=["--no-sandbox", "--disable-gpu"])
            try:
                for n in range(calls):
                    idle = serve.wait_for(lambda: serve.status()["jobs"]["idle_pids"], timeout=90,
                                          message="a prewarmed job process")
                    cpu.append(job_cpu_s(idle[0]))
                    before = len(serve.output())
                    page = browser.new_page()
                    page.goto(serve.url("/talk/desk?autostart=1"))
                    page.wait_for_function("talk.pid", timeout=90_000)
                    page.get_by_test_id("text-input").fill(f"hello {n}")
                    page.get_by_test_id("text-input").press("Enter")
                    page.locator("[data-testid=turn][data-speaker=agent]", has_text=f"echo: hello {n}").wait_for()
                    page.get_by_test_id("hangup").click()
                    serve.wait_for(lambda: not serve.status()["jobs"]["running"], timeout=60, message="the call ended")
                    page.close()
                    found = BLOCKED.findall(serve.output()[before:])
                    progress(f"{package}: call {n + 1}: {len(found)} warning(s)"
                             + "".join(f"\n  {ms} ms{where}" for ms, where in found))
                    blocked += [int(ms) for ms, _ in found]
            finally:
                browser.close()
    finally:
        chat.stop_thread()
    return {"calls": calls, "warnings": len(blocked), "blocked_ms": sum(blocked), "job_cpu_s": cpu}


def main(baseline: Path | None, calls: int, rounds: int) -> dict[str, Any]:
    this = Path(tempfile.mkdtemp(prefix="vr-bench-pkg-"))
    (this / "voice_runtime").symlink_to(REPO / "runtime")
    sides = {"this": this, **({"baseline": baseline} if baseline else {})}
    totals: dict[str, dict[str, Any]] = {name: {"calls": 0, "warnings": 0, "blocked_ms": 0, "job_cpu_s": []}
                                         for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for name, package in sides.items():
                got = one_side(package, Path(tmp), calls)
                for key in ("calls", "warnings", "blocked_ms"):
                    totals[name][key] += got[key]
                totals[name]["job_cpu_s"] += got["job_cpu_s"]
    shutil.rmtree(this, ignore_errors=True)
    result: dict[str, Any] = {"machine": machine()}
    for name, t in totals.items():
        result[name] = {"calls": t["calls"], "warnings_per_call": round(t["warnings"] / t["calls"], 2),
                        "blocked_ms_per_call": round(t["blocked_ms"] / t["calls"]),
                        "job_process_cpu_s_median": round(statistics.median(t["job_cpu_s"]), 3)}
    if baseline:
        this_, base = result["this"], result["baseline"]
        result["ratios"] = {
            "warnings_per_call": round(this_["warnings_per_call"] / base["warnings_per_call"], 2)
            if base["warnings_per_call"] else None,
            "job_process_cpu": round(this_["job_process_cpu_s_median"] / base["job_process_cpu_s_median"], 2)}
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a folder holding another copy of the voice_runtime package")
    parser.add_argument("--calls", type=int, default=5, help="browser calls per serve")
    parser.add_argument("--rounds", type=int, default=2, help="serves per side, in turns")
    args = parser.parse_args()
    emit(main(args.baseline, args.calls, args.rounds))
