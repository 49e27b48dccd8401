"""A real MCP server asks a question during a tool call (elicitation/create): what
reaches it when the block allows elicitation and whoever holds the connection answers,
declines, is too slow or answers outside the form; what it sees when the block denies
it (the default); and a form or a URL the MCP spec or a phone caller cannot serve."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp_servers.harness import read_answers as answers

from voice_runtime.mcp.connection import McpConnection
from voice_runtime.mcp.elicitation import Answer, Question, accept_defaults, decline
from voice_runtime.spec.models import StdioServer

ASKS = Path(__file__).resolve().parents[1] / "mcp_servers" / "asks.py"


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Any]:
    conns: list[McpConnection] = []

    async def open_(record: Path, **keys: Any) -> McpConnection:
        server = StdioServer(command=sys.executable, args=[str(ASKS), "--record", str(record)], **keys)
        conn = McpConnection("asks", server)
        conns.append(conn)
        await conn.connect()
        return conn

    yield open_
    for conn in conns:
        await conn.aclose()


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def test_a_block_that_does_not_allow_elicitation_announces_no_such_capability(opened, tmp_path: Path) -> None:
    conn = await opened(tmp_path / "rec.jsonl")
    caps = json.loads(text_of(await conn.call("capabilities", {})))
    assert "elicitation" not in caps
    # and the server's question is refused without anyone being asked
    conn.elicitor = accept_defaults
    assert text_of(await conn.call("book", {"city": "Oslo"})).startswith("error:")


async def test_the_answer_of_whoever_holds_the_call_reaches_the_server_typed(opened, tmp_path: Path) -> None:
    record = tmp_path / "rec.jsonl"
    conn = await opened(record, elicitation="allow")
    assert "form" in json.loads(text_of(await conn.call("capabilities", {})))["elicitation"]
    asked: list[Question] = []

    async def caller(question: Question) -> Answer:
        asked.append(question)
        return Answer("accept", {"date": "2026-12-24", "confirm": True, "seats": 3.0})

    conn.elicitor = caller
    assert text_of(await conn.call("book", {"city": "Oslo"})) == 'accept: {"confirm": true, "date": "2026-12-24", "seats": 3}'
    assert asked[0].message == "Booking a trip to Oslo. Which date, and shall I book it?"
    assert [(f.name, f.type, f.required, f.label) for f in asked[0].fields] == [
        ("date", "string", True, "Date of the trip"), ("confirm", "boolean", True, "Shall I book it?"),
        ("seats", "integer", False, "Seats")]
    assert answers(record) == [{"asked": "book", "action": "accept",
                                "content": {"date": "2026-12-24", "confirm": True, "seats": 3}}]


async def test_defaults_cannot_answer_a_required_field_so_the_question_is_declined(opened, tmp_path: Path) -> None:
    record = tmp_path / "rec.jsonl"
    conn = await opened(record, elicitation="allow")
    conn.elicitor = accept_defaults
    assert text_of(await conn.call("book", {"city": "Oslo"})) == "decline: null"
    conn.elicitor = decline
    await conn.call("book", {"city": "Oslo"})
    conn.elicitor = None  # nobody holds the call: declined too
    await conn.call("book", {"city": "Oslo"})
    assert [a["action"] for a in answers(record)] == ["decline", "decline", "decline"]


async def test_an_answer_that_does_not_fit_the_form_or_comes_too_late_is_cancelled(opened, tmp_path: Path) -> None:
    record = tmp_path / "rec.jsonl"
    conn = await opened(record, elicitation="allow", elicitation_timeout=0.5)

    async def wrong(question: Question) -> Answer:
        return Answer("accept", {"date": "2026-12-24", "confirm": "yes please"})

    async def silent(question: Question) -> Answer:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    conn.elicitor = wrong
    await conn.call("book", {"city": "Oslo"})
    conn.elicitor = silent
    await conn.call("book", {"city": "Oslo"})
    assert [(a["action"], a["content"]) for a in answers(record)] == [("cancel", None), ("cancel", None)]


async def test_a_nested_form_is_refused_and_a_url_is_declined(opened, tmp_path: Path) -> None:
    record = tmp_path / "rec.jsonl"
    conn = await opened(record, elicitation="allow")
    asked: list[Question] = []

    async def caller(question: Question) -> Answer:
        asked.append(question)
        return Answer("accept", {})

    conn.elicitor = caller
    await conn.call("nested", {})
    await conn.call("link", {})
    got = answers(record)
    assert "field 'address' has type 'object'" in got[0]["error"]
    assert got[1] == {"asked": "link", "action": "decline", "content": None}
    assert asked == []  # neither reached the caller
