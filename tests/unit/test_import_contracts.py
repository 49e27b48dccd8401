"""The layers are a contract, not a reviewer's memory: pyproject.toml's import-linter
contracts (commands > serve > session > mcp > plugins > observe > spec > core, every
top-level module in a layer; commands independent of each other; livekit only at and
above session, plus core.livekit_compat) hold for the package, and a change that breaks
one fails with the offending import named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import voice_runtime

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(voice_runtime.__file__).parent  # PYTHONPATH picks the worktree being tested
# import-linter's own entry point, run by this interpreter (no PATH or shim involved)
LINT = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]


def lint_imports(config: Path, package_parent: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([*LINT, "--no-cache", "--no-logo", str(config)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_package_keeps_every_import_contract_in_pyproject() -> None:
    proc = lint_imports(REPO / "pyproject.toml", PACKAGE.parent, REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
    for contract in ("Each package imports only the packages below it", "Commands never import each other",
                     "livekit is imported only by session and above"):
        assert contract in proc.stdout  # each contract really ran


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """The package copied as it is, to break on purpose; returns the folder holding it."""
    shutil.copytree(PACKAGE, tmp_path / "voice_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize("module, source, named", [
    # a lower layer reaching up, even only for a type
    ("spec/shortcut.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    from ..serve.supervisor import Supervisor\n",
     "voice_runtime.spec.shortcut -> voice_runtime.serve.supervisor"),
    # a command importing another command's module
    ("commands/tools.py", None, "voice_runtime.commands.tools -> voice_runtime.commands.call"),
    # livekit below session, inside a function as most imports of it are
    ("mcp/speaker.py", "def speak():\n    from livekit import rtc\n", "voice_runtime.mcp.speaker -> livekit"),
    # a new flat module beside the packages belongs to no layer
    ("helpers.py", "X = 1\n", "voice_runtime.helpers"),
], ids=["upward", "command-to-command", "livekit-below-session", "flat-module"])
def test_a_forbidden_import_fails_lint_imports_naming_the_import(package_copy: Path, module: str,
                                                                  source: str | None, named: str) -> None:
    path = package_copy / "voice_runtime" / module
    if source is None:  # appended to a module that exists
        path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _other():\n    from . import call\n")
    else:
        path.write_text("from __future__ import annotations\n\n" + source, encoding="utf-8")
    proc = lint_imports(REPO / "pyproject.toml", package_copy, package_copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BROKEN" in proc.stdout and named in " ".join(proc.stdout.split()), proc.stdout
