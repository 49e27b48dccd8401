"""Commands that run no session do not import livekit, and the plugin tools they
describe without it are the ones a session gives the model.

livekit's import costs about a second on every run of `check`, `tools`, `call`,
`schema` and `plugins`; each command runs here as a user runs it (the shipped
examples, a real mcp-server-time behind `support`), under ``-X importtime``, which
lists every module the process imported.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_platform import FakeOpenAIPlatform
from helpers import CLI, REPO, child_env, write

pytestmark = pytest.mark.timeout(120)

# the examples' optional variables unset: their defaults are what ships
SHIPPED_DEFAULTS: dict[str, str | None] = {v: None for v in (
    "CARTESIA_VOICE", "SEARCH_MCP_URL", "SEARCH_TOKEN", "BACKUP_LLM_URL", "SUPPORT_TIMEZONE",
    "VOICE_RUNTIME_DISABLE_PLUGINS")}
SUPPORT = ["--agent", "support"]
COMMANDS = {
    "check-offline": ["check", "agents.d", "--offline"],
    "check": ["check", "agents.d", "--format", "json"],
    "tools": ["tools", "agents.d", *SUPPORT, "--format", "json"],
    "call-mcp": ["call", "agents.d", *SUPPORT, "get_current_time", "--args", '{"timezone": "UTC"}'],
    "call-plugin": ["call", "agents.d", *SUPPORT, "clock.now", "--args", '{"timezone": "UTC"}'],
    "schema": ["schema"],
    "plugins": ["plugins", "--format", "json"],
}


def imported_modules(importtime_stderr: str) -> list[str]:
    """Module names from ``-X importtime`` lines: ``import time: self | cumulative | name``."""
    return [line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2]


@pytest.mark.parametrize("args", list(COMMANDS.values()), ids=list(COMMANDS))
def test_command_that_runs_no_session_never_imports_livekit(args: list[str]) -> None:
    assert importlib.util.find_spec("livekit.agents") is not None  # not importing it is a choice
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "voice_runtime.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=90,
                          env=child_env(SHIPPED_DEFAULTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    modules = imported_modules(proc.stderr)
    assert "voice_runtime.plugins" in modules  # the listing is there: an empty one would prove nothing
    assert [m for m in modules if m.split(".")[0] == "livekit"] == []
    if args[0] == "call":
        assert "UTC" in proc.stdout  # the tool really answered


# -- what `tools` shows is what the model is given -------------------------------------

PLUGIN = '''
import voice_runtime


def add_days(date: str, days: int = 1, *, business: bool = False) -> str:
    """A date some days after another.

    Args:
        date: the start, as YYYY-MM-DD.
        days: how many days to add.
    """
    return date


@voice_runtime.hookimpl
def voice_runtime_register_tools(register):
    register("cal.add_days", lambda: add_days)
'''


def project(tmp_path: Path, models: str) -> Path:
    """A specs folder with one agent (the given model section) that lists the
    example clock plugin's tools and a plain sync function with defaults."""
    write(tmp_path / "plugins" / "cal.py", PLUGIN)
    shutil.copy(REPO / "plugins" / "clock.py", tmp_path / "plugins" / "clock.py")
    write(tmp_path / "agents.d" / "desk.yaml",
          "apiVersion: voice-runtime/v1\ninstructions: You help.\n" + models
          + "tools: [clock.now, clock.days_until, cal.add_days]\n")
    return tmp_path / "agents.d"


def shown_by_tools(agents: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([*CLI, "tools", str(agents), "--agent", "desk", "--format", "json"],
                          capture_output=True, text=True, timeout=60, env=child_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [{k: t[k] for k in ("name", "description", "parameters")} for t in json.loads(proc.stdout)["tools"]]


def chat_once(agents: Path, fake: FakeOpenAIPlatform) -> None:
    proc = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk", "--json"], input="hello\n",
                          capture_output=True, text=True, timeout=90,
                          env=child_env({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-test"}))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def openai_platform() -> Any:
    fake = FakeOpenAIPlatform()
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


def test_plugin_tools_shown_by_tools_are_the_ones_the_realtime_model_is_given(
    tmp_path: Path, openai_platform: FakeOpenAIPlatform
) -> None:
    agents = project(tmp_path, "realtime: {provider: openai, model: gpt-realtime}\n")
    chat_once(agents, openai_platform)
    given = [{k: t[k] for k in ("name", "description", "parameters")} for t in openai_platform.session_config["tools"]]
    assert [t["name"] for t in given] == ["current_time", "count_days_until", "add_days"]
    assert shown_by_tools(agents) == given


def test_plugin_tools_shown_by_tools_are_the_ones_the_chat_model_is_given_in_strict_form(
    tmp_path: Path, openai_platform: FakeOpenAIPlatform
) -> None:
    agents = project(tmp_path, "pipeline: {llm: {provider: openai}, text_only: true}\n")
    chat_once(agents, openai_platform)
    given = [t["function"] for t in openai_platform.chat.chat_requests[0]["tools"]]
    shown = shown_by_tools(agents)
    assert [(t["name"], t["description"]) for t in given] == [(t["name"], t["description"]) for t in shown]
    for strict, legacy in zip(given, shown):
        # OpenAI's strict mode: every parameter required, one with a default nullable,
        # no titles, no other keys; types and descriptions as `tools` shows them
        props, required = legacy["parameters"]["properties"], legacy["parameters"]["required"]
        assert strict["parameters"]["required"] == list(props)
        assert strict["parameters"]["additionalProperties"] is False
        assert strict["parameters"]["properties"] == {
            name: {**({"description": p["description"]} if "description" in p else {}),
                   "type": p["type"] if name in required else [p["type"], "null"]}
            for name, p in props.items()
        }
