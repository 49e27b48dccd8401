"""Voice with sound: espeak-ng speech into the real livekit AgentSession through
voice-runtime's SessionRunner, the real silero VAD and the real deepgram, openai and
cartesia plugins (fakes only at the network boundary), the agent's audio captured as
it played and measured.

Timing assertions use the monotonic clock of this process: the caller's microphone,
the captured speaker and the session's tool-call events all run in it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from fakes.cartesia import FakeCartesia
from fakes.deepgram import FakeDeepgram
from fakes.openai_chat import text, tool_call
from mcp_servers.harness import HttpServer, read_cancellations, read_records, start_http_server
from voice_harness import (
    Fakes,
    VoiceCall,
    pipeline_spec,
    realtime_spec,
    recorder_server,
    speech_seconds,
    tts_seconds,
)

pytestmark = [
    pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng"),
    pytest.mark.timeout(90),
]

# the agent's audio is resampled and chunked on its way out: a stretch may differ from
# the TTS fake's audio by a few frames
LENGTH_TOLERANCE = 0.06


class Recorder:
    """The recorder MCP server, shared by the module's tests (one process start, not
    one per test); each test sees the calls made since it began."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.url = server.url
        assert server.record is not None
        self.record = server.record
        self.since = 0
        self.cancelled_since = 0

    def begin(self) -> Recorder:
        self.since = len(read_records(self.record))
        self.cancelled_since = len(read_cancellations(self.record))
        return self

    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r["tool"], r["args"]) for r in read_records(self.record)[self.since:]]

    def cancelled(self) -> list[str]:
        return [r["cancelled"] for r in read_cancellations(self.record)[self.cancelled_since:]]


@pytest.fixture(scope="module")
def shared_recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    server = start_http_server(record=tmp_path_factory.mktemp("mcp") / "calls.jsonl", name="desk")
    yield Recorder(server)
    server.close()


@pytest.fixture
def mcp(shared_recorder: Recorder) -> Recorder:
    return shared_recorder.begin()


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    started = await Fakes().start()
    yield started
    await started.stop()


async def test_a_spoken_question_runs_the_tool_the_model_chose_and_the_reply_is_heard_at_full_length(
    tmp_path: Path, fakes: Fakes, mcp: Recorder
) -> None:
    fakes.deepgram.say("What is the weather in Paris?")
    fakes.chat.use_tool_then_answer("get_weather", {"city": "Paris"})
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, extra=recorder_server(mcp.url)))
    try:
        _, spoke_until = await call.say("What is the weather in Paris?")
        [reply] = await call.wait_heard(1)

        assert mcp.calls() == [("get_weather", {"city": "Paris"})]
        assert fakes.deepgram.heard == ["What is the weather in Paris?"]
        assert fakes.cartesia.spoken == ["Result: sunny in Paris"]
        assert reply.started > spoke_until and not reply.interrupted
        # what played is what the TTS made for the reply, and it is sound
        assert reply.audio_seconds == pytest.approx(tts_seconds("Result: sunny in Paris"), abs=LENGTH_TOLERANCE)
        assert speech_seconds(reply) > 0.6 * tts_seconds("Result: sunny in Paris")
        # the deepgram stream was told the session ended
        await call.aclose()
        assert {"type": "CloseStream"} in fakes.deepgram.messages
    finally:
        await call.aclose()


async def test_the_greeting_is_heard_before_the_caller_says_anything_through_openai_tts(
    tmp_path: Path, fakes: Fakes
) -> None:
    greeting = "Hello, front desk."
    spec = pipeline_spec(fakes, tts=fakes.openai_tts(), greeting=greeting)
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        [heard] = await call.wait_heard(1)
        assert fakes.chat.spoken == [greeting]
        speech = fakes.chat.audio_requests("speech")[0]
        assert speech["response_format"] == "mp3"  # what the plugin asks for: the fake answers in it
        assert heard.audio_seconds == pytest.approx(tts_seconds(greeting), abs=LENGTH_TOLERANCE)
        assert fakes.chat.chat_requests == []  # said as written, not generated
    finally:
        await call.aclose()


async def test_when_the_first_stt_and_tts_providers_fail_the_second_ones_hear_and_speak(
    tmp_path: Path, fakes: Fakes
) -> None:
    dead_stt, dead_tts = FakeDeepgram(), FakeCartesia()
    await dead_stt.start()
    await dead_tts.start()
    dead_stt.refuse_connections = dead_tts.refuse_connections = True
    fakes.deepgram.say("Are you open today?")
    fakes.chat.enqueue(text("Yes, until six."))
    spec = pipeline_spec(
        fakes,
        stt=f"[{fakes.stt(dead_stt)}, {fakes.stt()}]",
        tts=f"[{fakes.cartesia_tts(dead_tts)}, {fakes.openai_tts()}]",
    )
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        await call.say("Are you open today?")
        [reply] = await call.wait_heard(1)
        assert fakes.deepgram.heard == ["Are you open today?"]
        assert fakes.chat.chat_requests[-1]["messages"][-1]["content"] == "Are you open today?"
        assert fakes.chat.spoken == ["Yes, until six."]
        assert reply.audio_seconds == pytest.approx(tts_seconds("Yes, until six."), abs=LENGTH_TOLERANCE)
        # both first choices were really tried
        assert any(r.get("websocket") for r in dead_stt.requests)
        assert any(r.get("websocket") for r in dead_tts.requests)
    finally:
        await call.aclose()
        await dead_stt.stop()
        await dead_tts.stop()


async def test_a_slow_tool_gets_a_filler_line_after_after_ms_and_then_its_result_is_spoken(
    tmp_path: Path, fakes: Fakes, mcp: Recorder
) -> None:
    filler = "One moment please."
    fakes.deepgram.say("Check the booking.")
    fakes.chat.use_tool_then_answer("sleep", {"seconds": 2})
    extra = recorder_server(mcp.url, filler={"after_ms": 500, "say": [filler]})
    labels = {"agent": "desk", "server": "desk", "tool": "sleep"}
    counted = REGISTRY.get_sample_value("voice_runtime_tool_fillers_total", labels) or 0.0
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, extra=extra))
    try:
        await call.say("Check the booking.")
        first, second = await call.wait_heard(2)
        [(called_at, _)] = call.event_times("tool_call")
        [(result_at, _)] = call.event_times("tool_result")

        # after after_ms, while the 2 s tool still runs: how soon after after_ms is a speed,
        # measured by benchmarks/voice_turn.py (filler_start_p50_ms), not bounded here, where
        # a loaded machine made it 0.2-2.6 s late
        assert 0.5 <= first.started - called_at and first.started < result_at, call.heard()
        assert REGISTRY.get_sample_value("voice_runtime_tool_fillers_total", labels) == counted + 1
        assert first.audio_seconds == pytest.approx(tts_seconds(filler), abs=LENGTH_TOLERANCE)
        assert second.started >= max(result_at, first.started + first.seconds(24000))
        assert fakes.cartesia.spoken == [filler, "Result: slept"]
        assert [f["text"] for _, f in call.event_times("filler")] == [filler]
        # the filler is agent speech in the history the model gets next
        messages = [(m["role"], m.get("content")) for m in fakes.chat.chat_requests[-1]["messages"]]
        assert ("assistant", filler) in messages
        assert mcp.calls() == [("sleep", {"seconds": 2.0})]
    finally:
        await call.aclose()


async def test_a_result_arriving_during_a_filler_cuts_it_when_on_result_is_interrupt(
    tmp_path: Path, fakes: Fakes, mcp: Recorder
) -> None:
    filler = "One moment please, I am looking through all of the bookings we have for you today."
    fakes.deepgram.say("Check the booking.")
    fakes.chat.use_tool_then_answer("sleep", {"seconds": 1})
    extra = recorder_server(mcp.url, filler={"after_ms": 200, "say": [filler], "on_result": "interrupt"})
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, extra=extra))
    try:
        await call.say("Check the booking.")
        cut, result = await call.wait_heard(2)
        [(result_at, _)] = call.event_times("tool_result")
        assert cut.interrupted and cut.audio_seconds < tts_seconds(filler) - 1.0
        assert abs(cut.started + cut.seconds(24000) - result_at) < 0.3, call.heard()
        assert result.audio_seconds == pytest.approx(tts_seconds("Result: slept"), abs=LENGTH_TOLERANCE)
    finally:
        await call.aclose()


async def test_a_tool_that_times_out_makes_the_agent_say_timeout_say_instead_of_going_silent(
    tmp_path: Path, fakes: Fakes, mcp: Recorder
) -> None:
    sorry = "That system is not answering."
    fakes.deepgram.say("Check the booking.")
    fakes.chat.enqueue(tool_call("sleep", {"seconds": 5}))
    extra = recorder_server(mcp.url, timeout=1, timeout_say=sorry)
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, extra=extra))
    try:
        await call.say("Check the booking.")
        [heard] = await call.wait_heard(1)
        [(called_at, _)] = call.event_times("tool_call")
        [(_, result)] = call.event_times("tool_result")
        assert result["outcome"] == "timeout"
        # said at the 1 s timeout, not when the server's 5 s sleep ends (1.73 s seen at load 10:
        # the bound is the outcome it must be told from, not a guess at the machine's speed)
        assert 0.6 <= heard.started - called_at < 5.0, call.heard()
        assert heard.audio_seconds == pytest.approx(tts_seconds(sorry), abs=LENGTH_TOLERANCE)
        assert fakes.cartesia.spoken == [sorry]
        # the model was not asked to explain the failure on top (it would say it twice)
        assert len(fakes.chat.chat_requests) == 1
    finally:
        await call.aclose()


async def test_the_caller_speaking_over_the_agent_stops_its_audio_within_500_ms(
    tmp_path: Path, fakes: Fakes
) -> None:
    long_reply = ("Our rooms have a view of the sea, a large bed, a desk by the window, "
                  "and breakfast is served from seven until ten every morning.")
    fakes.deepgram.say("Tell me about the rooms.", "Stop thank you.")
    fakes.chat.enqueue(text(long_reply))
    spec = pipeline_spec(fakes).replace("  turn_detection: vad\n", "  turn_detection: vad\n  interrupt_after_ms: 250\n")
    assert "interrupt_after_ms" in spec
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        await call.say("Tell me about the rooms.")
        await call.wait_for(lambda: call.runner.session.agent_state == "speaking", what="the agent speaking")
        await call.wait_for(lambda: call.speaker._frames and call.speaker._frames[0][0] + 1.0 < _now(),
                            what="a second of the reply played")
        barge_in, _ = await call.say("Stop thank you.")
        [cut] = await call.wait_heard(1)
        assert cut.interrupted
        stopped = cut.started + cut.seconds(24000)
        assert stopped - barge_in < 0.5, call.heard()
        assert cut.audio_seconds < tts_seconds(long_reply) - 1.0
    finally:
        await call.aclose()


async def test_a_noise_over_the_agent_pauses_it_and_it_resumes_where_it_stopped(
    tmp_path: Path, fakes: Fakes
) -> None:
    reply = "Breakfast is served from seven until ten every morning."
    fakes.deepgram.say("Tell me about the rooms.", "")  # the noise: nothing the STT can make words of
    fakes.chat.enqueue(text(reply))
    spec = pipeline_spec(fakes).replace("  turn_detection: vad\n", "  turn_detection: vad\n  interrupt_after_ms: 100\n")
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        await call.say("Tell me about the rooms.")
        await call.wait_for(lambda: call.speaker.playing, what="the reply playing")
        await asyncio.sleep(0.5)
        await call.say("Hm.")
        [heard] = await call.wait_heard(1, timeout=30)
        assert not heard.interrupted
        assert heard.audio_seconds == pytest.approx(tts_seconds(reply), abs=LENGTH_TOLERANCE)  # all of it played
        # with a pause in it: the segment lasted longer than its audio
        assert heard.seconds(24000) > heard.audio_seconds + 0.5, call.heard()
        assert fakes.chat.chat_requests[-1]["messages"][-1]["content"] == "Tell me about the rooms."
    finally:
        await call.aclose()


async def test_the_caller_speaking_over_a_filler_cancels_the_slow_tool_call_on_the_mcp_server(
    tmp_path: Path, fakes: Fakes, mcp: Recorder
) -> None:
    filler = "One moment please, I am looking through the bookings for you."
    fakes.deepgram.say("Check the booking.", "Never mind.")
    fakes.chat.enqueue(tool_call("sleep", {"seconds": 5}), text("Okay."))
    extra = recorder_server(mcp.url, filler={"after_ms": 300, "say": [filler]})
    spec = pipeline_spec(fakes, extra=extra).replace("  turn_detection: vad\n",
                                                     "  turn_detection: vad\n  interrupt_after_ms: 250\n")
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        await call.say("Check the booking.")
        await call.wait_for(lambda: call.event_times("filler") and call.speaker.playing, what="the filler playing")
        barge_in, _ = await call.say("Never mind.")
        await call.wait_for(lambda: call.event_times("tool_result"), what="the tool call to end")
        [(ended_at, result)] = call.event_times("tool_result")
        assert result["outcome"] == "cancelled"
        # livekit pauses the agent at once and decides it was a real interruption when
        # the caller's words are transcribed: the call ends then, long before its 5 s
        assert ended_at - barge_in < 2.5
        await call.wait_for(lambda: mcp.cancelled(), what="the server to see the cancellation")
        assert mcp.cancelled() == ["sleep"]
        [cut, *_] = call.speaker.played
        assert cut.interrupted and cut.started + cut.seconds(24000) - barge_in < 0.5
    finally:
        await call.aclose()


async def test_a_realtime_model_speaks_the_greeting_and_answers_the_callers_audio(
    tmp_path: Path, fakes: Fakes
) -> None:
    greeting = "Hello, front desk."
    fakes.realtime.enqueue(text(greeting))
    fakes.realtime.transcripts.append("Do you have a room?")
    call = await VoiceCall.start(tmp_path / "agents", realtime_spec(fakes, greeting=greeting))
    try:
        [heard] = await call.wait_heard(1)
        assert heard.audio_seconds == pytest.approx(tts_seconds(greeting), abs=LENGTH_TOLERANCE)
        spoke_from, spoke_until = await call.say("Do you have a room?")
        assert heard.started < spoke_from  # greeted before the caller said anything
        _, reply = await call.wait_heard(2)
        assert fakes.realtime.heard == ["Do you have a room?"]
        assert reply.started > spoke_until
        assert reply.audio_seconds == pytest.approx(tts_seconds("echo: Do you have a room?"), abs=LENGTH_TOLERANCE)
        # the caller's audio reached the model as audio
        appended = fakes.realtime.events_of_type("input_audio_buffer.append")
        assert sum(len(e["audio"]) for e in appended) * 3 // 4 >= 24000 * 2 * 1.0
    finally:
        await call.aclose()


async def test_the_caller_speaking_over_a_realtime_model_stops_its_audio_within_500_ms(
    tmp_path: Path, fakes: Fakes
) -> None:
    long_reply = "Breakfast is served from seven until ten every morning in the garden room."
    fakes.realtime.transcripts.extend(["Tell me about breakfast.", "Stop thank you."])
    fakes.realtime.enqueue(text(long_reply))
    call = await VoiceCall.start(tmp_path / "agents", realtime_spec(fakes))
    try:
        await call.say("Tell me about breakfast.")
        await call.wait_for(lambda: call.speaker.playing, what="the reply playing")
        await asyncio.sleep(1.0)
        barge_in, _ = await call.say("Stop thank you.")
        [cut, *_] = await call.wait_heard(1)
        assert cut.interrupted
        assert cut.started + cut.seconds(24000) - barge_in < 0.5, call.heard()
        assert cut.audio_seconds < tts_seconds(long_reply) - 1.0
    finally:
        await call.aclose()


async def test_a_realtime_model_refused_at_start_leaves_the_pipeline_to_greet_and_answer_with_the_history(
    tmp_path: Path, fakes: Fakes
) -> None:
    greeting = "Hello, front desk."
    fakes.realtime.refuse_connections = True
    fakes.deepgram.say("Do you have a room?")
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, greeting=greeting, realtime=True))
    try:
        [greeted] = await call.wait_heard(1, timeout=30)
        assert greeted.audio_seconds == pytest.approx(tts_seconds(greeting), abs=LENGTH_TOLERANCE)
        await call.say("Do you have a room?")
        _, reply = await call.wait_heard(2)
        assert call.runner.mode == "pipeline"
        assert reply.audio_seconds == pytest.approx(tts_seconds("echo: Do you have a room?"), abs=LENGTH_TOLERANCE)
        messages = [(m["role"], m.get("content")) for m in fakes.chat.chat_requests[-1]["messages"]]
        assert messages[-2:] == [("assistant", greeting), ("user", "Do you have a room?")]
        assert fakes.cartesia.spoken == [greeting, "echo: Do you have a room?"]
    finally:
        await call.aclose()


async def test_a_realtime_connection_dropped_mid_call_continues_on_the_pipeline_with_the_history(
    tmp_path: Path, fakes: Fakes
) -> None:
    fakes.realtime.transcripts.append("My name is Ada.")
    fakes.deepgram.say("What is my name?")
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, realtime=True))
    try:
        await call.say("My name is Ada.")
        [first] = await call.wait_heard(1)
        assert call.runner.mode == "realtime" and fakes.chat.chat_requests == []
        assert first.audio_seconds == pytest.approx(tts_seconds("echo: My name is Ada."), abs=LENGTH_TOLERANCE)

        fakes.realtime.refuse_connections = True
        await fakes.realtime.drop_all()
        await call.wait_for(call.runner.switched.is_set, what="the switch to the pipeline")
        await call.say("What is my name?")
        _, second = await call.wait_heard(2)
        assert call.runner.mode == "pipeline"
        assert second.audio_seconds == pytest.approx(tts_seconds("echo: What is my name?"), abs=LENGTH_TOLERANCE)
        messages = [(m["role"], m.get("content")) for m in fakes.chat.chat_requests[-1]["messages"]]
        assert messages == [
            ("system", "You are the front desk."),
            ("user", "My name is Ada."),
            ("assistant", "echo: My name is Ada."),
            ("user", "What is my name?"),
        ]
    finally:
        await call.aclose()


async def test_a_realtime_model_says_the_filler_while_a_slow_tool_runs(
    tmp_path: Path, fakes: Fakes, mcp: Recorder
) -> None:
    filler = "One moment please."
    fakes.realtime.transcripts.append("Check the booking.")
    fakes.realtime.enqueue(tool_call("sleep", {"seconds": 2}), text(filler), text("It is booked."))
    extra = recorder_server(mcp.url, filler={"after_ms": 500, "say": [filler]})
    call = await VoiceCall.start(tmp_path / "agents", realtime_spec(fakes, extra=extra))
    try:
        await call.say("Check the booking.")
        first, second = await call.wait_heard(2)
        [(called_at, _)] = call.event_times("tool_call")
        [(result_at, _)] = call.event_times("tool_result")
        # asked of the model after after_ms; it answers and speaks it at once
        assert 0.5 <= first.started - called_at and first.started < result_at, call.heard()
        assert first.audio_seconds == pytest.approx(tts_seconds(filler), abs=LENGTH_TOLERANCE)
        asked = fakes.realtime.events_of_type("response.create")
        assert any(filler in json.dumps(e) for e in asked)
        assert second.started >= result_at
        assert second.audio_seconds == pytest.approx(tts_seconds("It is booked."), abs=LENGTH_TOLERANCE)
        assert mcp.calls() == [("sleep", {"seconds": 2.0})]
    finally:
        await call.aclose()


def _now() -> float:
    import time

    return time.monotonic()
