"""benchmarks/validate_scale.py runs and reports what it claims (correctness, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO, child_env

SCRIPT = REPO / "benchmarks" / "validate_scale.py"


def run_bench(*args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, env=child_env(env), capture_output=True, text=True, timeout=110
    )


def test_tiny_run_prints_one_json_object_with_positive_figures() -> None:
    proc = run_bench("--sizes", "3,5", "--repeat", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1  # the JSON line only; progress goes to stderr
    data = json.loads(proc.stdout)
    for key in ("seconds_3", "seconds_5", "peak_mb_3", "peak_mb_5", "baseline_seconds_5", "baseline_peak_mb_5"):
        assert isinstance(data[key], (int, float)) and data[key] > 0, (key, data)
    assert data["sizes"] == [3, 5] and data["repeat"] == 1
    assert data["target_seconds_1000"] == 2.0
    assert data["meets_target"] is None  # 1,000 specs were not measured
    assert data["baseline"].startswith("check-jsonschema")


def test_a_failing_check_fails_the_benchmark_instead_of_timing_it() -> None:
    # without the clock plugin the copied spec lists unknown tools, so every check fails
    proc = run_bench("--sizes", "2", "--repeat", "1", env={"VOICE_RUNTIME_DISABLE_PLUGINS": "clock"})
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "failed" in proc.stderr
