"""The remote APIs of `concurrent_calls.py`, in a process of their own so their CPU
is counted apart from what is measured: the fake Deepgram (hears
``UTTERANCE`` in every utterance), the fake OpenAI chat (``echo: <heard>``, and on
every other turn of a call first a call of the MCP ``echo`` tool, then
``Result: <its output>``) and the fake Cartesia (espeak-ng speech, rendered before
the first call so a turn costs them a cache lookup).

    python benchmarks/_call_fakes.py     # prints one JSON line of URLs, then serves until SIGTERM
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import _common  # noqa: F401 - puts tests/ on sys.path

TOOL_ARGUMENT = "a room for tonight"


def every_other_turn(request: dict[str, Any]) -> Any:
    """The chat script: a tool call on even turns of a call (counted by the caller's
    messages in the conversation), its result spoken; an echo on odd turns."""
    from fakes.openai_chat import _content_text, echo_script, text, tool_call

    messages = request.get("messages") or []
    for msg in reversed(messages):
        if msg.get("role") == "user":
            break
        if msg.get("role") == "tool":
            return text(f"Result: {_content_text(msg.get('content'))}")
    turns = sum(1 for msg in messages if msg.get("role") == "user")
    return tool_call("echo", {"text": TOOL_ARGUMENT}) if turns % 2 == 0 else echo_script(request)


def prerender(utterance: str) -> None:
    """What the fake TTS will be asked to say, in espeak's cache (whole replies and
    the pieces livekit's sentence tokenizer sends)."""
    from fakes import espeak

    for reply in (f"echo: {utterance}", f"Result: {TOOL_ARGUMENT}"):
        for piece in (reply, *reply.split(": ", 1)):
            for rate in (16000, 24000):
                espeak.speak(piece.strip(), rate)


async def main(utterance: str) -> None:
    from fakes.cartesia import FakeCartesia
    from fakes.deepgram import FakeDeepgram
    from fakes.openai_chat import FakeOpenAI

    prerender(utterance)
    chat, deepgram, cartesia = FakeOpenAI(every_other_turn), FakeDeepgram(utterance), FakeCartesia()
    for fake in (chat, deepgram, cartesia):
        await fake.start()
    print(json.dumps({"llm": chat.base_url, "stt": deepgram.listen_url, "tts": cartesia.root_url}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    while not stop.is_set():
        # what each fake records per request would grow for the whole run
        for fake in (chat, deepgram, cartesia):
            for name in ("requests", "messages", "heard", "spoken"):
                got = getattr(fake, name, None)
                if isinstance(got, list):
                    got.clear()
        try:
            await asyncio.wait_for(stop.wait(), 5.0)
        except TimeoutError:
            pass
    for fake in (chat, deepgram, cartesia):
        await fake.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
