"""The speech API fakes under one import: Deepgram (speech-to-text, prerecorded and
streaming) and Cartesia (text-to-speech, bytes and websocket). See ``deepgram.py``
and ``cartesia.py``."""

from __future__ import annotations

from .cartesia import FakeCartesia
from .deepgram import FakeDeepgram

__all__ = ["FakeCartesia", "FakeDeepgram"]
