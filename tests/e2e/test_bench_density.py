"""benchmarks/density.py runs and reports what it claims (correctness, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO, child_env

SCRIPT = REPO / "benchmarks" / "density.py"


def test_tiny_run_prints_one_json_object_with_the_density_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "1,3", "--own-servers", "2", "--writes", "2", "--calls", "2",
         "--settle", "0", "--idle-window", "0.5"],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert proc.stdout.count("\n") == 1  # the JSON line only; progress goes to stderr
    data = json.loads(proc.stdout)
    for key in ("pss_mb_1", "pss_mb_3", "pss_mb_2_own_servers", "reload_p50_ms_3", "reload_p99_ms_3",
                "session_start_cold_agent_p50_ms"):
        assert isinstance(data[key], (int, float)) and data[key] > 0, (key, data)
    # serve, the forkserver, one prewarmed job process, the one shared MCP server (at least)
    assert data["processes_3"] >= 4
    # a distinct server block per spec is a server process per spec
    assert data["processes_2_own_servers"] == data["processes_3"] + 1
    assert data["marginal_mb_per_agent"] == round((data["pss_mb_3"] - data["pss_mb_1"]) / 2, 3)
    assert data["session_start_cold_agent_calls"] == 2
    assert data["targets"]["session_start_cold_agent_p50_ms"] == 20
    assert set(data["meets_target"]) <= set(data["targets"])
    assert data["machine"]["nproc"] >= 1
