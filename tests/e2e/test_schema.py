"""The committed JSON Schema is current, and an external validator agrees with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO, run_cli

SCHEMA = REPO / "agents.d" / "agent.schema.json"
EXAMPLES = sorted((REPO / "agents.d").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=./agent.schema.json"
REGENERATE = "voice-runtime schema --plugins plugins -o agents.d/agent.schema.json"

_VALIDATOR = Path(sys.executable).with_name("check-jsonschema")
CHECK_JSONSCHEMA = [str(_VALIDATOR)] if _VALIDATOR.exists() else [sys.executable, "-m", "check_jsonschema"]


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHECK_JSONSCHEMA, "--schemafile", str(SCHEMA), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_committed_schema_is_what_the_schema_command_prints_now() -> None:
    result = run_cli("schema", "--plugins", "plugins", cwd=REPO, env={"VOICE_RUNTIME_DISABLE_PLUGINS": None})
    assert result.rc == 0, result.output
    assert result.stdout == SCHEMA.read_text(encoding="utf-8"), (
        f"agents.d/agent.schema.json is stale; regenerate it from the repo root with: {REGENERATE}"
    )


def test_schema_output_file_option_writes_the_same_schema(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = run_cli("schema", "--plugins", str(REPO / "plugins"), "-o", str(out), cwd=tmp_path)
    assert result.rc == 0, result.output
    assert json.loads(out.read_text()) == json.loads(SCHEMA.read_text())
    assert result.stdout == ""


def test_example_specs_are_valid_for_an_external_json_schema_validator() -> None:
    assert len(EXAMPLES) >= 2
    proc = check_jsonschema(*EXAMPLES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_external_validator_rejects_a_misspelled_key(tmp_path: Path) -> None:
    source = (REPO / "agents.d" / "support.yaml").read_text(encoding="utf-8")
    assert "\ngreeting:" in source
    bad = tmp_path / "support.yaml"
    bad.write_text(source.replace("\ngreeting:", "\ngreting:"), encoding="utf-8")
    proc = check_jsonschema(bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "greting" in proc.stdout + proc.stderr


def test_external_validator_rejects_a_misspelled_provider_option(tmp_path: Path) -> None:
    source = (REPO / "agents.d" / "support.yaml").read_text(encoding="utf-8")
    assert "temperature: 0.3" in source
    bad = tmp_path / "support.yaml"
    bad.write_text(source.replace("temperature: 0.3", "temprature: 0.3"), encoding="utf-8")
    proc = check_jsonschema(bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr


def test_every_example_spec_starts_with_the_schema_modeline() -> None:
    assert EXAMPLES
    for path in EXAMPLES:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == MODELINE, f"{path.name} starts with {first!r}"
