"""A real MCP server (tests/mcp_servers/asks.py) makes requests of us during a tool call.

Elicitation: what reaches it when the block allows it (the default) and whoever holds the
connection answers, declines, is too slow or answers outside the form; what it sees when
the block denies it; a form or a URL the MCP spec or a phone caller cannot serve; two
calls sharing one connection each answering only the question of their own tool call,
and a question no single call in flight can have asked cancelled; and in a call, the
question given to the agent and the caller's answers reaching the server.
Sampling: refused by default, answered by the call's model within max_tokens and
max_requests when allowed. Roots: announced and listed only as the spec declares."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_chat import FakeOpenAI, Reply, text, tool_call
from mcp_servers.harness import read_answers as answers
from mcp_servers.harness import read_events

from voice_runtime.mcp.connection import McpConnection
from voice_runtime.mcp.elicitation import Answer, Question, accept_defaults, asking, decline
from voice_runtime.observe.metrics import SERVER_REQUESTS
from voice_runtime.plugins.manager import make_plugin_manager
from voice_runtime.session.runner import SessionRunner
from voice_runtime.spec.loader import load_folder
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


async def test_elicitation_is_announced_by_default_and_not_by_a_block_that_denies_it(opened, tmp_path: Path) -> None:
    default = await opened(tmp_path / "default.jsonl")
    assert "form" in json.loads(text_of(await default.call("capabilities", {})))["elicitation"]
    conn = await opened(tmp_path / "rec.jsonl", elicitation="deny")
    caps = json.loads(text_of(await conn.call("capabilities", {})))
    assert "elicitation" not in caps
    # and the server's question is refused without anyone being asked
    conn.elicitor = accept_defaults
    assert text_of(await conn.call("book", {"city": "Oslo"})).startswith("error:")


def caller_of(city: str, asked: list[tuple[str, str]], answered: asyncio.Event | None = None) -> Any:
    """A call's elicitor: notes which call was asked what, answers once ``answered`` is set."""

    async def answer(question: Question) -> Answer:
        asked.append((city, question.message))
        if answered is not None:
            await answered.wait()
        return Answer("accept", {"date": f"date for {city}", "confirm": True})

    return answer


async def test_a_caller_alone_on_a_shared_connection_is_asked_and_a_question_while_another_callers_call_runs_is_cancelled(
    opened, tmp_path: Path
) -> None:
    """Nothing on the wire says which tool call asked: with Oslo's question still open, the
    question that follows could be Rome's or a second one of Oslo's handler (a hostile pass
    had it put to the wrong caller), so it is put to neither."""
    record = tmp_path / "rec.jsonl"
    conn = await opened(record)
    asked: list[tuple[str, str]] = []
    oslo_answers = asyncio.Event()
    with asking(caller_of("Oslo", asked, oslo_answers)):
        oslo = asyncio.ensure_future(conn.call("book", {"city": "Oslo"}))
    while not asked:  # Oslo's question is with Oslo's caller, who has not answered yet
        await asyncio.sleep(0.01)
    with asking(caller_of("Rome", asked)):
        rome = text_of(await conn.call("book", {"city": "Rome"}))
    oslo_answers.set()
    assert asked == [("Oslo", "Booking a trip to Oslo. Which date, and shall I book it?")]
    assert rome == "cancel: null"
    assert text_of(await oslo) == 'accept: {"confirm": true, "date": "date for Oslo", "seats": 2}'


async def test_a_question_two_calls_in_flight_could_have_asked_is_cancelled_not_put_to_either(
    opened, tmp_path: Path
) -> None:
    record = tmp_path / "rec.jsonl"
    conn = await opened(record)
    asked: list[tuple[str, str]] = []
    ask_now, release = tmp_path / "ask-now", tmp_path / "release"
    with asking(caller_of("Bergen", asked)):
        booked = asyncio.ensure_future(conn.call("book_when", {"city": "Bergen", "gate": str(ask_now)}))
    with asking(caller_of("other", asked)):
        held = asyncio.ensure_future(conn.call("hold", {"gate": str(release)}))
    while len([e for e in read_events(record) if e["event"] == "waiting"]) < 2:
        await asyncio.sleep(0.01)
    ask_now.touch()
    assert text_of(await booked) == "cancel: null"
    release.touch()
    assert text_of(await held) == "released"
    assert asked == []


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


# -- in a call: the agent asks the caller ------------------------------------------------


def directed(request: dict[str, Any]) -> Reply:
    """The caller says ``call <tool> <json>``: that tool call; a tool result: ``Result: <output>``."""
    last = (request.get("messages") or [{}])[-1]
    if last.get("role") == "tool":
        return text(f"Result: {last.get('content')}")
    said = str(last.get("content"))
    if not said.startswith("call "):  # a server's sampling request
        return text(f"In short: {said}")
    _, name, args = said.split(" ", 2)
    return tool_call(name, json.loads(args))


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(directed) as fake:
        yield fake


@pytest.fixture
async def call_with_asks(tmp_path: Path, llm: FakeOpenAI) -> AsyncIterator[Any]:
    runners: list[SessionRunner] = []

    async def start(record: Path, **keys: Any) -> SessionRunner:
        folder = tmp_path / "agents.d"
        folder.mkdir(exist_ok=True)
        (folder / "desk.yaml").write_text(json.dumps({
            "apiVersion": "voice-runtime/v1", "name": "desk", "instructions": "You book trips.",
            "pipeline": {"llm": {"provider": "openai", "base_url": llm.base_url, "api_key": "x"}, "text_only": True},
            "mcp_servers": {"asks": {"command": sys.executable, "args": [str(ASKS), "--record", str(record)],
                                     "elicitation": "allow", **keys}}}))
        plugins = make_plugin_manager(None, entry_points=False)
        loaded = load_folder(folder, plugins)
        assert loaded.errors == [], [str(e) for e in loaded.errors]
        runner = SessionRunner(loaded.specs[0], plugins, text_only=True)
        runners.append(runner)
        await runner.start()
        return runner

    yield start
    for runner in runners:
        await runner.aclose()


async def outputs(runner: SessionRunner, words: str) -> list[tuple[str, str, bool]]:
    result = await runner.run_turn(words)
    return [(e.item.name, e.item.output, e.item.is_error) for e in result.events
            if type(e).__name__ == "FunctionCallOutputEvent"]


async def test_in_a_call_the_agent_is_given_the_question_and_the_callers_answers_reach_the_server(
    call_with_asks: Any, tmp_path: Path
) -> None:
    record = tmp_path / "rec.jsonl"
    runner = await call_with_asks(record)
    [(tool, question, failed)] = await outputs(runner, 'call book {"city": "Oslo"}')
    assert tool == "book" and not failed
    assert question.startswith('Before it can finish, the asks service asks the caller: "Booking a trip to Oslo. '
                               'Which date, and shall I book it?"')
    assert ("date (Date of the trip): text, required; confirm (Shall I book it?): yes or no, required; "
            "seats (Seats): a whole number, optional, default 2") in question
    # the caller's answer does not fit the form: the model is told, the server still waits
    [(_, why, failed)] = await outputs(
        runner, 'call answer_server_question {"answers": {"date": "2026-12-24", "confirm": "maybe"}}')
    assert failed and "field confirm: 'maybe' is not a boolean; ask the caller again" in why
    assert answers(record) == []
    # checked answers are read back by the runtime first; only the caller's yes sends them
    [(_, read, failed)] = await outputs(
        runner, 'call answer_server_question {"answers": {"date": "2026-12-24", "confirm": true}}')
    assert not failed and read.startswith('The caller was read back their answers: "So that is: Date of the trip '
                                          '2026-12-24; Shall I book it? yes; Seats 2. Is that right?"')
    assert answers(record) == []
    [(_, result, failed)] = await outputs(runner, 'call answer_server_question {"answers": {}, "confirmed": true}')
    assert not failed and result == 'accept: {"confirm": true, "date": "2026-12-24", "seats": 2}'
    assert answers(record) == [{"asked": "book", "action": "accept",
                                "content": {"date": "2026-12-24", "confirm": True, "seats": 2}}]


async def test_the_caller_refusing_reaches_the_server_as_decline_and_a_hang_up_as_cancel(
    call_with_asks: Any, tmp_path: Path
) -> None:
    record = tmp_path / "rec.jsonl"
    runner = await call_with_asks(record)
    await outputs(runner, 'call book {"city": "Oslo"}')
    [(_, result, _)] = await outputs(runner, "call decline_server_question {}")
    assert result == "decline: null"
    await outputs(runner, 'call book {"city": "Rome"}')
    await runner.aclose()  # the caller hangs up while the question waits
    for _ in range(100):  # the server writes its record as the answer arrives
        if len(answers(record)) == 2:
            break
        await asyncio.sleep(0.05)
    assert [a["action"] for a in answers(record)] == ["decline", "cancel"]


# -- sampling and roots ---------------------------------------------------------------------


async def test_sampling_is_refused_by_default_and_roots_are_not_announced(opened, tmp_path: Path) -> None:
    record = tmp_path / "rec.jsonl"
    conn = await opened(record)
    caps = json.loads(text_of(await conn.call("capabilities", {})))
    assert "sampling" not in caps and "roots" not in caps
    assert text_of(await conn.call("summarize", {"text": "a long story", "max_tokens": 50})).startswith("error:")
    assert text_of(await conn.call("roots", {})).startswith("error:")


async def test_roots_are_announced_and_listed_as_the_spec_declares(opened, tmp_path: Path) -> None:
    conn = await opened(tmp_path / "rec.jsonl", roots=["file:///srv/data", "file:///tmp/x"])
    assert "roots" in json.loads(text_of(await conn.call("capabilities", {})))
    assert json.loads(text_of(await conn.call("roots", {}))) == ["file:///srv/data", "file:///tmp/x"]


async def test_an_allowed_server_samples_the_calls_model_within_its_limits_and_the_call_goes_on(
    call_with_asks: Any, llm: FakeOpenAI, tmp_path: Path
) -> None:
    record = tmp_path / "rec.jsonl"
    denied = SERVER_REQUESTS.labels("asks", "sampling", "denied")._value.get()
    runner = await call_with_asks(record, sampling={"allow": True, "max_requests": 1, "max_tokens": 20})
    [(_, first, failed)] = await outputs(runner, 'call summarize {"text": "the trip is on the 24th", "max_tokens": 400}')
    assert not failed and first == "summary: In short: the trip is on the 24th"
    sampled = [r for r in llm.chat_requests if r["messages"][0]["content"] == "Summarize in one line."]
    assert sampled and sampled[0]["max_completion_tokens"] == 20  # the server asked 400
    [(_, second, failed)] = await outputs(runner, 'call summarize {"text": "again", "max_tokens": 10}')
    assert not failed and "this call allows 1 sampling request(s) (max_requests)" in second
    [(_, booked, _)] = await outputs(runner, 'call book {"city": "Oslo"}')  # the call goes on
    assert booked.startswith("Before it can finish, the asks service asks the caller")
    got = answers(record)
    assert got[0]["text"] == "In short: the trip is on the 24th" and got[0]["model"]
    assert "max_requests" in got[1]["error"]
    assert SERVER_REQUESTS.labels("asks", "sampling", "denied")._value.get() == denied + 1
