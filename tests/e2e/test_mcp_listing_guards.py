"""What a server's tool definitions and slow calls may do to an agent (issue 20,
items 7, 11, 12): a schema too deep or malformed costs only that tool, with the
reason shown; a task-only tool of a server declaring no tasks is never offered; progress keeps a call alive past
its `timeout`, up to `max_timeout`.

Servers are real processes (tests/mcp_servers/raw_listing.py writes its listing as
raw JSON, as a hostile server would; progress.py reports progress while it works);
every command is the installed CLI in a subprocess.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import CliResult, run_cli, write
from mcp_servers.harness import read_records
from test_mcp_cli import table_rows

pytestmark = pytest.mark.timeout(180)

SERVERS = Path(__file__).resolve().parents[1] / "mcp_servers"


def folder_with(tmp_path: Path, name: str, script: str, *args: str, **options: Any) -> Path:
    block = {"command": sys.executable,
             "args": [str(SERVERS / script), "--record", str(tmp_path / f"{name}.jsonl"), *args], **options}
    spec = {"apiVersion": "voice-runtime/v1", "name": "desk", "instructions": "You help with tools.",
            "pipeline": {"llm": {"provider": "openai", "api_key": "x"}, "text_only": True},
            "mcp_servers": {name: block}}
    folder = tmp_path / "agents.d"
    write(folder / "desk.yaml", json.dumps(spec, indent=2))  # JSON is YAML
    return folder


def warnings(result: CliResult) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("warning:")]


def ended(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """progress.py's ``{"ended": tool, "how", "progress"}`` lines."""
    path = tmp_path / f"{name}.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if "ended" in r]


def calls(tmp_path: Path, name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r["tool"], r["args"]) for r in read_records(tmp_path / f"{name}.jsonl") if "tool" in r]


# -- item 7: one bad definition costs only that tool ----------------------------------------


def test_a_schema_ten_thousand_levels_deep_and_a_string_schema_cost_only_their_tools_with_the_reason(
    tmp_path: Path,
) -> None:
    folder = folder_with(tmp_path, "raw", "raw_listing.py", "--deep", "10000", "--scalar-schema",
                         connect_timeout=30)

    checked = run_cli("check", folder)
    as_json = run_cli("check", folder, "--format", "json")
    called = run_cli("call", folder, "--agent", "desk", "echo", "--args", '{"text": "still here"}')

    assert checked.rc == 0, checked.output
    assert "connect_timeout" not in checked.output
    assert "Traceback" not in checked.output
    rows = table_rows(checked.stdout, "AGENT  MCP SERVER")
    assert rows[0][1] == "raw" and rows[0][-1] == "echo"
    assert sorted(warnings(checked)) == [
        "warning: desk: tool deep of MCP server raw withheld: inputSchema nested deeper than 64 levels",
        "warning: desk: tool scalar of MCP server raw withheld: inputSchema: "
        "Input should be a valid dictionary or instance of InputSchema",
    ]
    withheld = json.loads(as_json.stdout)["withheld_tools"]
    assert sorted((w["kind"], w["original"]) for w in withheld) == [
        ("invalid_definition", "deep"), ("invalid_definition", "scalar")]
    assert called.rc == 0, called.output
    assert called.stdout.strip() == "still here"
    assert calls(tmp_path, "raw") == [("echo", {"text": "still here"})]


def test_a_fifty_megabyte_tool_and_a_hundred_thousand_tools_are_bounded_and_the_rest_still_work(
    tmp_path: Path,
) -> None:
    folder = folder_with(tmp_path, "raw", "raw_listing.py", "--huge-mb", "50", "--many", "100000",
                         connect_timeout=120)

    checked = run_cli("check", folder, timeout=170)

    assert checked.rc == 0, checked.output
    lines = warnings(checked)
    assert "warning: desk: tool huge of MCP server raw withheld: its definition is about 51200 KiB, " \
           "over the 256 KiB the model may be offered" in lines
    # echo, huge and 100,000 bulk tools: the first 20,000 are read
    assert "warning: desk: MCP server raw: 80002 more tools not read (a server may list at most 20000)" in lines
    assert len(table_rows(checked.stdout, "AGENT  MCP SERVER")[0][-1].split(", ")) == 128


# -- item 11: task-only tools ---------------------------------------------------------------


def test_a_task_only_tool_of_a_server_declaring_no_tasks_is_withheld_with_its_reason_in_check_tools_and_call(
    tmp_path: Path,
) -> None:
    folder = folder_with(tmp_path, "raw", "raw_listing.py", "--task-required")
    reason = ("tool research of MCP server raw withheld: it runs only as an MCP task "
              "(execution.taskSupport: required), and the server does not declare tasks for tool calls "
              "(capabilities.tasks.requests.tools.call)")

    checked = run_cli("check", folder)
    listed = run_cli("tools", folder, "--agent", "desk")
    called = run_cli("call", folder, "--agent", "desk", "research", "--args", '{"text": "q"}')

    assert checked.rc == 0, checked.output
    assert warnings(checked) == [f"warning: desk: {reason}"]
    assert [row[0] for row in table_rows(listed.stdout, "TOOL")] == ["echo"]
    assert f"withheld: {reason}" in listed.stdout
    assert called.rc == 2
    assert f"withheld: {reason}" in called.stderr
    assert calls(tmp_path, "raw") == []


# -- item 12: progress and max_timeout ------------------------------------------------------


def test_a_call_reporting_progress_runs_past_its_timeout_and_answers(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "slow", "progress.py", timeout=1, max_timeout=10)

    called = run_cli("call", folder, "--agent", "desk", "work", "--args", '{"seconds": 2.5, "every": 0.2}')

    assert called.rc == 0, called.output
    assert called.stdout.startswith("done after")
    assert [(r["ended"], r["how"]) for r in ended(tmp_path, "slow")] == [("work", "done")]
    assert ended(tmp_path, "slow")[0]["progress"] >= 10  # each report restarted the 1 s timeout


def test_a_call_reporting_progress_forever_is_cut_at_max_timeout(
    tmp_path: Path,
) -> None:
    folder = folder_with(tmp_path, "slow", "progress.py", timeout=1, max_timeout=2.5)

    called = run_cli("call", folder, "--agent", "desk", "spin", "--args", '{"every": 0.2}', "--json")

    assert called.rc == 1, called.output
    out = json.loads(called.stdout)
    assert out["record"]["outcome"] == "timeout"
    assert out["record"]["error"] == "no answer within max_timeout (2.5s), though it reported progress"
    assert out["record"]["latency_ms"] >= 2500
    assert calls(tmp_path, "slow") == [("spin", {"every": 0.2})]


def test_a_call_that_goes_quiet_after_reporting_progress_times_out_after_timeout(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "slow", "progress.py", timeout=1, max_timeout=30)

    called = run_cli("call", folder, "--agent", "desk", "quiet", "--args", '{"seconds": 20}', "--json")

    assert called.rc == 1, called.output
    record = json.loads(called.stdout)["record"]
    assert record["outcome"] == "timeout"
    assert record["error"].startswith("no answer or progress for 1s")
    assert record["latency_ms"] < 20_000


def test_a_max_timeout_below_timeout_is_a_spec_error_at_its_key(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "slow", "progress.py", timeout=5, max_timeout=2)

    checked = run_cli("check", folder)

    assert checked.rc == 1
    assert "desk.yaml:" in checked.output
    assert "max_timeout" in checked.output
    assert "must be at least timeout (5s)" in checked.output
