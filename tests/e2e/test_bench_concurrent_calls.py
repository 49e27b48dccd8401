"""benchmarks/concurrent_calls.py runs and reports what it claims (correctness, not speed):
serve and the hand-built livekit worker each take real-time voice calls over their
WebSocket, and the JSON holds both curves and both knees."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO, child_env

SCRIPT = REPO / "benchmarks" / "concurrent_calls.py"

pytestmark = [pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng"), pytest.mark.timeout(900)]


def test_a_quick_run_prints_one_json_object_with_both_curves_and_knees() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert proc.stdout.count("\n") == 1  # the JSON line only; progress goes to stderr
    data = json.loads(proc.stdout)
    assert data["benchmark"] == "concurrent_calls" and data["n"] == [1, 2]
    for side in ("ours", "handbuilt"):
        assert [p["n"] for p in data[side]] == [1, 2]
        for point in data[side]:
            # every call was answered, in audio, on each side
            assert point["failed_turns"] == 0 and point["turns"] == point["n"], (side, point)
            assert point["p95_ms"] >= point["p50_ms"] > 0
            assert point["cpu_per_call"] > 0 and point["pss_mb_per_call"] > 0 and point["fakes_cpu"] >= 0
    # serve: its process, the forkserver, job processes, the MCP server
    assert data["ours"][0]["processes"] >= 4
    for key in ("knee", "handbuilt_knee"):
        assert data[key] in (1, 2)
    assert set(data["meets_target"]) == set(data["targets"]) == {"knee_ratio", "pss_per_call_ratio", "p50_ratio_n1"}
    assert data["p50_ratio_n1"] == pytest.approx(data["ours"][0]["p50_ms"] / data["handbuilt"][0]["p50_ms"], abs=0.01)


def test_a_variant_that_is_not_name_colon_options_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--variant", "no colon here"], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--variant 'no colon here': write NAME:[VAR=VALUE ...] [serve options]" in proc.stderr
    assert "Traceback" not in proc.stderr
