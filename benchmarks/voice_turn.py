"""Time from the end of the caller's speech to the first frame of the agent's audio, for
a pipeline turn, voice-runtime against a hand-built livekit AgentSession; and when a
slow tool's filler line starts.

Both sides hear espeak-ng speech through the real silero VAD and the real deepgram
plugin (fake Deepgram streaming server), think with the real openai plugin (fake chat
completions server, answering `echo: <what was heard>`) and speak with the real
cartesia plugin (fake Cartesia websocket returning espeak-ng audio). Audio goes in and
out through `runtime/audio_io` (a microphone played in real time, a speaker that keeps
what played and when) on both sides: only the session differs.

- **voice-runtime**: the spec loaded as `serve` loads it, `SessionRunner(loaded,
  plugins, audio_in=..., audio_out=...)`, providers built by the built-in plugins.
- **baseline**: `AgentSession(stt=deepgram.STT(...), llm=openai.LLM(...),
  tts=cartesia.TTS(...), vad=silero.VAD.load(), turn_handling={"turn_detection": "vad"},
  aec_warmup_duration=None)` and `Agent(instructions=...)`, started on the same
  audio objects (the AEC warm-up is off on both: there is no echo to cancel).

One session per side; turns alternate between the sides (who goes first alternates
too) after `--warmup` untimed turns each. A turn is timed from the moment the last
sample of the caller's speech was sent to the moment the agent's first audio frame
started playing. The figure includes livekit's own VAD silence (0.55 s) and
endpointing delay (0.5 s) on both sides.

`filler_start_p50_ms`: a third session (voice-runtime only) whose MCP server (the test
recorder over stdio) has `filler: {after_ms: 500, say: [...]}` and whose model calls its
`sleep` tool for 1.5 s; timed from the tool call's start (the session's tool_call
event) to the filler's first audio frame.

    python benchmarks/voice_turn.py                          # 20 turns per side, 5 filler turns; ~4 min
    python benchmarks/voice_turn.py --turns 2 --warmup 0 --filler-turns 1   # a tiny run (the test's)

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ (the fakes, the MCP harness) on sys.path
from _common import emit, load_spec, machine, percentile, progress, quiet_logging

TARGET_RATIO_P50 = 1.05
FILLER_AFTER_MS = 500
FILLER_TARGET_MS = FILLER_AFTER_MS + 150
UTTERANCE = "Do you have a room for tonight?"
INPUT_RATE = 16000


class Side:
    """One session with its microphone and speaker, taking turns."""

    def __init__(self, name: str, mic: Any, speaker: Any, closer: Any) -> None:
        self.name, self.mic, self.speaker, self._close = name, mic, speaker, closer
        self.latencies_ms: list[float] = []

    async def turn(self, pcm: bytes) -> float:
        """The caller speaks; returns ms from the end of their speech to the agent's
        first audio frame, once the agent's answer has played."""
        from voice_runtime.session import audio_io

        heard = len(self.speaker.played)
        spoke_until = await self.mic.play(audio_io.Pcm(pcm, INPUT_RATE))
        deadline = time.monotonic() + 30
        while len(self.speaker.played) <= heard:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: no answer within 30 s")
            await asyncio.sleep(0.01)
        first = self.speaker.played[heard]
        await asyncio.sleep(0.3)  # let the session settle into listening before the next turn
        return (first.started - spoke_until) * 1000

    async def aclose(self) -> None:
        self.mic.close()
        await self._close()


def pipeline_yaml(fakes: Any, extra: str = "") -> str:
    return (
        "apiVersion: voice-runtime/v1\n"
        "name: desk\n"
        "instructions: You are the front desk.\n"
        "pipeline:\n"
        f"  stt: {{provider: deepgram, base_url: '{fakes.deepgram.listen_url}', api_key: dg-key}}\n"
        f"  llm: {{provider: openai, model: gpt-4o-mini, base_url: '{fakes.chat.base_url}', api_key: sk-key}}\n"
        f"  tts: {{provider: cartesia, base_url: '{fakes.cartesia.root_url}', api_key: ct-key, voice: v1}}\n"
        "  vad: {provider: silero}\n"
        "  turn_detection: vad\n"
    ) + extra


async def ours(folder: Path, text: str, listeners: list[Any] | None = None) -> Side:
    from voice_runtime.session import audio_io
    from voice_runtime.session.runner import SessionRunner

    plugins, loaded = load_spec(folder, text)
    mic, speaker = audio_io.caller_audio(INPUT_RATE), audio_io.speaker_audio()
    runner = SessionRunner(loaded, plugins, audio_in=mic, audio_out=speaker, listeners=listeners or [])
    await runner.start()
    return Side("voice-runtime", mic, speaker, runner.aclose)


async def baseline(fakes: Any) -> Side:
    import contextlib

    from livekit.agents import Agent, AgentSession
    from livekit.agents.utils import http_context
    from livekit.plugins import cartesia, deepgram, openai, silero

    from voice_runtime.session import audio_io

    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(http_context.open())
    session = AgentSession(
        stt=deepgram.STT(base_url=fakes.deepgram.listen_url, api_key="dg-key"),
        llm=openai.LLM(model="gpt-4o-mini", base_url=fakes.chat.base_url, api_key="sk-key"),
        tts=cartesia.TTS(base_url=fakes.cartesia.root_url, api_key="ct-key", voice="v1"),
        vad=silero.VAD.load(),
        turn_handling={"turn_detection": "vad"},
        aec_warmup_duration=None,
        session_close_transcript_timeout=0.1,
    )
    mic, speaker = audio_io.caller_audio(INPUT_RATE), audio_io.speaker_audio()
    session.input.audio, session.output.audio = mic, speaker
    await session.start(Agent(instructions="You are the front desk."))

    async def close() -> None:
        await session.aclose()
        await stack.aclose()

    return Side("baseline", mic, speaker, close)


async def filler_turns(tmp: Path, fakes_cls: Any, count: int, pcm: bytes) -> list[float]:
    from fakes.openai_chat import FakeOpenAI
    from mcp_servers.harness import stdio_command

    chat = FakeOpenAI()
    await chat.start()
    fakes = fakes_cls(chat=chat)
    await fakes.deepgram.start()
    await fakes.cartesia.start()
    chat.use_tool_then_answer("sleep", {"seconds": 1.5})
    command, args = stdio_command()
    extra = ("mcp_servers:\n  desk: " + json.dumps({"command": command, "args": args, "filler": {
        "after_ms": FILLER_AFTER_MS, "say": ["One moment please."]}}) + "\n")
    calls: list[float] = []
    side = await ours(tmp / "filler", pipeline_yaml(fakes, extra),
                      [lambda event, _: calls.append(time.monotonic()) if event == "tool_call" else None])
    starts: list[float] = []
    try:
        for n in range(count):
            heard = len(side.speaker.played)
            await side.turn(pcm)
            while len(side.speaker.played) < heard + 2:  # the filler, then the result
                await asyncio.sleep(0.02)
            filler = side.speaker.played[heard]
            starts.append((filler.started - calls[n]) * 1000)
            progress(f"filler turn {n + 1}: {starts[-1]:.0f} ms after the tool call")
            await asyncio.sleep(0.5)
    finally:
        await side.aclose()
        for fake in (chat, fakes.deepgram, fakes.cartesia):
            await fake.stop()
    return starts


async def main(turns: int, warmup: int, filler_count: int) -> dict[str, Any]:
    from fakes import espeak
    from voice_harness import Fakes

    pcm = espeak.speak(UTTERANCE, INPUT_RATE)
    fakes = await Fakes().start()
    tmp = Path(tempfile.mkdtemp(prefix="voice-turn-"))
    sides = [await ours(tmp / "agents", pipeline_yaml(fakes)), await baseline(fakes)]
    try:
        for side in sides:
            for _ in range(warmup):
                await side.turn(pcm)
        for n in range(turns):
            order = sides if n % 2 == 0 else sides[::-1]
            for side in order:
                ms = await side.turn(pcm)
                side.latencies_ms.append(ms)
                progress(f"turn {n + 1} {side.name}: {ms:.0f} ms")
    finally:
        for side in sides:
            await side.aclose()
        await fakes.stop()
    filler = await filler_turns(tmp, Fakes, filler_count, pcm) if filler_count else []

    mine, base = sides[0].latencies_ms, sides[1].latencies_ms
    p50, base_p50 = percentile(mine, 50), percentile(base, 50)
    filler_p50 = percentile(filler, 50) if filler else None
    ratio = p50 / base_p50
    return {
        "benchmark": "voice_turn",
        "p50_ms": round(p50, 1),
        "p95_ms": round(percentile(mine, 95), 1),
        "baseline_p50_ms": round(base_p50, 1),
        "baseline_p95_ms": round(percentile(base, 95), 1),
        "ratio_p50": round(ratio, 3),
        "filler_start_p50_ms": round(filler_p50, 1) if filler_p50 is not None else None,
        "filler_after_ms": FILLER_AFTER_MS,
        "turns": turns,
        "warmup": warmup,
        "filler_turns": filler_count,
        "latencies_ms": [round(x, 1) for x in mine],
        "baseline_latencies_ms": [round(x, 1) for x in base],
        "filler_starts_ms": [round(x, 1) for x in filler],
        "target_ratio_p50": TARGET_RATIO_P50,
        "target_filler_start_ms": FILLER_TARGET_MS,
        "meets_target": ratio <= TARGET_RATIO_P50 and (filler_p50 is None or filler_p50 <= FILLER_TARGET_MS),
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="timed turns per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed turns per side first")
    parser.add_argument("--filler-turns", type=int, default=5, help="slow-tool turns (0: skip)")
    options = parser.parse_args()
    quiet_logging()
    emit(asyncio.run(main(options.turns, options.warmup, options.filler_turns)))
