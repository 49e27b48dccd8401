"""The page's microphone in a browser call's job (session/browser_audio.py)."""

from __future__ import annotations

import asyncio

from voice_runtime.session.browser_audio import VAD_WINDOW_SAMPLES, browser_mic


async def _heard(mic: object, frames: list[bytes]) -> list[bytes]:
    """What the session reads from ``mic`` after the page sent ``frames`` and hung up,
    and what it had read after each frame."""
    got: list[bytes] = []
    for pcm in frames:
        mic.push(pcm)  # type: ignore[attr-defined]
        while not mic._queue.empty():  # type: ignore[attr-defined]
            got.append(bytes((await mic.__anext__()).data))  # type: ignore[attr-defined]
    mic.close()  # type: ignore[attr-defined]
    got.extend([bytes(frame.data) async for frame in mic])  # type: ignore[attr-defined]
    return got


def test_a_browser_calls_mic_hands_on_the_pages_audio_whole_once_it_completes_a_vad_window() -> None:
    page = [bytes([n]) * 640 for n in range(1, 12)]  # eleven 20 ms messages at 16 kHz: 3,520 samples

    heard = asyncio.run(_heard(browser_mic(VAD_WINDOW_SAMPLES), page))

    assert b"".join(heard) == b"".join(page)  # every sample, in order, nothing added
    ends = [sum(len(f) // 2 for f in heard[:i + 1]) for i in range(len(heard))]
    # 320-sample messages, windows ending at 512, 1024, 1536, ...: handed on with the
    # message that completes one; what is held at the hang-up goes then
    assert ends == [640, 1280, 1600, 2240, 2560, 3200, 3520]
    assert all(end // VAD_WINDOW_SAMPLES > start // VAD_WINDOW_SAMPLES
               for start, end in zip([0, *ends], ends[:-1]))  # each but the last (the hang-up) completes a window


def test_without_a_window_the_mic_hands_on_each_message_as_it_came() -> None:
    page = [bytes([n]) * 640 for n in range(1, 5)]
    assert asyncio.run(_heard(browser_mic(), page)) == page


def test_a_mic_whose_job_fell_behind_keeps_the_last_second_of_windows_and_drops_the_oldest() -> None:
    mic = browser_mic(VAD_WINDOW_SAMPLES)
    page = [n.to_bytes(2, "little") * 512 for n in range(1, 101)]  # 100 windows of 32 ms, none read
    for pcm in page:
        mic.push(pcm)
    assert mic._queue.qsize() == 32  # 32 windows: about a second
    assert mic._queue.get_nowait() == page[-32]
