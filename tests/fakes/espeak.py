"""Real speech for tests: espeak-ng's voice as 16-bit mono PCM at any sample rate,
and the containers the speech APIs answer in (raw PCM, WAV, MP3).

The caller's speech in the voice tests and the audio the fake TTS servers send back
both come from here, so the VAD, the resamplers and the decoders see sound, not
silence. espeak-ng is a Debian package (`.ci/run` installs it).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import tempfile
import wave

import numpy as np

ESPEAK_RATE = 22050  # what espeak-ng writes


MISSING = "espeak-ng is not installed: apt-get install espeak-ng (.ci/run installs it)"


def require_espeak() -> None:
    """Fail with the package to install, never skip: a fake server that speaks calls
    this too, so its error names the cause instead of burying it in a traceback."""
    if shutil.which("espeak-ng") is None:
        raise AssertionError(MISSING)


@functools.lru_cache(maxsize=256)
def speak(text: str, sample_rate: int = 24000, *, words_per_minute: int = 190) -> bytes:
    """``text`` spoken by espeak-ng: int16 mono PCM at ``sample_rate``, with espeak's
    own short lead-in and tail of silence trimmed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "speech.wav")
        subprocess.run(["espeak-ng", "-s", str(words_per_minute), "-w", path, text],
                       check=True, capture_output=True, timeout=30)
        with wave.open(path, "rb") as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    loud = np.flatnonzero(np.abs(samples) > 300)
    if loud.size:
        samples = samples[max(0, loud[0] - rate // 100): loud[-1] + rate // 100]
    return resample(samples.tobytes(), rate, sample_rate)


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Linear interpolation: enough for a VAD and a speech detector."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    count = int(round(len(samples) * to_rate / from_rate))
    positions = np.arange(count) * (from_rate / to_rate)
    out = np.interp(positions, np.arange(len(samples)), samples)
    return np.clip(out, -32768, 32767).astype("<i2").tobytes()


def silence(seconds: float, sample_rate: int) -> bytes:
    return b"\0\0" * int(seconds * sample_rate)


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buf.getvalue()


def write_wav(path: str | os.PathLike[str], pcm: bytes, sample_rate: int) -> None:
    with open(path, "wb") as f:
        f.write(wav_bytes(pcm, sample_rate))


def mp3_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """MP3 through PyAV (livekit's own decoder dependency)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as container:
        stream = container.add_stream("mp3", rate=sample_rate)
        stream.layout = "mono"
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def f32_bytes(pcm: bytes) -> bytes:
    return (np.frombuffer(pcm, dtype="<i2").astype("<f4") / 32768.0).tobytes()


def speech_spans(pcm: bytes, sample_rate: int, *, threshold: float = 500.0, window_ms: int = 20,
                 gap_ms: int = 250) -> list[tuple[float, float]]:
    """Where ``pcm`` holds sound: (start, end) seconds of each run of loud windows,
    runs closer than ``gap_ms`` joined (the pauses between words)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    window = sample_rate * window_ms // 1000
    spans: list[tuple[float, float]] = []
    for i in range(0, len(samples) - window + 1, window):
        if np.sqrt(np.mean(samples[i:i + window] ** 2)) < threshold:
            continue
        start, end = i / sample_rate, (i + window) / sample_rate
        if spans and start - spans[-1][1] <= gap_ms / 1000:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans
