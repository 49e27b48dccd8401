"""serve's Prometheus folder: the files of ended job processes are folded into one
archive per kind, so the folder stays small while every total is kept.

The files are written by real processes through prometheus_client's multiprocess
mode (forked children of one writer, as livekit's forkserver forks job processes);
serve's side is ``MetricFiles``, read back as a scrape reads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from voice_runtime.serve.metric_files import MetricFiles

# each child is one job process: it counts, observes and sets its gauges, then exits
# without decrementing its live gauge (a SIGKILLed job does the same); every metric
# has labels, so the parent itself writes no file
WRITER = r"""
import os, sys
from prometheus_client import Counter, Gauge, Histogram
calls = Counter("probe_calls", "Calls.", ["agent"])
latency = Histogram("probe_latency_seconds", "Latency.", ["agent"], buckets=(0.1, 1.0))
current = Gauge("probe_current", "Sessions now.", ["agent"], multiprocess_mode="livesum")
peak = Gauge("probe_peak", "Highest.", ["agent"], multiprocess_mode="max")
each = Gauge("probe_each", "Per process.", ["agent"], multiprocess_mode="all")
start = int(sys.argv[2])
pids = []
for i in range(start, start + int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        calls.labels("desk").inc(i + 1)
        latency.labels("desk").observe(0.05 * (i + 1))
        current.labels("desk").inc()
        peak.labels("desk").set(i)
        each.labels("desk").set(i)
        os._exit(0)
    os.waitpid(pid, 0)
    pids.append(pid)
print(" ".join(map(str, pids)))
"""


def _run_jobs(folder: Path, count: int, start: int = 0) -> list[int]:
    """``count`` ended job processes' files in ``folder``; their pids."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    out = subprocess.run([sys.executable, "-c", WRITER, str(count), str(start)], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [int(pid) for pid in out.split()]


def _scrape(files: MetricFiles) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in files.collect() for s in m.samples}


def _db_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.db"))


def test_retiring_ended_processes_keeps_every_total_and_drops_their_live_gauges(tmp_path: Path) -> None:
    files = MetricFiles(str(tmp_path))
    pids = _run_jobs(tmp_path, 5)
    before = _scrape(files)
    assert before[("probe_current", (("agent", "desk"),))] == 5  # five ended jobs still "in a session"
    assert len(_db_files(tmp_path)) == 5 * 5

    for pid in pids:
        files.retire(pid)

    after = _scrape(files)
    # a process that is gone holds no session; its per-process series are gone with it
    assert ("probe_current", (("agent", "desk"),)) not in after
    assert not [key for key in after if key[0] == "probe_each"]
    kept = {key: value for key, value in before.items() if key[0] not in ("probe_current", "probe_each")}
    # counters, histogram buckets, sums and counts, the max gauge: unchanged (a float
    # sum added in another order may differ in its last bit)
    assert after == pytest.approx(kept, rel=1e-12)
    assert after[("probe_calls_total", (("agent", "desk"),))] == 1 + 2 + 3 + 4 + 5
    assert after[("probe_peak", (("agent", "desk"),))] == 4
    assert _db_files(tmp_path) == ["counter_archive.db", "gauge_max_archive.db", "histogram_archive.db"]

    # more calls later: added to the archive, which stays one file per kind
    for pid in _run_jobs(tmp_path, 3, start=5):
        files.retire(pid)
    again = _scrape(files)
    assert again[("probe_calls_total", (("agent", "desk"),))] == sum(range(1, 9))
    assert again[("probe_latency_seconds_count", (("agent", "desk"),))] == 8
    assert again[("probe_latency_seconds_bucket", (("agent", "desk"), ("le", "0.1")))] == 2  # 0.05 and 0.1
    assert again[("probe_peak", (("agent", "desk"),))] == 7
    assert _db_files(tmp_path) == ["counter_archive.db", "gauge_max_archive.db", "histogram_archive.db"]


def test_a_scrape_while_processes_are_retired_never_sees_a_total_drop_or_a_double_count(tmp_path: Path) -> None:
    files = MetricFiles(str(tmp_path))
    pids = _run_jobs(tmp_path, 40)
    total = sum(range(1, 41))
    key = ("probe_calls_total", (("agent", "desk"),))
    seen: list[float] = []
    done = threading.Event()

    def scrape_until_done() -> None:
        while not done.is_set():
            seen.append(_scrape(files)[key])

    scraper = threading.Thread(target=scrape_until_done)
    scraper.start()
    try:
        for pid in pids:
            files.retire(pid)
    finally:
        done.set()
        scraper.join()
    seen.append(_scrape(files)[key])
    assert set(seen) == {total}, sorted(set(seen))
    assert _db_files(tmp_path) == ["counter_archive.db", "gauge_max_archive.db", "histogram_archive.db"]


def test_retiring_a_process_that_left_no_files_or_twice_changes_nothing(tmp_path: Path) -> None:
    files = MetricFiles(str(tmp_path))
    (pid,) = _run_jobs(tmp_path, 1)
    files.retire(pid)
    once = _scrape(files)
    files.retire(pid)
    files.retire(999_999_999)
    assert _scrape(files) == once
