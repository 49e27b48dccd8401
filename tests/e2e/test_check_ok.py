"""`voice-runtime check` on valid input, and the CLI's basic contract (version, usage)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, run_cli, write

EXAMPLES = REPO / "agents.d"
EXAMPLE_MODES = {"concierge": "realtime+fallback", "support": "pipeline"}
VERSION = importlib.metadata.version("voice-runtime")
NO_ENV_OVERRIDES = {
    var: None for var in ("CARTESIA_VOICE", "SEARCH_MCP_URL", "SEARCH_TOKEN", "BACKUP_LLM_URL", "SUPPORT_TIMEZONE")
} | {"VOICE_RUNTIME_DISABLE_PLUGINS": None}


def table_rows(stdout: str) -> list[list[str]]:
    """The agent table as rows of cells (its header dropped; it ends at the first
    blank line, or before the `N agents OK` line)."""
    lines = stdout.splitlines()
    assert lines[0].split()[:2] == ["AGENT", "MODE"], stdout
    end = lines.index("") if "" in lines else len(lines) - 1
    return [re.split(r"\s{2,}", line) for line in lines[1:end]]


def test_check_of_the_examples_lists_every_example_agent_with_its_mode() -> None:
    result = run_cli("check", "agents.d/", cwd=REPO, env=NO_ENV_OVERRIDES)
    assert result.rc == 0, result.output
    assert "Traceback" not in result.output
    rows = table_rows(result.stdout)
    assert {row[0]: row[1] for row in rows} == EXAMPLE_MODES
    assert {Path(row[-1]).name for row in rows} == {p.name for p in EXAMPLES.glob("*.yaml")}
    assert result.stdout.splitlines()[-1] == f"{len(EXAMPLE_MODES)} agents OK"


def test_check_of_the_examples_as_json_describes_every_agent() -> None:
    result = run_cli("check", "agents.d", "--format", "json", cwd=REPO, env=NO_ENV_OVERRIDES)
    assert result.rc == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["errors"] == []
    assert {a["name"]: a["mode"] for a in data["agents"]} == EXAMPLE_MODES
    support = next(a for a in data["agents"] if a["name"] == "support")
    assert support["tools"] == ["clock.now", "clock.days_until"]
    assert support["providers"]["llm"] == "openai/gpt-4.1-mini > openai/gpt-4o-mini"


def _valid_spec(i: int) -> str:
    return f"""\
apiVersion: voice-runtime/v1
instructions: You are agent number {i}. Be brief.
greeting: Hello from {i}
realtime: {{provider: openai, model: gpt-realtime, voice: marin}}
pipeline:
  stt: {{provider: deepgram, model: nova-3, language: en}}
  llm:
    - {{provider: openai, model: gpt-4.1-mini, temperature: 0.3}}
    - {{provider: openai, model: gpt-4o-mini}}
  tts: {{provider: cartesia, model: sonic-2}}
  vad: {{provider: silero}}
  turn_detection: vad
mcp_servers:
  clock: {{command: mcp-server-time, args: [--local-timezone, UTC]}}
  search: {{url: "http://127.0.0.1:{8000 + i}/mcp", timeout: 10}}
"""


def test_100_valid_specs_are_all_listed_by_an_offline_check(tmp_path: Path) -> None:
    # speed is measured by benchmarks/validate_scale.py, not here
    for i in range(100):
        write(tmp_path / "agents" / f"agent{i:03d}.yaml", _valid_spec(i))
    result = run_cli("check", "agents", "--offline", cwd=tmp_path)
    assert result.rc == 0, result.output
    assert result.stdout.splitlines()[-1] == "100 agents OK"
    assert len(table_rows(result.stdout)) == 100
    assert "HANDSHAKE" not in result.stdout  # --offline connects to nothing


def test_import_works_from_another_working_directory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import voice_runtime; print(voice_runtime.__version__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == VERSION


def test_version_option_prints_the_installed_version(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.rc == 0
    assert result.stdout == f"voice-runtime {VERSION}\n"


@pytest.mark.parametrize("args", [
    ["check", "agents.d", "--format", "xml"],
    ["plugins", "--format", "xml"],
    ["tools", "agents.d", "--agent", "support", "--format", "xml"],
], ids=["check", "plugins", "tools"])
def test_unknown_format_is_a_usage_error_with_exit_2_naming_the_choices(args: list[str]) -> None:
    result = run_cli(*args, cwd=REPO)
    assert result.rc == 2
    assert "Invalid value for '--format'" in result.stderr
    assert "'xml' is not one of 'text', 'json'" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [
    ["tools", "agents.d", "--agent", "support", "--log-level", "loud"],
    ["chat", "agents.d", "--agent", "support", "--log-level", "loud"],
    ["serve", "agents.d", "--unregistered", "--log-level", "loud"],
], ids=["tools", "chat", "serve"])
def test_unknown_log_level_is_a_usage_error_with_exit_2_naming_the_levels(args: list[str]) -> None:
    result = run_cli(*args, cwd=REPO)
    assert result.rc == 2
    assert "Invalid value for '--log-level'" in result.stderr
    assert "'loud' is not one of 'debug', 'info', 'warning', 'error', 'critical'" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [[], ["serve"], ["check"], ["chat"], ["call"], ["test"]],
                         ids=["root", "serve", "check", "chat", "call", "test"])
def test_dash_h_prints_the_help_like_dash_dash_help_and_exits_0(command: list[str], tmp_path: Path) -> None:
    short, long = run_cli(*command, "-h", cwd=tmp_path), run_cli(*command, "--help", cwd=tmp_path)
    assert short.rc == 0, short.output
    assert short.stdout.startswith(f"Usage: voice-runtime {' '.join(command)}".rstrip()) and short.stdout == long.stdout
    assert "-h, --help" in short.stdout


def test_usage_lines_and_errors_name_arguments_in_capitals(tmp_path: Path) -> None:
    assert run_cli("serve", "-h", cwd=tmp_path).stdout.splitlines()[0] == \
        "Usage: voice-runtime serve [OPTIONS] AGENTS_DIR"
    assert run_cli("call", "-h", cwd=tmp_path).stdout.splitlines()[0] == \
        "Usage: voice-runtime call [OPTIONS] AGENTS_DIR TOOL"
    missing = run_cli("serve", "--unregistered", cwd=tmp_path)
    assert missing.rc == 2
    assert "Usage: voice-runtime serve [OPTIONS] AGENTS_DIR" in missing.stderr
    assert "Missing argument 'AGENTS_DIR'." in missing.stderr and "{" not in missing.stderr, missing.stderr


def test_serve_help_lists_the_log_level_choices(tmp_path: Path) -> None:
    result = run_cli("serve", "--help", cwd=tmp_path)
    assert result.rc == 0
    assert re.search(r"^  --log-level <debug\|info\|warning\|error\|critical>", result.stdout, re.M), result.stdout


def test_no_arguments_prints_help_listing_the_commands_and_exits_2(tmp_path: Path) -> None:
    # typer's no_args_is_help: click >= 8.2 prints the help to stderr and exits 2
    result = run_cli(cwd=tmp_path)
    assert result.rc == 2
    assert result.output.startswith("Usage: voice-runtime [OPTIONS] COMMAND [ARGS]...")
    for command in ("check", "schema", "plugins"):
        assert re.search(rf"^  {command}\s", result.output, re.M), result.output
    assert "Traceback" not in result.output


def test_table_shows_the_variable_text_not_its_value(tmp_path: Path) -> None:
    """README: values that came from a variable are never printed; reports show ${VAR}."""
    write(
        tmp_path / "agents/a.yaml",
        'apiVersion: voice-runtime/v1\ninstructions: hi\npipeline:\n  text_only: true\n'
        '  llm: {provider: openai, model: "${LLM_MODEL}"}\n'
        'mcp_servers:\n  search: {url: "${SEARCH_URL}"}\n',
    )
    env = {"LLM_MODEL": "model-canary-789", "SEARCH_URL": "http://user:url-canary-789@127.0.0.1/mcp"}
    text = run_cli("check", "agents", cwd=tmp_path, env=env)
    assert text.rc == 0, text.output
    assert "llm openai/${LLM_MODEL}" in text.stdout
    assert "canary-789" not in text.output, text.output
    as_json = run_cli("check", "agents", "--format", "json", cwd=tmp_path, env=env)
    assert as_json.rc == 0, as_json.output
    [agent] = json.loads(as_json.stdout)["agents"]
    assert agent["mcp_servers"]["search"]["target"] == "${SEARCH_URL}"
    assert agent["providers"]["llm"] == "openai/${LLM_MODEL}"
    assert "canary-789" not in as_json.output, as_json.output


def test_check_json_says_what_each_server_may_ask_of_the_agent(tmp_path: Path) -> None:
    write(tmp_path / "agents" / "desk.yaml",
          'apiVersion: voice-runtime/v1\ninstructions: hi\npipeline:\n  text_only: true\n  llm: {provider: openai}\n'
          'mcp_servers:\n'
          '  plain: {url: "http://127.0.0.1:9/mcp"}\n'
          '  quiet: {url: "http://127.0.0.1:9/mcp", elicitation: deny}\n'
          '  asks: {url: "http://127.0.0.1:9/mcp", elicitation: allow, sampling: {allow: true}, roots: ["file:///srv"]}\n')
    result = run_cli("check", "agents", "--format", "json", "--offline", cwd=tmp_path)
    assert result.rc == 0, result.output
    [agent] = json.loads(result.stdout)["agents"]
    assert agent["mcp_servers"]["plain"]["allows"] == ["elicitation"]  # the default
    assert agent["mcp_servers"]["quiet"]["allows"] == []
    assert agent["mcp_servers"]["asks"]["allows"] == ["elicitation", "sampling", "roots"]
