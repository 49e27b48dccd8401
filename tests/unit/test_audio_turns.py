"""A recording of the caller -> their turns (`chat --audio-in`): split at pauses of 1 s
or more, shorter pauses (between words, sentences) stay inside a turn."""

from __future__ import annotations

import pytest
from fakes import espeak

from voice_runtime.session.audio_io import Pcm, speech_turns

pytestmark = pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng")
RATE = 16000


def test_a_pause_of_a_second_or_more_separates_turns_and_a_shorter_one_does_not() -> None:
    first, second = espeak.speak("What is the weather in Paris?", RATE), espeak.speak("Thank you.", RATE)
    recording = (espeak.silence(0.5, RATE) + first + espeak.silence(1.2, RATE) + second
                 + espeak.silence(0.4, RATE) + first + espeak.silence(0.3, RATE))

    turns = speech_turns(Pcm(recording, RATE))

    assert len(turns) == 2
    # each turn holds its speech, with at most a little of the quiet around it
    assert turns[0].seconds == pytest.approx(len(first) / 2 / RATE, abs=0.25)
    assert turns[1].seconds == pytest.approx((len(second) + len(first)) / 2 / RATE + 0.4, abs=0.25)


def test_silence_alone_is_no_turn() -> None:
    assert speech_turns(Pcm(espeak.silence(3.0, RATE), RATE)) == []
