"""Small helpers shared by test files: run the real `voice-runtime` CLI in a subprocess.

``run_cli(*args, env=None, cwd=None)`` -> ``CliResult(rc, stdout, stderr)``.
``run_cli_measured(...)`` -> the same plus the child's wall time and peak RSS, measured
by a tiny wrapper process around that one child (so other children of the test
process, and the test process's own size, never count).

``env`` is merged onto ``os.environ``; a value of ``None`` removes that variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent

_SCRIPT = Path(sys.executable).with_name("voice-runtime")
# The installed console script (what users run); `python -m` if it is not beside python.
CLI: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "voice_runtime.cli"]


class CliResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass(frozen=True)
class Measured:
    result: CliResult
    wall_s: float
    peak_rss_mb: float


def child_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    out = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def run_cli(
    *args: str | os.PathLike[str],
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> CliResult:
    proc = subprocess.run(
        [*CLI, *map(str, args)],
        env=child_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# Runs the command and writes "wall_seconds peak_rss_kib rc" to argv[1]. The child is
# started from this small process, not from the test process: a forked child's
# ru_maxrss counts the image of the process it was forked from until it execs.
_MEASURE = """
import resource, subprocess, sys, time
out, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
start = time.perf_counter()
try:
    rc = subprocess.run(cmd, timeout=timeout).returncode
except subprocess.TimeoutExpired:
    rc = -9
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if sys.platform == "darwin":
    rss //= 1024
with open(out, "w") as fh:
    fh.write(f"{wall} {rss} {rc}")
"""


def run_cli_measured(
    *args: str | os.PathLike[str],
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> Measured:
    """Run the CLI once; wall time from spawn to exit and peak RSS of that process."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats"
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(stats), str(timeout), *CLI, *map(str, args)],
            env=child_env(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout + 30,
        )
        if not stats.exists():
            raise RuntimeError(f"the measuring wrapper failed: {proc.stderr}")
        wall, rss_kib, rc = stats.read_text().split()
    return Measured(CliResult(int(rc), proc.stdout, proc.stderr), float(wall), int(rss_kib) / 1024)


def assert_wall_within(measured: Measured, baseline_s: float, what: str, *, ratio: float = 3.0,
                       slack_s: float = 1.0) -> None:
    """Hold a run's wall time to a ratio of a baseline run measured in the same test (or
    module), never to a fixed number of seconds: on a loaded machine both slow down
    alike, while the fault the bound guards against costs many times the baseline."""
    bound = ratio * baseline_s + slack_s
    assert measured.wall_s < bound, f"{what}: took {measured.wall_s:.2f} s, the baseline {baseline_s:.2f} s"


def write(path: Path, text: str | bytes) -> Path:
    """Write a file (making its folder); bytes are written as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path



def require_tool(name: str, how: str) -> str:
    """The path of a system tool a test drives; a clear failure (never a silent
    skip) when it is missing: ``.ci/run`` installs every one of them."""
    import shutil

    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed; {how} (.ci/run does)")
    return path


# a plugin file recording the handoff and unbacked-claim hooks, one JSON line per call, to $HOOK_LOG
HOOK_RECORDER_PLUGIN = '''
import json, os
import voice_runtime


def _write(**kwargs):
    with open(os.environ["HOOK_LOG"], "a") as fh:
        fh.write(json.dumps(kwargs) + "\\n")


@voice_runtime.hookimpl
def voice_runtime_unbacked_claim(agent, session_id, text, claim, action):
    _write(hook="unbacked_claim", agent=agent, claim=claim, action=action)


@voice_runtime.hookimpl
def voice_runtime_session_handoff(session_id, from_agent, to_agent, history):
    _write(hook="handoff", from_agent=from_agent, to_agent=to_agent, history=history)
'''
