"""What a hostile-user pass found, each kept fixed: plugins that raise SystemExit from a
hook, leave threads running or print on stdout; tool results that are resources; API
keys and YAML that cannot be used; spec names that are broken symlinks. Every test runs
the real CLI in a subprocess, with real plugin files and real MCP server processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_chat import FakeOpenAI, text, tool_call
from helpers import CLI, CliResult, child_env, run_cli, write
from mcp_servers.harness import stdio_command

pytestmark = pytest.mark.timeout(120)

RESOURCES = Path(__file__).resolve().parents[1] / "mcp_servers" / "resources.py"
TEXT_AGENT = """\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  text_only: true
  llm: {provider: openai, api_key: sk-test}
"""
INVALID_AGENT = "apiVersion: voice-runtime/v1\ninstructions: hi\npipeline: {text_only: true, llm: {provider: openai, modle: x}}\n"


def project(tmp_path: Path, plugin: str | None = None, agents: dict[str, str] | None = None) -> Path:
    """tmp_path/agents/*.yaml and, if given, tmp_path/plugins/hook.py; returns the agents folder."""
    (tmp_path / "plugins").mkdir(exist_ok=True)
    if plugin is not None:
        write(tmp_path / "plugins" / "hook.py", "import voice_runtime\n" + plugin)
    for name, body in (agents or {"desk.yaml": TEXT_AGENT}).items():
        write(tmp_path / "agents" / name, body)
    return tmp_path / "agents"


def no_traceback(result: CliResult) -> None:
    assert "Traceback" not in result.output, result.output


# -- 3: a hook that raises anything, or returns garbage, fails the check ------------------

HOOKS = {
    "check_spec": "def voice_runtime_check_spec(spec, path):\n",
    "adjust_spec_data": "def voice_runtime_adjust_spec_data(data, path):\n",
    "register_tools": "def voice_runtime_register_tools(register):\n",
}


@pytest.mark.parametrize("hook", list(HOOKS))
@pytest.mark.parametrize("body, shown", [
    ("raise SystemExit(0)", "raised SystemExit: 0"),
    ("raise KeyboardInterrupt", "raised KeyboardInterrupt"),
])
def test_a_hook_raising_systemexit_or_keyboardinterrupt_fails_check_naming_the_plugin_and_hook(
    tmp_path: Path, hook: str, body: str, shown: str
) -> None:
    agents = project(tmp_path, f"@voice_runtime.hookimpl\n{HOOKS[hook]}    {body}\n",
                     {"desk.yaml": TEXT_AGENT, "zbad.yaml": INVALID_AGENT})

    result = run_cli("check", "--offline", agents)

    assert result.rc == 1, result.output
    no_traceback(result)
    assert f"voice_runtime_{hook} {shown}" in result.stdout
    assert re.search(r"plugin '?hook'?", result.stdout) and str(tmp_path / "plugins" / "hook.py") in result.stdout
    assert f"{agents / 'zbad.yaml'}:" in result.stdout  # every other file is still checked


def test_a_check_spec_hook_returning_a_number_fails_check_naming_the_plugin_without_a_traceback(tmp_path: Path) -> None:
    agents = project(tmp_path, "@voice_runtime.hookimpl\ndef voice_runtime_check_spec(spec, path):\n    return 12345\n")

    result = run_cli("check", "--offline", agents)

    assert result.rc == 1, result.output
    no_traceback(result)
    assert f"desk.yaml:1:1: plugin 'hook' ({tmp_path / 'plugins' / 'hook.py'}): voice_runtime_check_spec returned " \
           "int 12345; expected None or a list of problems" in result.stdout


# -- 4: a plugin's non-daemon thread does not keep a one-shot command alive ---------------


def test_check_exits_when_done_although_a_plugin_left_a_non_daemon_thread_running(tmp_path: Path) -> None:
    agents = project(tmp_path, "import threading, time\n"
                               "threading.Thread(target=lambda: time.sleep(600), daemon=False).start()\n")

    started = time.monotonic()
    result = run_cli("check", "--offline", "--format", "json", agents, timeout=60)

    assert time.monotonic() - started < 30, "check waited for the plugin's thread"
    assert result.rc == 0, result.output
    assert json.loads(result.stdout)["ok"] is True  # the report was flushed before leaving


# -- 5: what plugins print goes to stderr; stdout is the command's output -------------------

NOISY_PLUGIN = '''\
print("NOISE at import")


def _shout():
    from livekit.agents import function_tool

    print("NOISE in the factory")

    @function_tool
    async def shout(text: str) -> str:
        """Say it loud.

        Args:
            text: what to say.
        """
        print("NOISE in the tool")
        return text.upper()

    return shout


@voice_runtime.hookimpl
def voice_runtime_register_tools(register):
    print("NOISE in register_tools")
    register("noisy.shout", _shout, description="Say it loud")


@voice_runtime.hookimpl
def voice_runtime_check_spec(spec, path):
    print("NOISE in check_spec")
'''
NOISY_AGENT = TEXT_AGENT + "tools: [noisy.shout]\n"


def test_what_plugins_print_goes_to_stderr_and_json_on_stdout_stays_parseable(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    agents = project(tmp_path, NOISY_PLUGIN, {"desk.yaml": NOISY_AGENT})
    fake_openai.enqueue(tool_call("shout", {"text": "hi"}), text("Done."))
    env = {"OPENAI_BASE_URL": fake_openai.base_url}

    results = {
        "check": run_cli("check", "--offline", "--format", "json", agents),
        "plugins": run_cli("plugins", "--plugins", tmp_path / "plugins", "--format", "json"),
        "tools": run_cli("tools", agents, "--agent", "desk", "--format", "json"),
        "call": run_cli("call", agents, "--agent", "desk", "shout", "--args", '{"text": "hi"}', "--json"),
    }
    proc = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk", "--json"], input="shout hi\n",
                          capture_output=True, text=True, timeout=90, env=child_env(env))
    results["chat"] = CliResult(proc.returncode, proc.stdout, proc.stderr)

    for command, result in results.items():
        assert result.rc == 0, (command, result.output)
        assert "NOISE" not in result.stdout, (command, result.stdout)
        assert "NOISE at import" in result.stderr, (command, result.stderr)
        [json.loads(line) for line in result.stdout.splitlines()] if command == "chat" else json.loads(result.stdout)
    assert json.loads(results["call"].stdout)["result"] == "HI"
    assert "NOISE in the tool" in results["call"].stderr and "NOISE in the tool" in results["chat"].stderr
    assert "NOISE in check_spec" in results["check"].stderr
    assert "NOISE in the factory" in results["tools"].stderr


# -- 8: embedded resources in tool results ---------------------------------------------------


def resources_agent(tmp_path: Path) -> Path:
    spec = {
        "apiVersion": "voice-runtime/v1", "name": "desk", "instructions": "You read files.",
        "pipeline": {"llm": {"provider": "openai", "api_key": "sk-test"}, "text_only": True},
        "mcp_servers": {"files": {"command": sys.executable, "args": [str(RESOURCES)]}},
    }
    return project(tmp_path, agents={"desk.yaml": json.dumps(spec)})


def test_the_text_of_an_embedded_resource_is_the_tool_result_and_a_blob_is_described_with_type_and_size(
    tmp_path: Path,
) -> None:
    agents = resources_agent(tmp_path)

    read = run_cli("call", agents, "--agent", "desk", "read_text", "--args", '{"path": "/etc/passwd"}', "--json")
    blob = run_cli("call", agents, "--agent", "desk", "read_blob", "--args", '{"path": "/logo.png"}', "--json")

    assert read.rc == 0 and blob.rc == 0, read.output + blob.output
    assert json.loads(read.stdout)["result"] == "root:x:0:0:root:/root:/bin/bash"
    assert json.loads(blob.stdout)["result"] == "[resource content, image/png, 1000 bytes]"


# -- 9: an API key HTTP cannot carry -------------------------------------------------------


def test_a_non_ascii_api_key_from_a_variable_is_a_spec_error_naming_the_key_not_the_value(tmp_path: Path) -> None:
    agents = project(tmp_path, agents={"desk.yaml": TEXT_AGENT.replace("sk-test", "'${PROVIDER_KEY}'")})

    result = run_cli("check", "--offline", agents, env={"PROVIDER_KEY": "sk-caf\u00e9-secret"})

    assert result.rc == 1, result.output
    assert re.search(r"desk\.yaml:5:\d+: pipeline\.llm\.api_key: the API key has a character HTTP headers cannot "
                     r"carry \(non-ASCII", result.stdout), result.stdout
    assert "caf\u00e9" not in result.output


def test_an_api_key_from_a_mounted_secret_file_loses_its_trailing_newline_and_is_accepted(tmp_path: Path) -> None:
    agents = project(tmp_path, agents={"desk.yaml": TEXT_AGENT.replace("sk-test", "'${PROVIDER_KEY}'")})

    result = run_cli("check", "--offline", agents, env={"PROVIDER_KEY": "sk-secret\n"})

    assert result.rc == 0, result.output


def test_a_secret_file_saved_with_a_byte_order_mark_is_refused_naming_the_mark_in_the_key_and_the_header(
    tmp_path: Path
) -> None:
    # an editor's "UTF-8 with BOM" puts an invisible U+FEFF first: it was refused as "non-ASCII"
    # with nothing to see in the file
    spec_text = TEXT_AGENT.replace("sk-test", "'${PROVIDER_KEY}'") + (
        "mcp_servers:\n  w: {url: 'http://127.0.0.1:9/mcp', headers: {Authorization: 'Bearer ${TOKEN}'}}\n")
    agents = project(tmp_path, agents={"desk.yaml": spec_text})
    secret = "\ufeffsk-bom-secret\n"  # as a mounted file reads

    result = run_cli("check", "--offline", agents, env={"PROVIDER_KEY": secret, "TOKEN": secret})

    mark = "holds a byte order mark (U+FEFF, invisible: a file saved as UTF-8 with BOM); save it without one"
    assert result.rc == 1, result.output
    assert re.search(rf"desk\.yaml:5:\d+: pipeline\.llm\.api_key: the API key {re.escape(mark)}", result.stdout), \
        result.stdout
    assert re.search(rf"desk\.yaml:7:\d+: mcp_servers\.w\.headers: header Authorization {re.escape(mark)}",
                     result.stdout), result.stdout
    assert "bom-secret" not in result.output


# -- 11: broken symlinks named *.yaml ---------------------------------------------------------


def test_a_dangling_symlink_and_a_symlink_loop_named_yaml_are_errors_naming_the_file(tmp_path: Path) -> None:
    agents = project(tmp_path)
    (agents / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    (agents / "loop1.yaml").symlink_to("loop2.yaml")
    (agents / "loop2.yaml").symlink_to("loop1.yaml")

    result = run_cli("check", "--offline", agents)

    assert result.rc == 1, result.output
    assert result.stdout.splitlines() == [
        f"{agents / 'gone.yaml'}:1:1: is a broken symbolic link (its target {tmp_path / 'nowhere.yaml'} does not exist)",
        f"{agents / 'loop1.yaml'}:1:1: is a symbolic link loop (too many levels of symbolic links)",
        f"{agents / 'loop2.yaml'}:1:1: is a symbolic link loop (too many levels of symbolic links)",
        "found 3 errors in 3 files",
    ]


# -- 12: the tool cap warning names tools --------------------------------------------------------


def test_the_tool_cap_warning_names_the_first_withheld_tools_and_how_many_more(tmp_path: Path) -> None:
    command, args = stdio_command(record=tmp_path / "bulk.jsonl", name="bulk", fault="many-tools=140")
    spec: dict[str, Any] = {
        "apiVersion": "voice-runtime/v1", "name": "desk", "instructions": "x",
        "pipeline": {"llm": {"provider": "openai", "api_key": "sk-test"}, "text_only": True},
        "mcp_servers": {"bulk": {"command": command, "args": args}},
    }
    agents = project(tmp_path, agents={"desk.yaml": json.dumps(spec)})

    result = run_cli("check", agents, "--format", "json")

    assert result.rc == 0, result.output
    report = json.loads(result.stdout)
    withheld = [w["name"] for w in report["withheld_tools"] if w["kind"] == "over_limit"]
    assert len(withheld) > 3
    assert [w["message"] for w in report["warnings"]] == [
        f"{len(withheld)} tools of mcp:bulk withheld ({', '.join(withheld[:3])} and {len(withheld) - 3} more): "
        "the model is offered at most 128 tools and 256 KiB of tool definitions (narrow it with allowed_tools)"
    ]


# -- 14: values a spec cannot hold ------------------------------------------------------------


def test_binary_instructions_are_refused_as_not_text(tmp_path: Path) -> None:
    agents = project(tmp_path, agents={"desk.yaml": TEXT_AGENT.replace("instructions: hi", "instructions: !!binary aGVsbG8=")})

    result = run_cli("check", "--offline", agents)

    assert result.rc == 1, result.output
    assert f"{agents / 'desk.yaml'}:2:15: instructions: YAML tag '!!binary' is not allowed: specs hold plain data only" \
        in result.stdout.splitlines()


def test_a_five_thousand_digit_number_is_a_number_too_long_error_at_its_position(tmp_path: Path) -> None:
    agents = project(tmp_path, agents={"desk.yaml": TEXT_AGENT.replace("api_key: sk-test", "temperature: " + "9" * 5000)})

    result = run_cli("check", "--offline", agents)

    assert result.rc == 1, result.output
    no_traceback(result)
    assert result.stdout.splitlines() == [
        f"{agents / 'desk.yaml'}:5:40: number too long (5000 digits); write it as a quoted string if it is text",
        "found 1 error in 1 file",
    ]
    assert "set_int_max_str_digits" not in result.output


def test_lines_a_stdio_server_prints_that_are_not_json_rpc_are_one_warning_each_not_tracebacks(tmp_path: Path) -> None:
    """The mcp SDK logs each stray stdout line of a stdio server at ERROR with a
    pydantic traceback: `check` printed three tracebacks above a report saying the
    server is up."""
    command, args = stdio_command(fault="garbage-stdout")
    agents = tmp_path / "agents.d"
    write(agents / "desk.yaml", f"""\
apiVersion: voice-runtime/v1
instructions: hi
pipeline:
  llm: {{provider: openai, api_key: sk-x}}
  text_only: true
mcp_servers:
  noisy: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}
""")
    checked = run_cli("check", agents)
    assert checked.rc == 0, checked.output
    assert "Traceback" not in checked.output and "mcp.client.stdio" not in checked.output
    assert re.search(r"^desk\s+noisy\s+stdio\s+up\b", checked.stdout, re.MULTILINE), checked.stdout
    listed = run_cli("tools", agents, "--agent", "desk", "--log-level", "warning")
    assert listed.rc == 0, listed.output
    assert "Traceback" not in listed.output
    warnings = [line for line in listed.stderr.splitlines() if "not JSON-RPC" in line]
    assert warnings and all(line.startswith("WARNING mcp.client.stdio: an MCP server printed a line") for line in warnings)
    assert any("'this is not JSON'" in line for line in warnings)
