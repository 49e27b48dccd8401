"""What `pip install .` gives users: the wheel and the sdist built from the
repository's files, and a virtualenv with that wheel (not the editable install the
suite otherwise runs against) serving the example specs.

The virtualenv sees this machine's site-packages (``--system-site-packages``) for
the dependencies: livekit-agents and its tree are not in the offline package index
and downloading them takes minutes. voice-runtime itself is the wheel, installed
into the virtualenv, and every command asserts it runs from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from helpers import REPO
from serve_harness import Serve

# what the checkout has (tracked files and new ones not ignored), nothing a
# previous build left behind (build/, *.egg-info: setuptools would ship stale files)
_NO_CHECKOUT = {"PYTHONPATH": None}


def _env(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from the checkout
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def source_files() -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The checkout's files copied aside, then its wheel (``pip wheel --no-deps``,
    what ``pip install .`` builds) and its sdist (``python -m build --sdist``)."""
    root = tmp_path_factory.mktemp("package")
    src, dist = root / "src", root / "dist"
    for name in source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    for command in ([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                    [sys.executable, "-m", "build", "--sdist", "-o", str(dist), str(src)]):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "root": root}


def runtime_files() -> list[str]:
    """Every file under runtime/ (modules and any data file), as a path inside it."""
    return [f.removeprefix("runtime/") for f in source_files() if f.startswith("runtime/")]


def test_the_wheel_and_the_sdist_hold_every_package_and_data_file_under_runtime(built: dict[str, Path]) -> None:
    expected = runtime_files()
    packages = {str(Path(f).parent) for f in expected if Path(f).name == "__init__.py"}
    # session/testing/ was once the one left out; the gateway is a package inside a package
    assert {".", "core", "spec", "observe", "plugins", "plugins/builtin", "mcp", "mcp/gateway", "session",
            "session/testing", "serve", "commands"} <= packages

    with zipfile.ZipFile(built["wheel"]) as wheel:
        in_wheel = set(wheel.namelist())
        entry_points = wheel.read("voice_runtime-0.1.0.dist-info/entry_points.txt").decode()
    missing = [f"voice_runtime/{f}" for f in expected if f"voice_runtime/{f}" not in in_wheel]
    assert not missing, f"not in the wheel: {missing}"
    # nothing else at the top level: no stray `runtime` package, no tests
    assert {n.split("/")[0] for n in in_wheel} == {"voice_runtime", "voice_runtime-0.1.0.dist-info"}
    assert "voice-runtime = voice_runtime.cli:main" in entry_points

    with tarfile.open(built["sdist"]) as sdist:
        in_sdist = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    needed = [f"runtime/{f}" for f in expected] + ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md"]
    missing = [f for f in needed if f not in in_sdist]
    assert not missing, f"not in the sdist: {missing}"


def test_a_fresh_virtualenv_with_the_wheel_runs_check_test_and_serve_on_the_example_specs(
        built: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python, program = venv / "bin" / "python", venv / "bin" / "voice-runtime"
    # --no-deps: the dependencies are the machine's; the project is the wheel, not editable
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                           str(built["wheel"])], capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = subprocess.run([str(python), "-c", "import voice_runtime, voice_runtime.session.testing as t; "
                            "print(voice_runtime.__file__); print(t.__file__)"],
                           capture_output=True, text=True, env=_env(), cwd=tmp_path, check=True).stdout.split()
    assert all(w.startswith(str(venv / "lib")) for w in where), where

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(program), *args], capture_output=True, text=True, timeout=180, env=_env(),
                              cwd=tmp_path)

    agents = REPO / "agents.d"
    check = run("check", "--offline", str(agents), "--plugins", str(REPO / "plugins"))
    assert check.returncode == 0 and "2 agents OK" in check.stdout + check.stderr, check.stdout + check.stderr
    tests = run("test", str(agents))
    assert tests.returncode == 0 and "1 passed, 0 failed" in tests.stdout, tests.stdout + tests.stderr
    # the schema the wheel's code generates is the one the repository ships for editors
    schema = run("schema")
    assert schema.returncode == 0, schema.stderr
    assert schema.stdout.strip() == (agents / "agent.schema.json").read_text().strip()

    with Serve(agents, "--plugins", str(REPO / "plugins"), cli=[str(program)], log_dir=tmp_path,
               env=_NO_CHECKOUT) as serve:
        serve.wait_ready(timeout=120)
        assert serve.get("/healthz")[0] == 200
        assert serve.get("/readyz")[0] == 200
        assert serve.stop() == 0, serve.output()
    assert f"serving {agents}" in serve.output()
