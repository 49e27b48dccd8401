"""A browser's microphone and loudspeaker as livekit's ``io.AudioInput`` and
``io.AudioOutput``, for a call of ``serve``'s /talk page (talk.py, talk_job.py).

The page sends 16-bit PCM at 16 kHz in 10 ms messages over a WebSocket to serve;
serve relays them, unread, over a unix socket to the call's job process, and the
agent's audio (16-bit PCM at 24 kHz) the other way. Both hops carry the same
frames: one byte of kind (``A`` audio, ``J`` a JSON message), four bytes of
length, the payload.

- ``BrowserMic`` yields the page's frames as they arrive: the browser is the
  clock, as a room's remote track is (no pacing here, no queue beyond a second:
  when the job falls behind, the oldest audio goes). A call's job gives it the VAD's
  window: it then hands the audio on once it completes a window (fewer frames
  through livekit's pipeline; benchmarks/README.md, "CPU per call").
- ``BrowserSpeaker`` is ``audio_io.SpeakerAudio`` (playback on the wall clock,
  barge-in cuts it where playback is, pause and resume as a room's output) that
  also sends each frame to the page and tells it to drop what it holds on a
  barge-in and to pause or resume; it keeps no recording (a call may be long).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from typing import Any

INPUT_RATE = 16000  # what the page sends
OUTPUT_RATE = 24000  # what the page plays (livekit resamples the TTS to it)
AUDIO, MESSAGE = b"A", b"J"
MAX_FRAME_BYTES = 256 * 1024  # a JSON event with a long tool result; audio frames are far smaller
MIC_QUEUE_FRAMES = 100  # 1 s of 10 ms frames


class FrameError(Exception):
    """The other end sent something that is not a frame."""


def frame(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """The next (kind, payload), or None at the end of the stream."""
    try:
        head = await reader.readexactly(5)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("the stream ended inside a frame header") from None
        return None
    kind, size = head[:1], int.from_bytes(head[1:], "big")
    if kind not in (AUDIO, MESSAGE) or size > MAX_FRAME_BYTES:
        raise FrameError(f"not a frame (kind {kind!r}, {size} bytes)")
    try:
        return kind, await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameError("the stream ended inside a frame") from None


class BrowserLink:
    """The job's end of the unix socket to serve: frames out, in order, with
    backpressure (a page that stops reading slows the agent's sends, it does not
    grow memory here)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed = False

    async def send(self, kind: bytes, payload: bytes) -> None:
        if self.closed:
            return
        try:
            self.writer.write(frame(kind, payload))
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            self.closed = True  # the page is gone; the call is ending

    def post(self, message: dict[str, Any]) -> None:
        """A JSON message, sent in the background (from synchronous event handlers)."""
        if not self.closed:
            task = asyncio.ensure_future(self.send(MESSAGE, json.dumps(message, default=str).encode()))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def aclose(self) -> None:
        self.closed = True
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# silero's window: 512 samples at 16 kHz (256 at 8 kHz, the same 32 ms of the page's audio)
VAD_WINDOW_SAMPLES = 512


def browser_mic(window: int | None = None) -> Any:
    """The page's microphone; with ``window`` (samples), its frames are handed on only
    when they complete such a window (see BrowserMic.push)."""
    return _classes()[0](window)


def browser_speaker(link: BrowserLink) -> Any:
    return _classes()[1](link)


@functools.cache  # built once, on first use: livekit is imported lazily
def _classes() -> tuple[type, type]:
    from livekit import rtc
    from livekit.agents.voice import io

    from .audio_io import _classes as audio_io_classes

    SpeakerAudio = audio_io_classes()[1]

    class BrowserMic(io.AudioInput):  # type: ignore[misc]
        """The page's microphone: frames as they arrive; the end when the call ends."""

        def __init__(self, window: int | None = None) -> None:
            super().__init__(label="voice-runtime browser microphone")
            # a second of audio either way: 100 messages of 10 ms, or 32 windows of 32 ms
            size = -(-INPUT_RATE // window) if window else MIC_QUEUE_FRAMES
            self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
            self._window = window
            self._held = bytearray()
            self._samples = 0

        def push(self, pcm: bytes) -> None:
            if len(pcm) < 2 or len(pcm) % 2:
                return  # not 16-bit samples: nothing a microphone sends
            if self._window:
                # livekit passes every frame through several tasks (VAD, STT, turn
                # handling): ~1.4 ms of a job's CPU per frame. The VAD acts once a
                # window is complete, so frames are held until the audio completes the
                # next window: the VAD infers at the same moments on the same audio, the
                # STT (which sends 50 ms chunks) gets its audio up to one window later
                windows = self._samples // self._window
                self._samples += len(pcm) // 2
                self._held += pcm
                if self._samples // self._window == windows:
                    return
                pcm, self._held = bytes(self._held), bytearray()
            self._put(pcm)

        def _put(self, pcm: bytes | None) -> None:
            if self._queue.full():
                self._queue.get_nowait()  # the job fell behind: the oldest audio goes
            self._queue.put_nowait(pcm)

        def close(self) -> None:
            if self._held:
                self._put(bytes(self._held))
                self._held.clear()
            self._put(None)

        async def __anext__(self) -> Any:
            pcm = await self._queue.get()
            if pcm is None:
                self._queue.put_nowait(None)  # every later read ends too
                raise StopAsyncIteration
            return rtc.AudioFrame(data=pcm, sample_rate=INPUT_RATE, num_channels=1,
                                  samples_per_channel=len(pcm) // 2)

    class BrowserSpeaker(SpeakerAudio):  # type: ignore[misc,valid-type]
        """SpeakerAudio whose frames also go to the page."""

        def __init__(self, link: BrowserLink) -> None:
            super().__init__(OUTPUT_RATE)
            self.link = link

        async def capture_frame(self, frame: Any) -> None:
            await super().capture_frame(frame)
            await self.link.send(AUDIO, bytes(frame.data))

        def clear_buffer(self) -> None:
            if self.playing:
                self.link.post({"type": "audio", "action": "clear"})
            super().clear_buffer()

        def pause(self) -> None:
            super().pause()
            self.link.post({"type": "audio", "action": "pause"})

        def resume(self) -> None:
            super().resume()
            self.link.post({"type": "audio", "action": "resume"})

        def keep_played(self, cut: float, interrupted: bool) -> float:
            played = super().keep_played(cut, interrupted)
            self.played.clear()  # how long it played is all the call needs; no recording
            return played

    return BrowserMic, BrowserSpeaker
