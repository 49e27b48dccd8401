"""Questions on a shared connection (issue 25): a real `serve` (process executor) keeps
one warm connection to tests/mcp_servers/asks.py (a stdio server that elicits during a
tool call; `elicitation` is allowed by default and the block stays pooled), and lends it
through its gateway to the job processes of two browser text calls at once. A caller
is put the question of their own call and their answer reaches it; a question that
more than one caller's call in flight can have caused is cancelled, never put to a
guessed caller. The fake OpenAI is the only fake."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakes.openai_chat import FakeOpenAI, Reply, text, tool_call
from helpers import write
from mcp_servers.harness import read_answers, read_events
from serve_harness import Serve, spec

pytestmark = pytest.mark.timeout(240)

ASKS = Path(__file__).resolve().parents[1] / "mcp_servers" / "asks.py"
NO_LIVEKIT = {"LIVEKIT_URL": None, "LIVEKIT_API_KEY": None, "LIVEKIT_API_SECRET": None}


def directed(request: dict[str, Any]) -> Reply:
    """The caller types ``call <tool> <json>``: that tool call; a tool result is said as ``Result: <output>``."""
    last = request["messages"][-1]
    if last["role"] == "tool":
        return text(f"Result: {last['content']}")
    _, name, args = str(last["content"]).split(" ", 2)
    return tool_call(name, json.loads(args))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, module_fake_openai: FakeOpenAI) -> Iterator[tuple[Serve, Path]]:
    tmp = tmp_path_factory.mktemp("shared-asks")
    record = tmp / "asks.jsonl"
    module_fake_openai.script = directed
    agents = tmp / "agents.d"
    # no `elicitation:` and no `shared:`: the defaults (allow, shared) are what is tested
    block = {"command": sys.executable, "args": [str(ASKS), "--record", str(record)], "elicitation_confirm": False}
    write(agents / "desk.yaml", spec("You book trips.", module_fake_openai.base_url)
          + f"mcp_servers:\n  asks: {json.dumps(block)}\n")
    with Serve(agents, "--idle-processes", "2", env=NO_LIVEKIT, unregistered=False) as serve:
        serve.wait_ready()
        yield serve, record


class TypedCall:
    """A browser call driven as the page's text box drives it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def say(self, words: str) -> str:
        """Type ``words``; the agent's next turn."""
        await self.ws.send_str(json.dumps({"type": "text", "text": words}))
        async with asyncio.timeout(90):
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                if event.get("type") == "turn" and event.get("speaker") == "agent":
                    return str(event["text"])
        raise AssertionError(f"the call ended before the agent answered {words!r}")


@asynccontextmanager
async def typed_call(serve: Serve) -> AsyncIterator[TypedCall]:
    async with aiohttp.ClientSession() as http:
        async with http.post(serve.url("/talk/desk/calls")) as reply:
            assert reply.status == 201, await reply.text()
            body = await reply.json()
        async with http.ws_connect(serve.url(body["socket"])) as ws:
            yield TypedCall(ws)
            if not ws.closed:
                await ws.send_str(json.dumps({"type": "hangup"}))


def call(tool: str, **arguments: Any) -> str:
    return f"call {tool} {json.dumps(arguments)}"


def question(city: str) -> str:
    return (f'Result: Before it can finish, the asks service asks the caller: "Booking a trip to {city}. '
            'Which date, and shall I book it?"')


def test_a_caller_on_a_shared_connection_answers_their_question_and_a_second_callers_question_meanwhile_is_cancelled(
    served: tuple[Serve, Path]
) -> None:
    serve, record = served

    async def two_calls() -> tuple[str, str]:
        async with typed_call(serve) as oslo, typed_call(serve) as rome:
            assert (await oslo.say(call("book", city="Oslo"))).startswith(question("Oslo"))
            # Oslo's question still waits for its caller when Rome's server-side call asks: that
            # question could be Rome's or a second one of Oslo's handler, so it is put to no one
            rome_done = await rome.say(call("book", city="Rome"))
            oslo_done = await oslo.say(call("answer_server_question", answers={"date": "2026-12-24", "confirm": True}))
            return oslo_done, rome_done

    oslo_done, rome_done = asyncio.run(two_calls())
    # a tool call's result is what the server's handler of that call got back
    assert oslo_done == 'Result: accept: {"confirm": true, "date": "2026-12-24", "seats": 2}'
    assert rome_done == "Result: cancel: null"
    # one server process, started by serve and shared by both calls' job processes
    spawns = [e for e in read_events(record) if e["event"] == "spawn"]
    assert [e["ppid"] for e in spawns] == [serve.proc.pid]


def test_a_question_no_single_call_in_flight_can_have_asked_is_cancelled_and_logged(
    served: tuple[Serve, Path], tmp_path: Path
) -> None:
    serve, record = served
    asks_gate, hold_gate = tmp_path / "ask-now", tmp_path / "release"
    before = len(read_answers(record))

    async def two_calls() -> tuple[str, str]:
        async with typed_call(serve) as asking, typed_call(serve) as holding:
            booked = asyncio.ensure_future(asking.say(call("book_when", city="Bergen", gate=str(asks_gate))))
            held = asyncio.ensure_future(holding.say(call("hold", gate=str(hold_gate))))
            # both server-side calls are in flight before the server asks
            await asyncio.to_thread(serve.wait_for, lambda: len([
                e for e in read_events(record) if e["event"] == "waiting"]) >= 2, 60, "both tool calls in flight")
            asks_gate.touch()
            booked_said = await booked
            hold_gate.touch()
            return booked_said, await held

    booked_said, held_said = asyncio.run(two_calls())
    assert booked_said == "Result: cancel: null"
    assert held_said == "Result: released"
    assert read_answers(record)[before:] == [{"asked": "book", "action": "cancel", "content": None}]
    serve.wait_for(lambda: "MCP server asks asked 3 field(s): cancel (tool calls of 2 callers are in flight on this "
                           "shared connection; the question could be theirs and is put to no caller)"
                   in serve.output(), message="the cancelled question in serve's log")
