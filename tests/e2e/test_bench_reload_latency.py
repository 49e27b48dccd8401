"""benchmarks/reload_latency.py runs and reports what it claims (correctness, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO, child_env

SCRIPT = REPO / "benchmarks" / "reload_latency.py"


def test_tiny_run_prints_one_json_object_with_positive_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "3,5", "--writes", "3", "--baseline-runs", "1"],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1  # the JSON line only; progress goes to stderr
    data = json.loads(proc.stdout)
    for key in ("p50_ms", "p99_ms", "ratio_1000_vs_10", "p50_ms_3", "p99_ms_3", "p50_ms_5", "p99_ms_5",
                "baseline_restart_ms_5", "status_get_ms_5", "startup_ms_5", "serve_rss_mb_5"):
        assert isinstance(data[key], (int, float)) and data[key] > 0, (key, data)
    assert data["p50_ms"] == data["p50_ms_5"] and data["p99_ms"] == data["p99_ms_5"]
    assert data["p50_ms_5"] <= data["p99_ms_5"]
    assert data["ratio_of"] == "p50_ms_5 / p50_ms_3"
    assert data["sizes"] == [3, 5] and data["specs_used"] == 5 and data["writes"] == 3
    assert len(data["baseline_restart_runs_ms_5"]) == 1
    assert data["target_p99_ms"] == 250 and data["target_ratio"] == 1.5
    assert data["meets_target"] is None  # 10 and 1,000 specs were not measured


def test_bad_arguments_are_a_usage_error_with_nothing_on_stdout() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "ten"], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "--sizes" in proc.stderr
