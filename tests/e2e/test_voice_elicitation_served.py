"""A server's question in a served voice call: a real `serve` (process executor, no
LiveKit) and its /talk WebSocket driven by a caller that streams espeak-ng speech as
16 kHz PCM in real time, as the page's microphone does; the speech fakes at the
network boundary; tests/mcp_servers/asks.py elicits a date and a yes/no while its
``book`` tool runs (``elicitation: allow``: serve's pooled connection, lent to the job
through the gateway, puts the question to the job's call). The caller's
spoken answers reach the server as typed values; speaking over the question
cancels it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakes import espeak
from fakes.cartesia import FakeCartesia
from fakes.deepgram import FakeDeepgram
from fakes.openai_chat import FakeOpenAI, text, tool_call
from helpers import write
from mcp_servers.harness import read_answers
from serve_harness import Serve

pytestmark = [pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng"), pytest.mark.timeout(180)]

NO_LIVEKIT = {"LIVEKIT_URL": None, "LIVEKIT_API_KEY": None, "LIVEKIT_API_SECRET": None}
ASKS = Path(__file__).resolve().parents[1] / "mcp_servers" / "asks.py"
RATE, FRAME = 16000, 320  # 10 ms of 16-bit mono at 16 kHz
QUESTION = ("The booking service needs the date of the trip and whether to book it. "
            "What date would you like, and shall I book it for you?")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, dict[str, Any], Path]]:
    """One serve and one set of speech fakes for the module's calls."""
    tmp = tmp_path_factory.mktemp("served")
    fakes = {"chat": FakeOpenAI(), "deepgram": FakeDeepgram(), "cartesia": FakeCartesia()}
    for fake in fakes.values():
        fake.start_in_thread()
    record = tmp / "asks.jsonl"
    block = {"command": sys.executable, "args": [str(ASKS), "--record", str(record)], "elicitation": "allow"}
    agents = tmp / "agents.d"
    write(agents / "desk.yaml", (
        "apiVersion: voice-runtime/v1\ninstructions: You book trips.\npipeline:\n"
        f"  stt: {{provider: deepgram, base_url: '{fakes['deepgram'].listen_url}', api_key: k}}\n"
        f"  llm: {{provider: openai, base_url: '{fakes['chat'].base_url}', api_key: k}}\n"
        f"  tts: {{provider: cartesia, base_url: '{fakes['cartesia'].root_url}', api_key: k, voice: v}}\n"
        "  vad: {provider: silero}\n  turn_detection: vad\n  interrupt_after_ms: 250\n"
        f"mcp_servers:\n  asks: {json.dumps(block)}\n"))
    with Serve(agents, "--idle-processes", "1", env=NO_LIVEKIT, unregistered=False) as serve:
        serve.wait_ready()
        yield serve, fakes, record
    for fake in fakes.values():
        fake.stop_thread()


class Caller:
    """The page's side of a call: a microphone streaming 10 ms frames in real time
    (silence between what it says) and the agent's audio counted as it arrives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.queued = bytearray()
        self.heard_at: list[float] = []  # arrival time of each audio frame from the agent
        self.events: list[dict[str, Any]] = []  # the job's JSON events (ready, turn, state, tool_call...)

    async def microphone(self) -> None:
        start = time.monotonic()
        sent = 0
        while not self.ws.closed:
            chunk = bytes(self.queued[:FRAME]).ljust(FRAME, b"\0")
            del self.queued[:FRAME]
            await self.ws.send_bytes(chunk)
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * 0.01 - time.monotonic()))

    async def listen(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.heard_at.append(time.monotonic())
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(msg.data))

    async def ready(self, timeout: float = 90.0) -> None:
        """Until the job says the call is up (audio sent before is not heard)."""
        deadline = time.monotonic() + timeout
        while not any(e.get("type") == "ready" for e in self.events):
            assert time.monotonic() < deadline, self.events
            await asyncio.sleep(0.05)

    def say(self, words: str) -> None:
        self.queued += espeak.speak(words, RATE) + espeak.silence(0.3, RATE)

    async def agent_spoke(self, times: int = 1, timeout: float = 60.0) -> None:
        """Until the agent has said something and stopped ``times`` times (its state, as the page shows it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [e["agent"] for e in self.events if e.get("type") == "state"]
            ended = sum(1 for a, b in zip(states, states[1:]) if a == "speaking" and b != "speaking")
            if ended >= times:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the agent said nothing: {self.events}")

    async def agent_speaking(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.heard_at and time.monotonic() - self.heard_at[-1] < 0.2:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the agent never spoke")


async def call(serve: Serve, fakes: dict[str, Any], talk: Any) -> None:
    """One call; it hangs up once the model's scripted replies are all used (the module's
    next call must not get this one's leftovers)."""
    code, ticket = serve.post("/talk/desk/calls", b"{}")
    assert code == 201, ticket
    async with aiohttp.ClientSession() as http, http.ws_connect(serve.url(ticket["socket"])) as ws:
        caller = Caller(ws)
        tasks = [asyncio.ensure_future(caller.microphone()), asyncio.ensure_future(caller.listen())]
        try:
            await caller.ready()
            await talk(caller)
            deadline = time.monotonic() + 30
            while fakes["chat"].pending_replies and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            await ws.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def answers_since(record: Path, count: int) -> list[dict[str, Any]]:
    return read_answers(record)[count:] if record.exists() else []


async def wait_answer(record: Path, before: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := answers_since(record, before):
            return got
        await asyncio.sleep(0.1)
    raise AssertionError("no answer reached the server")


ANSWER = tool_call("answer_server_question", {"answers": {"date": "2026-12-24", "confirm": True}})
YES = tool_call("answer_server_question", {"answers": {}, "confirmed": True})  # "yes" to what was read back


@pytest.mark.parametrize("said, model, reached", [
    (["The twenty fourth of December. Yes please.", "Yes."], [ANSWER, YES],
     {"action": "accept", "content": {"date": "2026-12-24", "confirm": True, "seats": 2}}),
    (["No, I would rather not say."], [tool_call("decline_server_question", {})],
     {"action": "decline", "content": None}),
], ids=["accept", "decline"])
async def test_the_callers_spoken_answer_or_refusal_reaches_the_server_in_a_served_call(
    served, said: list[str], model: list[Any], reached: dict[str, Any]
) -> None:
    serve, fakes, record = served
    before = len(answers_since(record, 0))
    fakes["deepgram"].say("Book a trip to Oslo.", *said)
    fakes["chat"].enqueue(tool_call("book", {"city": "Oslo"}), text(QUESTION), *model, text("Done."))

    async def talk(caller: Caller) -> None:
        caller.say("Book a trip to Oslo.")
        for spoke, line in enumerate(said, start=1):
            await caller.agent_spoke(spoke)  # the server's question in the agent's voice, then the read-back
            caller.say(line)
        assert await wait_answer(record, before) == [{"asked": "book", **reached}]

    await call(serve, fakes, talk)


async def test_speaking_over_the_question_in_a_served_call_cancels_it_on_the_server(served) -> None:
    serve, fakes, record = served
    before = len(answers_since(record, 0))
    fakes["deepgram"].say("Book a trip to Oslo.", "Forget it.")
    fakes["chat"].enqueue(tool_call("book", {"city": "Oslo"}), text(QUESTION + " " + QUESTION), text("Okay."))

    async def talk(caller: Caller) -> None:
        caller.say("Book a trip to Oslo.")
        await caller.agent_speaking()
        await asyncio.sleep(0.5)
        caller.say("Forget it.")
        assert await wait_answer(record, before) == [{"asked": "book", "action": "cancel", "content": None}]

    await call(serve, fakes, talk)
