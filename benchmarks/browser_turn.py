"""Time from the end of the caller's speech to the first agent audio played, for a
pipeline turn: in a browser talking to `serve`'s /talk page (no LiveKit), against the
same spec through `chat --audio-in`'s path (runtime/audio_io: SessionRunner with a
microphone played in real time and a speaker that keeps when it played), in the same run.

Both hear espeak-ng speech through the real silero VAD and the real deepgram plugin
(fake Deepgram), answer with the real openai plugin (fake chat completions: `echo:
<what was heard>`) and speak with the real cartesia plugin (fake Cartesia).

- **browser**: `voice-runtime serve` (process executor, one prewarmed job process, no
  LIVEKIT_URL) and headless chromium with a fake microphone looping a WAV (the
  utterance, then silence for the answer): every loop is a turn. Timed in the page on
  its audio clock: the last microphone frame with a sample above the page's loudness
  mark (0.05 full scale) to the first non-silent sample the page's player produced.
- **chat --audio-in path**: `benchmarks/voice_turn.py`'s voice-runtime side, timed
  from the same point of the utterance (its last sample above 0.05 full scale) to the
  agent's first audio frame played.

    python benchmarks/browser_turn.py                  # 20 turns per side; ~5 min
    python benchmarks/browser_turn.py --turns 3        # a tiny run

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ (the fakes, the MCP harness) on sys.path
from _common import emit, machine, percentile, progress, quiet_logging
from voice_turn import INPUT_RATE, UTTERANCE, ours, pipeline_yaml

TARGET_RATIO_P50 = 1.10
LOUD = 0.05  # the page's mark (serve/talk.py LOUD)
ANSWER_ROOM_S = 7.0  # silence after the utterance in the looped WAV: the agent answers in it


def last_loud_s(pcm: bytes, rate: int) -> float:
    """Seconds from the last sample above LOUD to the end of ``pcm``."""
    import numpy as np

    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.float32)) / 32768
    loud = np.nonzero(samples > LOUD)[0]
    return (len(samples) - 1 - int(loud[-1])) / rate


def browser_side(fakes: Any, tmp: Path, turns: int, warmup: int) -> list[float]:
    from fakes import espeak
    from helpers import CLI, child_env
    from mcp_servers.harness import free_port
    from playwright.sync_api import sync_playwright

    agents = tmp / "browser-agents"
    agents.mkdir()
    (agents / "desk.yaml").write_text(pipeline_yaml(fakes))
    wav = tmp / "caller.wav"
    espeak.write_wav(wav, espeak.silence(0.5, INPUT_RATE) + espeak.speak(UTTERANCE, INPUT_RATE)
                     + espeak.silence(ANSWER_ROOM_S, INPUT_RATE), INPUT_RATE)
    port = free_port()
    env = child_env({"LIVEKIT_URL": None, "LIVEKIT_API_KEY": None, "LIVEKIT_API_SECRET": None})
    log = open(tmp / "serve.log", "w")  # noqa: SIM115 - closed below
    serve = subprocess.Popen([*CLI, "serve", str(agents), "--http-host", "127.0.0.1", "--http-port", str(port),
                              "--idle-processes", "1"], stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit(f"serve did not get ready:\n{(tmp / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}"])
            try:
                page = browser.new_context(permissions=["microphone"]).new_page()
                page.goto(f"http://127.0.0.1:{port}/talk/desk?autostart=1")
                want = turns + warmup
                deadline = time.monotonic() + want * (ANSWER_ROOM_S + 3) + 90
                latencies: list[float] = []
                while len(latencies) < want:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"browser: {len(latencies)} of {want} turns answered in time")
                    time.sleep(0.5)
                    found = first_answers(page.evaluate("talk.turns"))
                    for ms in found[len(latencies):]:
                        progress(f"browser turn {len(latencies) + 1}: {ms:.0f} ms")
                        latencies.append(ms)
                page.get_by_test_id("hangup").click()
            finally:
                browser.close()
        return latencies[warmup:want]
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
        log.close()


def first_answers(marks: list[dict[str, Any]]) -> list[float]:
    """ms from each turn's end of speech to the first audio after it (the page marks
    every start of playback; a reply that pauses mid-way starts again)."""
    out, seen = [], set()
    for mark in marks:
        loud = mark.get("lastLoud")
        if loud is None or loud in seen or mark["started"] < loud:
            continue
        seen.add(loud)
        out.append((mark["started"] - loud) * 1000)
    return out


async def chat_side(fakes: Any, tmp: Path, turns: int, warmup: int) -> list[float]:
    from fakes import espeak

    pcm = espeak.speak(UTTERANCE, INPUT_RATE)
    tail_ms = last_loud_s(pcm, INPUT_RATE) * 1000  # from its last loud sample, as the page times it
    side = await ours(tmp / "chat-agents", pipeline_yaml(fakes))
    latencies = []
    try:
        for n in range(turns + warmup):
            ms = await side.turn(pcm) + tail_ms
            if n >= warmup:
                latencies.append(ms)
                progress(f"chat --audio-in turn {n - warmup + 1}: {ms:.0f} ms")
    finally:
        await side.aclose()
    return latencies


def main(turns: int, warmup: int) -> dict[str, Any]:
    from voice_harness import Fakes

    fakes = Fakes()
    for fake in (fakes.chat, fakes.deepgram, fakes.cartesia):
        fake.start_in_thread()
    tmp = Path(tempfile.mkdtemp(prefix="browser-turn-"))
    try:
        browser = browser_side(fakes, tmp, turns, warmup)
        chat = asyncio.run(chat_side(fakes, tmp, turns, warmup))
    finally:
        for fake in (fakes.chat, fakes.deepgram, fakes.cartesia):
            fake.stop_thread()
        shutil.rmtree(tmp, ignore_errors=True)
    p50, base_p50 = percentile(browser, 50), percentile(chat, 50)
    return {
        "benchmark": "browser_turn",
        "p50_ms": round(p50, 1),
        "p95_ms": round(percentile(browser, 95), 1),
        "chat_audio_in_p50_ms": round(base_p50, 1),
        "chat_audio_in_p95_ms": round(percentile(chat, 95), 1),
        "ratio_p50": round(p50 / base_p50, 3),
        "turns": turns,
        "warmup": warmup,
        "latencies_ms": [round(x, 1) for x in browser],
        "chat_audio_in_latencies_ms": [round(x, 1) for x in chat],
        "target_ratio_p50": TARGET_RATIO_P50,
        "meets_target": p50 / base_p50 <= TARGET_RATIO_P50,
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="timed turns per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed turns per side first")
    options = parser.parse_args()
    quiet_logging()
    emit(main(options.turns, options.warmup))
