"""Audio in and out of a livekit AgentSession without a room: a caller played from
PCM (a WAV file, or speech a test made) and a loudspeaker that records what the
agent said, both at the pace of a real call.

livekit's session reads ``session.input.audio`` (an ``io.AudioInput``: an async
iterator of frames) and writes ``session.output.audio`` (an ``io.AudioOutput``) when
they are set before ``start()``; a room is only one way to fill them. Here:

- ``CallerAudio`` sends 10 ms frames in real time, silence when nothing is queued
  (a microphone never stops), so the VAD hears speech end and the endpointing delay
  runs on the wall clock as on a call;
- ``SpeakerAudio`` plays what it is given in real time (frames arrive faster than
  that): a segment ends when its audio has played, ``clear_buffer`` (barge-in) cuts it
  where playback is, ``pause``/``resume`` hold it as a room's output does (livekit
  pauses on a barge-in and resumes after a false one), and every played segment is
  kept with its start time, so a test can measure when the agent spoke and
  ``chat --audio-out`` can write the call.

WAV reading for ``chat --audio-in`` is here too: bad input is an ``AudioFileError``
with one line saying what is wrong and what is accepted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRAME_MS = 10
OUTPUT_RATE = 24000  # what livekit's TTS plugins produce; other rates are resampled to it
# a WAV of the caller is read into memory: about 11 minutes of 48 kHz 16-bit mono
MAX_WAV_BYTES = 64 * 1024 * 1024


class AudioFileError(Exception):
    """A caller's audio file that cannot be played; the message is one line."""


@dataclass
class Pcm:
    """16-bit mono PCM."""

    data: bytes
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.data) / 2 / self.sample_rate


def read_wav(path: Path, *, max_bytes: int = MAX_WAV_BYTES) -> Pcm:
    """A WAV file as 16-bit mono PCM (stereo is mixed down). Raises AudioFileError for
    anything else, naming the file and what is accepted."""
    accepted = "expected a PCM WAV file (16-bit, mono or stereo, 8-48 kHz)"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise AudioFileError(f"{path}: {size} bytes is over the {max_bytes // (1024 * 1024)} MiB limit for audio input")
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        if str(exc).startswith("unknown format"):  # a WAV, of float or compressed samples
            raise AudioFileError(f"{path}: unsupported sample format ({exc}); {accepted}") from None
        raise AudioFileError(f"{path}: not a WAV file ({exc or 'too short'}); {accepted}") from None
    except OSError as exc:
        raise AudioFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if width != 2:
        raise AudioFileError(f"{path}: {8 * width}-bit samples are not supported; {accepted}")
    if channels not in (1, 2):
        raise AudioFileError(f"{path}: {channels} channels are not supported; {accepted}")
    if not 8000 <= rate <= 48000:
        raise AudioFileError(f"{path}: a sample rate of {rate} Hz is not supported; {accepted}")
    if not frames:
        raise AudioFileError(f"{path}: the file holds no audio")
    if channels == 2:
        import numpy as np

        stereo = np.frombuffer(frames, dtype="<i2").reshape(-1, 2).astype(np.int32)
        frames = (stereo.sum(axis=1) // 2).astype("<i2").tobytes()
    return Pcm(frames, rate)


def write_wav(path: Path, pcm: Pcm) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(pcm.sample_rate)
        wav.writeframes(pcm.data)


def speech_turns(pcm: Pcm, *, min_pause: float = 1.0, threshold: float = 500.0, margin: float = 0.1) -> list[Pcm]:
    """One recording with pauses -> the caller's turns: split at every stretch of at
    least ``min_pause`` seconds below ``threshold`` (RMS over 20 ms windows); each turn
    keeps ``margin`` seconds of the quiet around it (soft word ends fall below the
    threshold)."""
    import numpy as np

    samples = np.frombuffer(pcm.data, dtype="<i2").astype(np.float32)
    window = pcm.sample_rate // 50
    loud = [bool(np.sqrt(np.mean(samples[i:i + window] ** 2)) >= threshold)
            for i in range(0, len(samples), window)]
    turns: list[Pcm] = []
    start: int | None = None
    quiet = 0
    need = int(min_pause * 50)
    for n, is_loud in enumerate(loud + [False] * need):
        if is_loud:
            if start is None:
                start = n
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet >= need:
                pad = int(margin * 50)
                first, end = max(0, start - pad), n - quiet + 1 + pad
                turns.append(Pcm(pcm.data[first * window * 2: min(end * window, len(samples)) * 2], pcm.sample_rate))
                start, quiet = None, 0
    return turns


def _audio_frame(data: bytes, sample_rate: int) -> Any:
    from livekit import rtc

    return rtc.AudioFrame(data=data, sample_rate=sample_rate, num_channels=1,
                          samples_per_channel=len(data) // 2)


def caller_audio(sample_rate: int = 16000) -> Any:
    """A ``CallerAudio`` (the class is built on first use: livekit is imported lazily)."""
    return _classes()[0](sample_rate)


def speaker_audio(sample_rate: int = OUTPUT_RATE) -> Any:
    return _classes()[1](sample_rate)


@dataclass
class Played:
    """One segment of agent audio (an utterance) as the caller heard it."""

    started: float  # time.monotonic() when its first sample played
    data: bytearray = field(default_factory=bytearray)  # gaps in delivery are silence here
    interrupted: bool = False
    audio_seconds: float = 0.0  # how much of the agent's audio played (gaps not counted)

    def seconds(self, sample_rate: int) -> float:
        return len(self.data) / 2 / sample_rate


@functools.cache  # built once, on first use: livekit is imported lazily
def _classes() -> tuple[type, type]:
    from livekit.agents.voice import io

    class CallerAudio(io.AudioInput):  # type: ignore[misc]
        """The caller's microphone: queued speech, else silence, 10 ms at a time."""

        def __init__(self, sample_rate: int) -> None:
            super().__init__(label="voice-runtime caller")
            self.sample_rate = sample_rate
            self._frame_bytes = sample_rate * FRAME_MS // 1000 * 2
            self._silence = b"\0" * self._frame_bytes
            self._queue: collections.deque[tuple[bytes, asyncio.Future[float]]] = collections.deque()
            self._current: tuple[memoryview, asyncio.Future[float]] | None = None
            self._next_at: float | None = None
            self._closed = False

        def play(self, pcm: Pcm) -> asyncio.Future[float]:
            """Queue ``pcm`` (resampled to this input's rate); the future is the
            monotonic time its last sample was sent."""
            data = pcm.data
            if pcm.sample_rate != self.sample_rate:
                data = _resample(data, pcm.sample_rate, self.sample_rate)
            done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self._queue.append((data, done))
            return done

        def close(self) -> None:
            self._closed = True

        async def __anext__(self) -> Any:
            if self._closed:
                raise StopAsyncIteration
            loop = asyncio.get_running_loop()
            now = loop.time()
            if self._next_at is None or self._next_at < now - 0.2:
                self._next_at = now  # first frame, or the consumer stalled: do not burst to catch up
            elif self._next_at > now:
                await asyncio.sleep(self._next_at - now)
            self._next_at += FRAME_MS / 1000
            return _audio_frame(self._take(), self.sample_rate)

        def _take(self) -> bytes:
            if self._current is None and self._queue:
                data, done = self._queue.popleft()
                self._current = (memoryview(data), done)
            if self._current is None:
                return self._silence
            view, done = self._current
            chunk = bytes(view[:self._frame_bytes])
            rest = view[self._frame_bytes:]
            if len(rest):
                self._current = (rest, done)
            else:
                self._current = None
                if not done.done():
                    done.set_result(time.monotonic())
            return chunk.ljust(self._frame_bytes, b"\0")

    class SpeakerAudio(io.AudioOutput):  # type: ignore[misc]
        """The caller's loudspeaker: plays in real time and keeps what was played.
        It can pause, as a room's audio output can: livekit then pauses the agent on
        a barge-in and resumes it if the caller said nothing after all."""

        def __init__(self, sample_rate: int) -> None:
            super().__init__(label="voice-runtime speaker", capabilities=io.AudioOutputCapabilities(pause=True),
                             next_in_chain=None, sample_rate=sample_rate)
            self.rate = sample_rate
            self.played: list[Played] = []
            self._frames: list[tuple[float, bytes]] = []  # this segment: (play time, pcm)
            self._ends_at = 0.0  # when the audio given so far has played
            self._pushed = 0.0
            self._paused_at: float | None = None
            self._interrupted = False
            self._changed = asyncio.Event()  # a pause, a resume or a clear
            self._flush_task: asyncio.Task[None] | None = None

        async def capture_frame(self, frame: Any) -> None:
            await super().capture_frame(frame)
            if self._flush_task is not None and not self._flush_task.done():
                await self._flush_task
            if not self._pushed:
                self._interrupted = False
                self.on_playback_started(created_at=time.time())
            # while paused the clock stands still at the pause; resume() moves it on
            now = self._paused_at if self._paused_at is not None else time.monotonic()
            at = max(now, self._ends_at)
            self._frames.append((at, bytes(frame.data)))
            self._ends_at = at + frame.duration
            self._pushed += frame.duration

        @property
        def playing(self) -> bool:
            """Audio given and not yet played out (or cut)."""
            return bool(self._pushed)

        def flush(self) -> None:
            super().flush()
            if self._pushed:
                self._flush_task = asyncio.ensure_future(self._play_out())

        def clear_buffer(self) -> None:
            if self._pushed:
                self._interrupted = True
                self._changed.set()

        def pause(self) -> None:
            super().pause()
            if self._paused_at is None:
                self._paused_at = time.monotonic()
                self._changed.set()

        def resume(self) -> None:
            super().resume()
            if self._paused_at is None:
                return
            paused_at, self._paused_at = self._paused_at, None
            delay = time.monotonic() - paused_at
            # what had not played at the pause plays that much later
            self._frames = [(at + delay if at >= paused_at else at, data) for at, data in self._frames]
            if self._ends_at > paused_at:
                self._ends_at += delay
            self._changed.set()

        async def _play_out(self) -> None:
            while not self._interrupted:
                self._changed.clear()
                if self._paused_at is None:
                    left = self._ends_at - time.monotonic()
                    if left <= 0:
                        break
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), left)
                else:
                    await self._changed.wait()
            interrupted = self._interrupted
            if not interrupted:
                cut = float("inf")
            else:
                cut = self._paused_at if self._paused_at is not None else time.monotonic()
            played = self.keep_played(cut, interrupted)
            # a pause outlives the segment: the device stays paused until livekit resumes it
            self._frames, self._pushed, self._ends_at = [], 0.0, 0.0
            self._interrupted = False
            self.on_playback_finished(playback_position=played, interrupted=interrupted)

        def keep_played(self, cut: float, interrupted: bool) -> float:
            """Record what played of this segment before ``cut`` as one stretch (a
            gap where the audio arrived later than it was due is silence in it)."""
            total = 0.0
            stretch: Played | None = None
            for at, data in self._frames:
                if at >= cut:
                    break
                seconds = len(data) / 2 / self.rate
                if at + seconds > cut:
                    data = data[:int((cut - at) * self.rate) * 2]
                    seconds = len(data) / 2 / self.rate
                if stretch is None:
                    stretch = Played(at)
                    self.played.append(stretch)
                offset = int(round((at - stretch.started) * self.rate)) * 2
                if offset > len(stretch.data):
                    stretch.data += b"\0" * (offset - len(stretch.data))
                stretch.data += data
                stretch.audio_seconds += seconds
                total += seconds
            if interrupted and stretch is not None:
                stretch.interrupted = True
            return total

        def audio_since(self, start: float) -> Pcm:
            """Everything played, placed on the clock from ``start`` (silence between)."""
            out = bytearray()
            for stretch in self.played:
                offset = int(max(0.0, stretch.started - start) * self.rate) * 2
                if offset > len(out):
                    out += b"\0" * (offset - len(out))
                out[offset:offset + len(stretch.data)] = stretch.data
            return Pcm(bytes(out), self.rate)

    return CallerAudio, SpeakerAudio


def _resample(data: bytes, from_rate: int, to_rate: int) -> bytes:
    from livekit import rtc

    resampler = rtc.AudioResampler(input_rate=from_rate, output_rate=to_rate, num_channels=1)
    out = bytearray()
    for frame in resampler.push(_audio_frame(data, from_rate)):
        out += bytes(frame.data)
    for frame in resampler.flush():
        out += bytes(frame.data)
    return bytes(out)
