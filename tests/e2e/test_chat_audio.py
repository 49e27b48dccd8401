"""`voice-runtime chat --audio-in`: a voice conversation played from WAV files, through
the agent's real VAD, STT and TTS, against the fakes run on their own
(`python -m tests.fakes.<name> --port N`, as tests/fakes/README.md shows), with the
tool call landing on a real MCP server."""

from __future__ import annotations

import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import espeak
from helpers import CLI, REPO, child_env, run_cli
from mcp_servers.harness import free_port, read_records, stdio_command

pytestmark = pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng")


class Standalone:
    """One fake as a user runs it: its own process on a port it was given."""

    def __init__(self, module: str, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"tests.fakes.{module}", "--port", str(self.port), *args],
            cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.banner = self.proc.stdout.readline().strip()  # printed once it listens
        assert self.banner.endswith(str(self.port)) or f":{self.port}/" in self.banner, self.banner

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def standalone_fakes() -> Iterator[dict[str, Standalone]]:
    fakes = {
        "chat": Standalone("openai_chat", "--tool", "get_weather", "--args", '{"city": "Paris"}'),
        "deepgram": Standalone("deepgram", "--transcript", "What is the weather in Paris?",
                               "--transcript", "Thank you."),
        "cartesia": Standalone("cartesia"),
    }
    yield fakes
    for fake in fakes.values():
        fake.stop()


def write_agent(folder: Path, fakes: dict[str, Standalone], record: Path) -> Path:
    command, args = stdio_command(record=record)
    folder.mkdir(exist_ok=True)
    (folder / "desk.yaml").write_text(
        "apiVersion: voice-runtime/v1\n"
        "instructions: You are the front desk.\n"
        "pipeline:\n"
        f"  stt: {{provider: deepgram, base_url: 'http://127.0.0.1:{fakes['deepgram'].port}/v1/listen', api_key: k}}\n"
        f"  llm: {{provider: openai, base_url: 'http://127.0.0.1:{fakes['chat'].port}/v1', api_key: k}}\n"
        f"  tts: {{provider: cartesia, base_url: 'http://127.0.0.1:{fakes['cartesia'].port}', api_key: k, voice: v}}\n"
        "  vad: {provider: silero}\n"
        "mcp_servers:\n"
        f"  weather: {{command: {command!r}, args: {args!r}}}\n".replace("'", '"')
    )
    return folder


def test_two_wav_files_are_two_spoken_turns_with_the_tool_call_and_replies_printed_and_recorded(
    tmp_path: Path, standalone_fakes: dict[str, Standalone]
) -> None:
    record = tmp_path / "calls.jsonl"
    agents = write_agent(tmp_path / "agents", standalone_fakes, record)
    question, thanks = tmp_path / "question.wav", tmp_path / "thanks.wav"
    espeak.write_wav(question, espeak.speak("What is the weather in Paris?", 22050), 22050)  # any rate: resampled
    espeak.write_wav(thanks, espeak.speak("Thank you.", 16000), 16000)
    out = tmp_path / "call.wav"

    result = run_cli("chat", agents, "--agent", "desk", "--audio-in", question, "--audio-in", thanks,
                     "--audio-out", out, timeout=120)

    assert result.rc == 0, result.stderr
    assert result.stdout.splitlines() == [
        "you> What is the weather in Paris?",
        '  -> weather: get_weather {"city": "Paris"}',
        *[line for line in result.stdout.splitlines() if line.startswith("  <- get_weather ok in ")][:1],
        "desk> Result: sunny in Paris",
        "you> Thank you.",
        '  -> weather: get_weather {"city": "Paris"}',
        *[line for line in result.stdout.splitlines() if line.startswith("  <- get_weather ok in ")][1:],
        "desk> Result: sunny in Paris",
    ]
    assert [r["args"] for r in read_records(record)] == [{"city": "Paris"}, {"city": "Paris"}]
    # the call as the caller heard it: the agent's two replies, as sound
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
        heard = espeak.speech_spans(wav.readframes(wav.getnframes()), 24000, gap_ms=400)
    reply = len(espeak.speak("Result: sunny in Paris", 24000)) / 2 / 24000
    assert len(heard) == 2 and all(abs((end - start) - reply) < 0.3 for start, end in heard), heard


def test_text_chat_shows_a_slow_tools_filler_line_once(tmp_path: Path) -> None:
    from fakes.openai_chat import FakeOpenAI

    fake = FakeOpenAI()
    fake.use_tool_then_answer("sleep", {"seconds": 1})
    url = fake.start_in_thread()
    command, args = stdio_command(record=tmp_path / "calls.jsonl")
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "desk.yaml").write_text(
        "apiVersion: voice-runtime/v1\ninstructions: x\n"
        f"pipeline: {{llm: {{provider: openai, base_url: '{url}', api_key: k}}, text_only: true}}\n"
        "mcp_servers:\n"
        f'  booking: {{command: "{command}", args: {args!r}, filler: {{after_ms: 300, say: [One moment.]}}}}\n'
        .replace("'", '"').replace(f'"{url}"', f"'{url}'"))
    try:
        result = subprocess.run([*CLI, "chat", agents, "--agent", "desk"], input="is it booked?\n",
                                capture_output=True, text=True, timeout=60, env=child_env())
    finally:
        fake.stop_thread()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["you> is it booked?", '  -> booking: sleep {"seconds": 1}',
                         "  .. sleep is still running: desk> One moment."]
    assert lines[3].startswith("  <- sleep ok in ") and lines[4:] == ["desk> Result: slept"]


def _riff(fmt: bytes, data: bytes) -> bytes:
    chunks = b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(data).to_bytes(4, "little") + data
    return b"RIFF" + (4 + len(chunks)).to_bytes(4, "little") + b"WAVE" + chunks


def _pcm_fmt(channels: int, rate: int, bits: int) -> bytes:
    align = channels * bits // 8
    return (b"\x01\x00" + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
            + (rate * align).to_bytes(4, "little") + align.to_bytes(2, "little") + bits.to_bytes(2, "little"))


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    mp3 = tmp / "speech.mp3"
    mp3.write_bytes(espeak.mp3_bytes(espeak.speak("hello", 24000), 24000))
    eight_bit = tmp / "eight.wav"
    eight_bit.write_bytes(_riff(_pcm_fmt(1, 16000, 8), b"\x80" * 1600))
    floats = tmp / "float.wav"
    floats.write_bytes(_riff(b"\x03\x00" + _pcm_fmt(1, 16000, 32)[2:], b"\0" * 6400))
    empty = tmp / "empty.wav"
    espeak.write_wav(empty, b"", 16000)
    silent = tmp / "silent.wav"
    espeak.write_wav(silent, espeak.silence(2.0, 16000), 16000)
    huge = tmp / "huge.wav"
    with open(huge, "wb") as f:  # sparse: 65 MiB on paper, nothing on disk
        f.write(_riff(_pcm_fmt(1, 16000, 16), b""))
        f.truncate(65 * 1024 * 1024)
    return {
        "not a wav": (mp3, "not a WAV file"),
        "8-bit": (eight_bit, "8-bit samples are not supported"),
        "32-bit float": (floats, "unsupported sample format"),
        "empty": (empty, "the file holds no audio"),
        "silence only": (silent, "no speech in the file"),
        "over the size limit": (huge, "over the 64 MiB limit"),
        "missing": (tmp / "nope.wav", "cannot read"),
    }


@pytest.mark.parametrize(
    "case", ["not a wav", "8-bit", "32-bit float", "empty", "silence only", "over the size limit", "missing"])
def test_audio_in_that_cannot_be_played_is_one_line_naming_the_file_and_exit_2(tmp_path: Path, case: str) -> None:
    path, message = _bad_inputs(tmp_path)[case]
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "desk.yaml").write_text(
        "apiVersion: voice-runtime/v1\ninstructions: x\n"
        "pipeline: {llm: {provider: openai, api_key: k}, text_only: true}\n")
    started = time.monotonic()

    result = run_cli("chat", agents, "--agent", "desk", "--audio-in", path)

    assert result.rc == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: ") and message in line, line
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30  # refused before any session starts


def test_audio_in_for_a_text_only_agent_is_refused_with_exit_2(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "desk.yaml").write_text(
        "apiVersion: voice-runtime/v1\ninstructions: x\n"
        "pipeline: {llm: {provider: openai, api_key: k}, text_only: true}\n")
    question = tmp_path / "q.wav"
    espeak.write_wav(question, espeak.speak("hello", 16000), 16000)

    result = run_cli("chat", agents, "--agent", "desk", "--audio-in", question)

    assert result.rc == 2
    assert result.stderr.strip() == (
        "error: agent desk is text-only: --audio-in needs a voice pipeline or a realtime model")


def test_audio_out_without_audio_in_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("chat", tmp_path, "--agent", "desk", "--audio-out", tmp_path / "x.wav")
    assert result.rc == 2 and result.stderr.strip() == "error: --audio-out needs --audio-in"



def test_a_turn_the_agent_never_hears_is_an_error_and_exit_1_not_silence(
    tmp_path: Path, standalone_fakes: dict[str, Standalone]
) -> None:
    """The STT is unreachable: the caller's turn is never heard. chat says so (it used to
    print only the greeting and exit 0)."""
    fakes = dict(standalone_fakes)
    agents = write_agent(tmp_path / "agents", fakes, tmp_path / "calls.jsonl")
    spec = agents / "desk.yaml"
    spec.write_text(spec.read_text().replace(f"127.0.0.1:{fakes['deepgram'].port}", f"127.0.0.1:{free_port()}"))
    question = tmp_path / "question.wav"
    espeak.write_wav(question, espeak.speak("What is the weather in Paris?", 16000), 16000)

    result = run_cli("chat", agents, "--agent", "desk", "--audio-in", question, timeout=120)

    assert result.rc == 1, result.stdout + result.stderr
    assert "error: the agent did not answer within 8 s: the turn was not heard" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
