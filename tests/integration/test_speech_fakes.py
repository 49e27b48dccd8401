"""The speech fakes speak the protocols the REAL livekit plugins use: deepgram's
streaming STT, cartesia's websocket and bytes TTS, openai's speech endpoint in each
format. Audio is real (espeak-ng) both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.agents.utils import http_context
from livekit.plugins import cartesia, deepgram, openai

from fakes import espeak
from fakes.cartesia import FakeCartesia
from fakes.deepgram import FakeDeepgram
from fakes.openai_chat import FakeOpenAI

pytestmark = pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng")

# resampling and the decoders' frame sizes move the end of the audio by a few ms
TOLERANCE_S = 0.06


@pytest.fixture(autouse=True)
async def http() -> AsyncIterator[None]:
    async with http_context.open():
        yield


def frames(pcm: bytes, rate: int) -> list[rtc.AudioFrame]:
    step = rate // 100 * 2
    return [rtc.AudioFrame(pcm[i:i + step].ljust(step, b"\0"), rate, 1, step // 2) for i in range(0, len(pcm), step)]


async def test_deepgram_stream_answers_interim_then_final_after_the_speech_ends_and_honours_close() -> None:
    async with FakeDeepgram() as fake:
        fake.say("What is the weather in Paris?")
        stt = deepgram.STT(base_url=fake.listen_url, api_key="dg-key")
        stream = stt.stream()
        for frame in frames(espeak.speak("What is the weather in Paris?", 16000) + espeak.silence(0.6, 16000), 16000):
            stream.push_frame(frame)
        stream.end_input()
        events = [(e.type, e.alternatives[0].text if e.alternatives else "") async for e in stream]
        await stt.aclose()

    texts = [(t, text) for t, text in events if t in (lk_stt.SpeechEventType.INTERIM_TRANSCRIPT,
                                                       lk_stt.SpeechEventType.FINAL_TRANSCRIPT)]
    assert texts == [(lk_stt.SpeechEventType.INTERIM_TRANSCRIPT, "What is the"),
                     (lk_stt.SpeechEventType.FINAL_TRANSCRIPT, "What is the weather in Paris?")]
    assert lk_stt.SpeechEventType.END_OF_SPEECH in [t for t, _ in events]
    assert fake.heard == ["What is the weather in Paris?"]
    assert {"type": "CloseStream"} in fake.messages
    [handshake] = [r for r in fake.requests if r.get("websocket")]
    assert handshake["query"]["sample_rate"] == "16000" and handshake["query"]["encoding"] == "linear16"
    assert handshake.headers["Authorization"] == "Token dg-key"


async def test_deepgram_stream_answers_finalize_at_once_for_speech_still_going() -> None:
    async with FakeDeepgram() as fake:
        fake.say("Hello there.")
        stt = deepgram.STT(base_url=fake.listen_url, api_key="dg-key")
        stream = stt.stream()
        for frame in frames(espeak.speak("Hello there.", 16000), 16000):  # no silence after it
            stream.push_frame(frame)
        stream.flush()  # the plugin sends Finalize
        final = None
        async for event in stream:
            if event.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                final = event.alternatives[0].text
                break
        await stream.aclose()
        await stt.aclose()
    assert final == "Hello there."
    assert {"type": "Finalize"} in fake.messages


@pytest.mark.parametrize("sample_rate", [16000, 24000])
async def test_cartesia_websocket_speaks_the_text_as_espeak_audio_at_the_requested_rate(sample_rate: int) -> None:
    async with FakeCartesia() as fake:
        tts = cartesia.TTS(base_url=fake.root_url, api_key="ct-key", voice="v1", sample_rate=sample_rate)
        stream = tts.stream()
        stream.push_text("Good morning. How can I help?")
        stream.end_input()
        audio = b"".join([bytes(e.frame.data) async for e in stream])
        await tts.aclose()
    assert " ".join(fake.spoken) == "Good morning. How can I help?"  # in the pieces the plugin sent
    expected = sum(len(espeak.speak(s, sample_rate)) for s in fake.spoken) / 2 / sample_rate
    assert len(audio) / 2 / sample_rate == pytest.approx(expected, abs=TOLERANCE_S)
    assert espeak.speech_spans(audio, sample_rate)  # sound, not silence


@pytest.mark.parametrize("response_format", ["pcm", "wav", "mp3"])
async def test_openai_speech_answers_in_the_requested_format(response_format: str) -> None:
    async with FakeOpenAI() as fake:
        tts = openai.TTS(base_url=fake.base_url, api_key="sk-key", response_format=response_format)
        audio = b"".join([bytes(e.frame.data) async for e in tts.synthesize("Hello, front desk.")])
        await tts.aclose()
    [request] = fake.audio_requests("speech")
    assert request["response_format"] == response_format and request["input"] == "Hello, front desk."
    expected = len(espeak.speak("Hello, front desk.", 24000)) / 2 / 24000
    # MP3 adds its encoder delay and padding (a frame or two)
    assert len(audio) / 2 / 24000 == pytest.approx(expected, abs=0.1 if response_format == "mp3" else TOLERANCE_S)
    assert espeak.speech_spans(audio, 24000)
