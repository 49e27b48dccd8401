"""A real server's ``notifications/message`` (tests/mcp_servers/tasks.py, tool
``chatty``) reach our log at the level the server gave, with the block's secrets
masked, and at most 20 a second per server: the rest become one "dropped" line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from voice_runtime.mcp.connection import McpConnection
from voice_runtime.spec.models import StdioServer

SERVER = Path(__file__).resolve().parents[1] / "mcp_servers" / "tasks.py"
SECRET = "hunter2-very-secret"


async def test_a_servers_log_messages_reach_our_log_at_their_level_redacted_and_rate_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = StdioServer(command=sys.executable, args=[str(SERVER), "--record", str(tmp_path / "rec.jsonl")])
    conn = McpConnection("chatty_server", server, redact=lambda text: text.replace(SECRET, "${TOKEN}"))
    caplog.set_level(logging.DEBUG, logger="voice_runtime.mcp.server_log")
    await conn.connect()
    try:
        result = await conn.call("chatty", {"count": 100, "secret": SECRET})
        assert result.content[0].text == "said 100"
        # the burst's last 80 are reported once the second is over
        for _ in range(40):
            if any("dropped" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.aclose()

    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "voice_runtime.mcp.server_log"]
    said = [line for line in lines if "dropped" not in line[1]]
    assert len(said) == 20
    assert said[:4] == [
        ("DEBUG", "MCP server chatty_server (chatty): message 0 about ${TOKEN}"),
        ("INFO", "MCP server chatty_server (chatty): message 1 about ${TOKEN}"),
        ("WARNING", "MCP server chatty_server (chatty): message 2 about ${TOKEN}"),
        ("ERROR", "MCP server chatty_server (chatty): message 3 about ${TOKEN}"),
    ]
    assert lines[-1] == ("WARNING", "MCP server chatty_server: 80 log messages dropped (more than 20 a second)")
    assert not any(SECRET in text for _, text in lines)
