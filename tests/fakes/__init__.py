"""Fakes of remote APIs, served on 127.0.0.1 so the real clients talk to them."""

from .openai_chat import FakeOpenAI, delay, error, hang, text, tool_call, tool_calls
from .openai_realtime import FakeRealtime

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
