"""How the speech-to-text fakes (Deepgram streaming, the realtime model's server VAD)
hear the caller: energy over 20 ms windows of 16-bit PCM, an utterance once enough
loud windows came in a row, its end after ``end_silence_ms`` of quiet."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW_MS = 20


@dataclass(frozen=True)
class Heard:
    """Something about the caller's speech, at a position (seconds) of the audio."""

    kind: str  # "started" or "ended"
    start: float
    end: float = 0.0


class Listener:
    def __init__(self, rate: int, *, threshold: float = 500.0, end_silence_ms: int = 400,
                 loud_windows: int = 1) -> None:
        self.rate, self.threshold, self.end_silence_ms = rate, threshold, end_silence_ms
        self.loud_windows = loud_windows  # in a row before an utterance starts
        self.samples = 0  # received so far
        self._pending = b""
        self._loud_run = 0
        self.start: float | None = None  # of the utterance under way
        self.end = 0.0  # of its last loud window

    @property
    def position(self) -> float:
        return self.samples / self.rate

    def feed(self, pcm: bytes) -> list[Heard]:
        data = self._pending + pcm
        window = self.rate * WINDOW_MS // 1000 * 2
        usable = len(data) - len(data) % window
        self._pending = data[usable:]
        heard: list[Heard] = []
        for i in range(0, usable, window):
            samples = np.frombuffer(data[i:i + window], dtype="<i2").astype(np.float32)
            self.samples += window // 2
            if float(np.sqrt(np.mean(samples ** 2))) >= self.threshold:
                self._loud_run += 1
                self.end = self.position
                if self.start is None and self._loud_run >= self.loud_windows:
                    self.start = self.position - self._loud_run * WINDOW_MS / 1000
                    heard.append(Heard("started", self.start))
            else:
                self._loud_run = 0
                if self.start is not None and self.position - self.end >= self.end_silence_ms / 1000:
                    heard.append(self.take())
        return heard

    def take(self) -> Heard:
        """End the utterance under way now (a Finalize, a commit): what it spanned."""
        assert self.start is not None
        ended = Heard("ended", self.start, self.end)
        self.start = None
        return ended
