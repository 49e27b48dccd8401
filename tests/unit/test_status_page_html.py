"""The status page's HTML and the journal that feeds it its recent tool calls."""

from __future__ import annotations

import os
import time
from pathlib import Path

from voice_runtime.observe import call_journal
from voice_runtime.serve.page import render
from voice_runtime.observe.tool_calls import ToolCallRecord


def _status(**agent: object) -> dict[str, object]:
    base = {"name": "desk", "file": "agents.d/desk.yaml", "generation": 3, "mode": "pipeline",
            "providers": {"llm": "openai/gpt-4o-mini"}, "mcp_servers": {}, "registered": False,
            "error": None, "draining": False, "sessions_active": 0}
    return {"agents": [base | agent], "generation": 3, "last_reload": None, "plugin_errors": [],
            "ready": False, "not_ready": ["<b>why</b>"], "pid": 1, "tool_calls": []}


def test_everything_a_spec_or_server_supplies_is_html_escaped() -> None:
    hostile = '<script>alert(1)</script>"&'
    page = render(_status(error=hostile, mcp_servers={"s": {
        "transport": "stdio", "state": "down", "error": hostile, "tools": [hostile]}}))
    assert "<script>" not in page and "<b>why</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;" in page


def _record(agent: str, tool: str) -> ToolCallRecord:
    return ToolCallRecord(agent=agent, session_id="s", server="srv", tool=tool, exposed_name=tool,
                          args_digest="0" * 16, started_at=time.time(), latency_ms=1.0, outcome="ok",
                          result_chars=2)


def test_the_journal_shows_the_newest_calls_of_every_process_and_drops_files_that_cannot_show_again(tmp_path: Path) -> None:
    old = tmp_path / "1.jsonl"  # a finished job process, long ago
    old.write_text('{"started_at": 1, "agent": "old", "tool": "t"}\n')
    os.utime(old, (1, 1))
    os.environ[call_journal.ENV] = str(tmp_path)
    try:
        sink = call_journal.sink_from_env()
        assert sink is not None
        for i in range(call_journal.KEEP + 5):
            sink(_record("desk", f"tool{i}"))
    finally:
        del os.environ[call_journal.ENV]
    calls = call_journal.recent(tmp_path)
    assert len(calls) == call_journal.KEEP
    assert calls[0]["tool"] == f"tool{call_journal.KEEP + 4}"  # newest first
    assert "arguments" not in calls[0] and "result" not in calls[0]
    assert not old.exists()


def test_the_journals_of_ended_processes_fold_into_one_archive_of_the_newest_calls(tmp_path: Path) -> None:
    """serve retires a job process's journal when the process ends: the folder keeps
    one archive of the newest KEEP calls, not a file per call ever served."""
    import json

    total = call_journal.KEEP * 3
    for pid in range(1000, 1000 + total):  # one job process per call, each ended in turn
        (tmp_path / f"{pid}.jsonl").write_text(json.dumps({"started_at": pid, "agent": "desk", "tool": f"t{pid}"})
                                               + "\n")
        call_journal.retire(tmp_path, pid)
    (tmp_path / "7.jsonl").write_text('{"started_at": 5000, "agent": "desk", "tool": "live"}\n')  # a live process
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7.jsonl", call_journal.ARCHIVE]
    calls = call_journal.recent(tmp_path)
    newest_ended = range(999 + total, 999 + total - (call_journal.KEEP - 1), -1)
    assert [c["tool"] for c in calls] == ["live"] + [f"t{pid}" for pid in newest_ended]
    call_journal.retire(tmp_path, 4242)  # a process that made no tool call
    assert len((tmp_path / call_journal.ARCHIVE).read_text().splitlines()) == call_journal.KEEP


def test_the_call_report_backlog_shows_pending_dead_letters_and_the_spool_escaped() -> None:
    backlog = {"pending": 3, "dead": 1, "calls_running": 2, "oldest_pending_at": 0.0, "spool": "/var/<x>"}
    page = render(_status() | {"reports": backlog})
    assert '<span class="bad">3 pending</span>' in page and '<span class="bad">1 dead-lettered</span>' in page
    assert "2 call(s) running" in page and "/var/&lt;x&gt;" in page
    assert "no report spool" in render(_status())
