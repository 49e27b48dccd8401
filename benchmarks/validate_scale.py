"""How long `voice-runtime check --offline` takes on folders of 10, 100 and 1,000 specs.

Each folder is a copy of the example `agents.d/support.yaml` (with its prompt file and
the example `plugins/` beside it), renamed per copy so every agent name is unique.
Every run is a fresh process, timed from spawn to exit, with its peak RSS, the way a
user or CI job pays for it. The baseline is what a CI job would otherwise run on the
same files: `check-jsonschema --schemafile agents.d/agent.schema.json`.

    python benchmarks/validate_scale.py                       # 10, 100, 1000 specs, median of 3
    python benchmarks/validate_scale.py --sizes 3,5 --repeat 1

Prints one JSON object on stdout; progress and failures go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "agents.d" / "support.yaml"
SCHEMA = REPO / "agents.d" / "agent.schema.json"
TARGET_SIZE = 1000
TARGET_SECONDS = 2.0


def _beside_python(name: str, module: str) -> list[str]:
    # the console script next to this interpreter (what users run), not a pyenv shim
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


CLI = _beside_python("voice-runtime", "voice_runtime.cli")
CHECK_JSONSCHEMA = _beside_python("check-jsonschema", "check_jsonschema")

# Runs the command and writes "wall_seconds peak_rss_kib rc" to argv[1]. The command is
# started from this small process, not from the benchmark: a forked child's ru_maxrss
# counts the image of the process it was forked from until it execs.
_MEASURE = """
import resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
rc = subprocess.run(cmd).returncode
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if sys.platform == "darwin":
    rss //= 1024
with open(out, "w") as fh:
    fh.write(f"{wall} {rss} {rc}")
"""


def make_folder(root: Path, count: int) -> Path:
    """root/agents.d with ``count`` specs, its prompts/, and root/plugins; returns agents.d."""
    agents = root / "agents.d"
    (agents / "prompts").mkdir(parents=True)
    shutil.copy(REPO / "agents.d" / "prompts" / "support.md", agents / "prompts" / "support.md")
    (root / "plugins").mkdir()
    for plugin in (REPO / "plugins").glob("*.py"):
        shutil.copy(plugin, root / "plugins" / plugin.name)
    text = EXAMPLE.read_text(encoding="utf-8")
    if "\nname: support\n" not in text:
        raise SystemExit(f"{EXAMPLE} no longer has `name: support`; update make_folder")
    for i in range(count):
        name = f"support-{i:04d}"
        (agents / f"{name}.yaml").write_text(text.replace("\nname: support\n", f"\nname: {name}\n"), encoding="utf-8")
    return agents


def measure(cmd: list[str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """One run of ``cmd``: (wall seconds, peak RSS in MiB, the wrapper's captured output)."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats"
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(stats), *cmd], cwd=cwd, capture_output=True, text=True, timeout=300
        )
        if not stats.exists():
            raise SystemExit(f"the measuring wrapper failed: {proc.stderr}")
        wall, rss_kib, rc = stats.read_text().split()
    proc.returncode = int(rc)
    return float(wall), int(rss_kib) / 1024, proc


def run_many(cmd: list[str], cwd: Path, repeat: int, check_output: str) -> tuple[float, float]:
    """Median wall seconds and largest peak RSS (MiB) over ``repeat`` runs that all succeed."""
    walls, peaks = [], []
    for _ in range(repeat):
        wall, peak, proc = measure(cmd, cwd)
        if proc.returncode != 0 or check_output not in proc.stdout:
            sys.stderr.write(f"{' '.join(cmd[:3])} ... failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}\n")
            raise SystemExit(1)
        walls.append(wall)
        peaks.append(peak)
    return statistics.median(walls), max(peaks)


def tool_version(cmd: list[str]) -> str:
    proc = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    text = (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else "unknown"
    return text.replace(", version", "")  # click's "name, version X" -> "name X"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated spec counts (default: 10,100,1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported (default: 3)")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 1 or args.repeat < 1:
        parser.error("--sizes needs positive counts and --repeat at least 1")
    largest = sizes[-1]

    out: dict[str, object] = {
        "benchmark": "validate_scale",
        "command": "voice-runtime check --offline DIR",
        "stat": f"median of {args.repeat} fresh processes (wall, spawn to exit); peak_mb is the largest ru_maxrss",
        "sizes": sizes,
        "repeat": args.repeat,
    }
    with tempfile.TemporaryDirectory(prefix="validate_scale-") as tmp:
        folders = {n: make_folder(Path(tmp) / f"n{n}", n) for n in sizes}
        # untimed: writes bytecode caches and warms the page cache, like any second run in CI
        measure([*CLI, "check", "--offline", str(folders[sizes[0]])], Path(tmp))
        for n in sizes:
            seconds, peak = run_many(
                [*CLI, "check", "--offline", str(folders[n])], Path(tmp), args.repeat, f"{n} agent{'s' if n != 1 else ''} OK"
            )
            out[f"seconds_{n}"] = round(seconds, 3)
            out[f"peak_mb_{n}"] = round(peak, 1)
            print(f"check --offline, {n} specs: {seconds:.3f} s, {peak:.1f} MiB", file=sys.stderr)

        files = sorted(str(p) for p in folders[largest].glob("*.yaml"))
        baseline_cmd = [*CHECK_JSONSCHEMA, "--schemafile", str(SCHEMA), *files]
        base_seconds, base_peak = run_many(baseline_cmd, Path(tmp), args.repeat, "validation done")
        out["baseline"] = f"{tool_version(CHECK_JSONSCHEMA)} --schemafile agents.d/agent.schema.json FILES"
        out[f"baseline_seconds_{largest}"] = round(base_seconds, 3)
        out[f"baseline_peak_mb_{largest}"] = round(base_peak, 1)
        out[f"speedup_vs_baseline_{largest}"] = round(base_seconds / out[f"seconds_{largest}"], 2)  # type: ignore[operator]
        print(f"baseline check-jsonschema, {largest} files: {base_seconds:.3f} s", file=sys.stderr)

    out[f"target_seconds_{TARGET_SIZE}"] = TARGET_SECONDS
    seconds_target = out.get(f"seconds_{TARGET_SIZE}")
    # the target is about 1,000 specs; a run that did not measure 1,000 cannot meet or miss it
    out["meets_target"] = None if seconds_target is None else seconds_target <= TARGET_SECONDS  # type: ignore[operator]
    out["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
