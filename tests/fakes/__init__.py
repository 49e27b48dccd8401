"""Fakes of remote APIs, served on 127.0.0.1 so the real clients talk to them.

The names are imported on first use, so that ``python -m tests.fakes.<name>`` runs a
module that the package has not imported already."""

from __future__ import annotations

from typing import Any

__all__ = [
    "FakeOpenAI",
    "FakeRealtime",
    "delay",
    "error",
    "hang",
    "text",
    "tool_call",
    "tool_calls",
]


def __getattr__(name: str) -> Any:
    if name == "FakeRealtime":
        from .openai_realtime import FakeRealtime

        return FakeRealtime
    if name in __all__:
        from . import openai_chat

        return getattr(openai_chat, name)
    raise AttributeError(name)
