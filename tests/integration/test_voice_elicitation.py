"""A server's question by voice: espeak-ng caller audio into the real SessionRunner
(silero VAD, the deepgram/openai/cartesia plugins against the fakes), a real server
(tests/mcp_servers/asks.py) eliciting a date and a yes/no while its ``book`` tool
runs. The runtime reads the answers back and the caller's yes sends them (a no and a
corrected value sends the corrected one; a block with ``elicitation_confirm: false``
sends them at once); a caller who refuses reaches the server as ``decline``; the caller speaking over the agent's question
abandons it and the server gets ``cancel``."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes.openai_chat import text, tool_call
from mcp_servers.harness import read_answers
from voice_harness import Fakes, VoiceCall, pipeline_spec

pytestmark = [
    pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng"),
    pytest.mark.timeout(90),
]

ASKS = Path(__file__).resolve().parents[1] / "mcp_servers" / "asks.py"
QUESTION = "The booking service needs the date and whether to book it. What date, and shall I book?"


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    started = await Fakes().start()
    yield started
    await started.stop()


def booking_spec(fakes: Fakes, record: Path, **keys: object) -> str:
    block = {"command": sys.executable, "args": [str(ASKS), "--record", str(record)], "elicitation": "allow", **keys}
    return pipeline_spec(fakes, extra=f"mcp_servers:\n  asks: {json.dumps(block)}\n")


def answer(date: str = "2026-12-24", **more: object) -> object:
    return tool_call("answer_server_question", {"answers": {"date": date, "confirm": True}, **more})


def spoken(fakes: Fakes) -> str:
    """All the agent said (the TTS is sent a sentence at a time)."""
    return " ".join(fakes.cartesia.spoken)


READ_BACK = "So that is: Date of the trip {}; Shall I book it? yes; Seats 2. Is that right?"


async def ask_then(tmp_path: Path, fakes: Fakes, said: list[str], model: list[object], **keys: object) -> list[dict]:
    """The caller asks for a booking, then says each of ``said`` after the agent's
    next utterance (the question, then each read-back); the model answers with ``model``."""
    record = tmp_path / "asks.jsonl"
    fakes.deepgram.say("Book a trip to Oslo.", *said)
    fakes.chat.enqueue(tool_call("book", {"city": "Oslo"}), text(QUESTION), *model, text("All done."))
    call = await VoiceCall.start(tmp_path / "agents", booking_spec(fakes, record, **keys))
    try:
        await call.say("Book a trip to Oslo.")
        for heard, line in enumerate(said, start=1):
            await call.wait_heard(heard)  # the question, then each read-back
            await call.say(line)
        await call.wait_for(lambda: read_answers(record), what="the server to get its answer")
        return read_answers(record)
    finally:
        await call.aclose()


async def test_the_runtime_reads_the_answers_back_and_the_callers_yes_sends_them_typed(
    tmp_path: Path, fakes: Fakes
) -> None:
    answers = await ask_then(tmp_path, fakes, ["The twenty fourth of December. Yes please.", "Yes."],
                             [answer(), answer(confirmed=True)])
    assert READ_BACK.format("2026-12-24") in spoken(fakes)
    assert answers == [{"asked": "book", "action": "accept",
                        "content": {"date": "2026-12-24", "confirm": True, "seats": 2}}]


async def test_a_no_to_the_read_back_and_a_corrected_date_sends_the_corrected_date(
    tmp_path: Path, fakes: Fakes
) -> None:
    # the model claiming a yes for answers never read back is not trusted: they are read back first
    answers = await ask_then(tmp_path, fakes, ["The twenty fourth of December. Yes please.",
                                               "No, the twenty fifth.", "Yes."],
                             [answer(), answer("2026-12-25", confirmed=True), answer("2026-12-25", confirmed=True)])
    assert READ_BACK.format("2026-12-24") in spoken(fakes) and READ_BACK.format("2026-12-25") in spoken(fakes)
    assert answers == [{"asked": "book", "action": "accept",
                        "content": {"date": "2026-12-25", "confirm": True, "seats": 2}}]


async def test_a_block_with_elicitation_confirm_false_sends_the_answers_without_a_read_back(
    tmp_path: Path, fakes: Fakes
) -> None:
    answers = await ask_then(tmp_path, fakes, ["The twenty fourth of December. Yes please."], [answer()],
                             elicitation_confirm=False)
    assert "So that is" not in spoken(fakes)
    assert answers == [{"asked": "book", "action": "accept",
                        "content": {"date": "2026-12-24", "confirm": True, "seats": 2}}]


async def test_a_caller_who_refuses_reaches_the_server_as_decline(tmp_path: Path, fakes: Fakes) -> None:
    answers = await ask_then(tmp_path, fakes, ["No, I would rather not say."],
                             [tool_call("decline_server_question", {})])
    assert answers == [{"asked": "book", "action": "decline", "content": None}]


async def test_the_caller_speaking_over_the_question_cancels_it_on_the_server(tmp_path: Path, fakes: Fakes) -> None:
    record = tmp_path / "asks.jsonl"
    long_question = QUESTION + " I can also tell you about seats, prices and every train that goes there today."
    fakes.deepgram.say("Book a trip to Oslo.", "Forget it.")
    fakes.chat.enqueue(tool_call("book", {"city": "Oslo"}), text(long_question), text("Okay."))
    spec = booking_spec(fakes, record).replace("  turn_detection: vad\n",
                                               "  turn_detection: vad\n  interrupt_after_ms: 250\n")
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        await call.say("Book a trip to Oslo.")
        await call.wait_for(lambda: call.speaker.playing, what="the agent asking the question")
        await call.say("Forget it.")
        await call.wait_for(lambda: read_answers(record), what="the server to hear of it")
        assert read_answers(record) == [{"asked": "book", "action": "cancel", "content": None}]
        [cut, *_] = call.speaker.played
        assert cut.interrupted
    finally:
        await call.aclose()
