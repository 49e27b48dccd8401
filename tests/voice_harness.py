"""A phone call without a phone, for the voice tests and benchmarks/voice_turn.py.

``VoiceCall`` runs the real ``SessionRunner`` (real livekit AgentSession, real
plugins, real silero VAD) with the caller's microphone fed espeak-ng speech
(``runtime/audio_io.CallerAudio``) and the agent's audio captured as it would have
played (``SpeakerAudio``). Every remote API is a fake from ``tests/fakes`` reached
through the spec's ``base_url``; tools are the real recorder MCP server.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakes import espeak
from fakes.cartesia import FakeCartesia
from fakes.deepgram import FakeDeepgram
from fakes.openai_chat import FakeOpenAI
from fakes.openai_realtime import FakeRealtime
from mcp_servers.harness import stdio_command

from voice_runtime.session import audio_io
from voice_runtime.session.runner import SessionRunner
from voice_runtime.plugins.manager import make_plugin_manager
from voice_runtime.spec.loader import load_folder

INPUT_RATE = 16000
OUTPUT_RATE = audio_io.OUTPUT_RATE


@dataclass
class Fakes:
    chat: FakeOpenAI = field(default_factory=FakeOpenAI)
    deepgram: FakeDeepgram = field(default_factory=FakeDeepgram)
    cartesia: FakeCartesia = field(default_factory=FakeCartesia)
    realtime: FakeRealtime = field(default_factory=FakeRealtime)

    def all(self) -> list[Any]:
        return [self.chat, self.deepgram, self.cartesia, self.realtime]

    async def start(self) -> Fakes:
        for fake in self.all():
            await fake.start()
        return self

    async def stop(self) -> None:
        for fake in self.all():
            await fake.stop()

    # the spec's provider blocks, as YAML flow mappings
    def stt(self, fake: FakeDeepgram | None = None) -> str:
        return f"{{provider: deepgram, base_url: '{(fake or self.deepgram).listen_url}', api_key: dg-key}}"

    def llm(self) -> str:
        return f"{{provider: openai, base_url: '{self.chat.base_url}', api_key: sk-key}}"

    def cartesia_tts(self, fake: FakeCartesia | None = None) -> str:
        return f"{{provider: cartesia, base_url: '{(fake or self.cartesia).root_url}', api_key: ct-key, voice: v1}}"

    def openai_tts(self) -> str:
        return f"{{provider: openai, base_url: '{self.chat.base_url}', api_key: sk-key}}"

    def realtime_model(self) -> str:
        return (f"{{provider: openai, base_url: '{self.realtime.base_url}', api_key: sk-key, "
                "max_retry: 1, retry_interval: 0.1}")


def pipeline_spec(fakes: Fakes, *, stt: str | None = None, tts: str | None = None, extra: str = "",
                  greeting: str | None = None, realtime: bool = False) -> str:
    lines = ["apiVersion: voice-runtime/v1", "instructions: You are the front desk."]
    if greeting:
        lines.append(f"greeting: {json.dumps(greeting)}")
    if realtime:
        lines.append(f"realtime: {fakes.realtime_model()}")
    lines += [
        "pipeline:",
        f"  stt: {stt or fakes.stt()}",
        f"  llm: {fakes.llm()}",
        f"  tts: {tts or fakes.cartesia_tts()}",
        "  vad: {provider: silero}",
        "  turn_detection: vad",
    ]
    return "\n".join(lines) + "\n" + extra


def realtime_spec(fakes: Fakes, *, greeting: str | None = None, extra: str = "") -> str:
    lines = ["apiVersion: voice-runtime/v1", "instructions: You are the front desk."]
    if greeting:
        lines.append(f"greeting: {json.dumps(greeting)}")
    lines.append(f"realtime: {fakes.realtime_model()}")
    return "\n".join(lines) + "\n" + extra


def recorder_server(where: Path | str, name: str = "desk", **keys: Any) -> str:
    """An ``mcp_servers:`` block with the recorder (plus any server keys): over stdio
    writing to the record file ``where``, or at the URL ``where`` (one already running)."""
    if isinstance(where, str):
        block: dict[str, Any] = {"url": where, **keys}
    else:
        command, args = stdio_command(record=where)
        block = {"command": command, "args": args, **keys}
    return f"mcp_servers:\n  {name}: {json.dumps(block)}\n"


@dataclass
class VoiceCall:
    runner: SessionRunner
    mic: Any
    speaker: Any
    events: list[tuple[float, str, dict[str, Any]]]
    t0: float

    @classmethod
    async def start(cls, folder: Path, spec: str, *, filename: str = "desk.yaml", **runner: Any) -> VoiceCall:
        """``runner``: more of SessionRunner's arguments (a phone ``line``, a ``background_sink``)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_text(spec)
        plugins = make_plugin_manager(None)
        result = load_folder(folder, plugins)
        assert result.ok, [str(e) for e in result.errors]
        events: list[tuple[float, str, dict[str, Any]]] = []
        mic, speaker = audio_io.caller_audio(INPUT_RATE), audio_io.speaker_audio(OUTPUT_RATE)
        # the call is the written spec's; the folder's others are what it may hand off to
        by_name = {loaded.name: loaded for loaded in result.specs}
        runner.setdefault("specs", by_name)
        [loaded] = [spec for spec in result.specs if spec.path.name == filename]
        runner = SessionRunner(loaded, plugins, audio_in=mic, audio_out=speaker,
                               listeners=[lambda e, d: events.append((time.monotonic(), e, d))], **runner)
        t0 = time.monotonic()
        await runner.start()
        return cls(runner, mic, speaker, events, t0)

    async def say(self, text: str) -> tuple[float, float]:
        """The caller says ``text``; returns when their speech started and ended
        (monotonic seconds)."""
        pcm = espeak.speak(text, INPUT_RATE)
        started = time.monotonic()
        ended = await self.mic.play(audio_io.Pcm(pcm, INPUT_RATE))
        return started, ended

    def play(self, text: str) -> asyncio.Future[float]:
        """Start saying ``text`` without waiting for it to end."""
        return self.mic.play(audio_io.Pcm(espeak.speak(text, INPUT_RATE), INPUT_RATE))

    def event_times(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, d) for t, e, d in self.events if e == kind]

    async def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}; played: {self.heard()}; "
                                     f"events: {[(round(t - self.t0, 2), e, d) for t, e, d in self.events]}")
            await asyncio.sleep(0.02)

    async def wait_heard(self, count: int, timeout: float = 20.0) -> list[audio_io.Played]:
        """Until ``count`` stretches of agent audio have played to their end or been cut."""
        await self.wait_for(lambda: len(self.speaker.played) >= count, timeout, f"{count} agent utterances")
        return self.speaker.played

    def heard(self) -> list[tuple[float, float, bool]]:
        """(start relative to the call's start, seconds, interrupted) of each stretch."""
        return [(round(p.started - self.t0, 3), round(p.seconds(OUTPUT_RATE), 3), p.interrupted)
                for p in self.speaker.played]

    async def aclose(self) -> None:
        self.mic.close()
        await self.runner.aclose()


def tts_seconds(text: str) -> float:
    """How long the fake TTS servers' audio for ``text`` is."""
    return len(espeak.speak(text.strip(), OUTPUT_RATE)) / 2 / OUTPUT_RATE


def speech_seconds(played: audio_io.Played) -> float:
    """How much of a played stretch is sound, not silence (energy over 20 ms windows)."""
    spans = espeak.speech_spans(bytes(played.data), OUTPUT_RATE)
    return sum(end - start for start, end in spans)
