"""An agent's instructions from its MCP servers at call start: server-everything's
``args-prompt`` (its argument from the call's context) and a resource of it become
the system prompt the model gets, in `chat` and through `serve` (the job reads them
through serve's warm connection); a server that is down leaves the spec's own
instructions with a WARNING; `check` names an unknown server at file:line:col."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
from fakes.openai_chat import FakeOpenAI
from helpers import CLI, child_env, run_cli, write
from serve_harness import Serve, spec
from test_mcp_tasks import EVERYTHING, everything

FEATURES = "demo://resource/static/document/features.md"
FROM_SERVER = (
    "instructions_from: {server: research, prompt: args-prompt, arguments: {city: '${call.city}'}}\n"
    f"context_resources: [{{server: research, uri: '{FEATURES}'}}]\n"
    "context: {city: {from: 'dispatch:city', default: Paris}}\n")


def system_prompts(fake: FakeOpenAI) -> list[str]:
    return [m["content"] for r in fake.chat_requests for m in r["messages"] if m["role"] in ("system", "developer")]


def chat(agents: Path, fake: FakeOpenAI, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "chat", str(agents), "--agent", "desk", "--json", *extra], input="hello\n",
                          capture_output=True, text=True, timeout=120,
                          env=child_env({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "x"}))


def desk(server: dict[str, Any], base_url: str) -> str:
    return (spec("You are the fallback desk.", base_url) + FROM_SERVER
            + f"mcp_servers:\n  research: {json.dumps(server)}\n")


def test_a_servers_prompt_with_the_calls_context_and_a_resource_become_the_instructions_in_chat(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", desk(everything(), fake_openai.base_url))
    result = chat(agents, fake_openai, "--context", "city=Oslo")
    assert result.returncode == 0, result.stdout + result.stderr
    [prompt] = set(system_prompts(fake_openai))
    assert prompt.startswith("What's weather in Oslo?\n\nContext from demo://resource/static/document/features.md:\n")
    assert "fallback" not in prompt
    assert len(prompt) > 500  # the resource's text itself


def test_a_server_that_is_down_leaves_the_specs_own_instructions_with_a_warning(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    down = {"command": sys.executable, "args": ["-c", "raise SystemExit(3)"], "connect_timeout": 5}
    write(agents / "desk.yaml", desk(down, fake_openai.base_url))
    result = chat(agents, fake_openai)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(system_prompts(fake_openai)) == {"You are the fallback desk."}
    warnings = [json.loads(line)["message"] for line in result.stdout.splitlines()
                if line.strip() and json.loads(line)["type"] == "warning"]
    assert any(w.startswith("instructions_from: prompt 'args-prompt' of MCP server research could not be read (")
               and w.endswith("; the spec's own instructions are used instead") for w in warnings), warnings
    assert any(w.startswith(f"context_resources: {FEATURES} of MCP server research could not be read")
               for w in warnings), warnings


def test_through_serve_the_job_reads_the_prompt_through_serves_warm_connection(
    agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", desk(everything(), fake_openai.base_url))
    with Serve(agents) as serve:
        serve.wait_ready()
        code, report = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["hello"], "wait": True, "context": {"city": "Bergen"}}).encode(), timeout=120)
        assert code == 200, report
        servers = [p for p in psutil.Process(serve.proc.pid).children(recursive=True)
                   if str(EVERYTHING) in " ".join(p.cmdline())]
        assert [p.ppid() for p in servers] == [serve.proc.pid]  # serve's, lent to the job
    [prompt] = set(system_prompts(fake_openai))
    assert prompt.startswith("What's weather in Bergen?\n\nContext from " + FEATURES)


def test_check_names_an_instructions_server_the_spec_does_not_have_at_its_line_and_column(agents: Path) -> None:
    write(agents / "desk.yaml", "apiVersion: voice-runtime/v1\ninstructions: x\n"
          "pipeline: {llm: {provider: openai}, text_only: true}\n"
          "instructions_from: {server: nowhere, prompt: p}\n")
    checked = run_cli("check", agents, "--offline")
    assert checked.rc == 1, checked.output
    assert f"{agents / 'desk.yaml'}:4:29: instructions_from.server: no MCP server 'nowhere' in mcp_servers " \
           "(servers: none)" in checked.output
