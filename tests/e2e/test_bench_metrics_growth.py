"""benchmarks/metrics_growth.py runs and reports what it claims (correctness, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO, child_env

SCRIPT = REPO / "benchmarks" / "metrics_growth.py"

pytestmark = pytest.mark.timeout(300)


def test_tiny_run_prints_one_json_object_with_both_checkpoints_and_their_ratios() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--calls", "2,6", "--scrapes", "5"],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=270)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1  # the JSON line only; progress goes to stderr
    data = json.loads(proc.stdout)
    assert data["calls"] == [2, 6] and data["concurrency"] == 4
    for n in (2, 6):  # scrape times: the serve held at 2 calls and the one grown to 6, timed in turn
        for key in ("scrape_ms", "scrape_p95_ms", "metrics_files", "metrics_bytes", "journal_files", "journal_bytes"):
            assert isinstance(data[f"{key}_{n}"], (int, float)) and data[f"{key}_{n}"] > 0, (key, n, data)
        assert data[f"tool_calls_total_{n}"] == n  # every call's tool call counted, none twice
        assert data[f"journal_calls_{n}"] == n
        # the soak's process figures: serve, its forkserver, and what runs under serve
        for key in ("serve_rss_mb", "serve_fds", "serve_threads", "forkserver_rss_mb"):
            assert data[f"{key}_{n}"] > 0, (key, n, data)
        assert data[f"tree_processes_{n}"] >= 2  # at least the forkserver and the MCP server
    for key in ("scrape_ms", "metrics_files", "metrics_bytes"):
        assert data[f"ratio_{key}"] == pytest.approx(data[f"{key}_6"] / data[f"{key}_2"], rel=0.01)
    assert data["calls_ok"] + data["calls_failed"] == 2 + 6
    assert data["ratio_of"] == "6 vs 2 calls" and data["target_ratio"] == 1.2
    assert data["meets_target"] is None  # 10 and 1,000 calls were not measured
    assert data["machine"]["nproc"] >= 1


def test_bad_arguments_are_a_usage_error_with_nothing_on_stdout() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--calls", "ten"], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "--calls" in proc.stderr
