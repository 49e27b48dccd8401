"""`voice-runtime chat`: a text conversation with one agent, no LiveKit server, no
audio. Every tool call is shown as it happens, with its result and latency."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from .terminal import printable

if TYPE_CHECKING:
    from .build import SessionRunner

RESULT_PREVIEW = 200


class ChatPrinter:
    """Turns session events into lines for a person (text) or a script (JSON)."""

    def __init__(self, agent: str, *, as_json: bool, out: TextIO = sys.stdout, echo_user: bool = False) -> None:
        self.agent = agent
        self.as_json = as_json
        self.out = out
        self.echo_user = echo_user
        self.errors = 0

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.as_json:  # json.dumps escapes control characters (ensure_ascii)
            self.out.write(json.dumps({"type": event, **data}, default=str) + "\n")
        else:
            # tool results, replies repeating them, server errors: not the terminal's commands
            self.out.write(printable(self._text(event, data), lines=True) + "\n")
        self.out.flush()

    def _text(self, event: str, data: dict[str, Any]) -> str:
        if event == "user":
            return f"you> {data['text']}"
        if event == "reply":
            return f"{self.agent}> {data['text']}"
        if event == "tool_call":
            return f"  -> {data['server']}: {data['tool']} {json.dumps(data['arguments'], default=str)}"
        if event == "tool_result":
            result = data["result"].replace("\n", " ")
            if len(result) > RESULT_PREVIEW:
                result = result[:RESULT_PREVIEW] + "..."
            return f"  <- {data['tool']} {data['outcome']} in {data['latency_ms']:.1f} ms: {result}"
        if event == "filler":
            why = "timed out" if data["kind"] == "timeout" else "is still running"
            return f"  .. {data['tool']} {why}: {self.agent}> {data['text']}"
        if event == "error":
            return f"error: {data['message']}"
        if event == "fallback":
            return f"  (switched from {data['from']} to {data['to']}: {data['reason']})"
        return f"  ({event}: {data.get('message', data)})"

    def user(self, text: str) -> None:
        if self.as_json or self.echo_user:
            self("user", {"text": text})

    def error(self, message: str) -> None:
        self.errors += 1
        self("error", {"message": message})


async def _lines(stdin: TextIO, prompt: str | None, out: TextIO) -> Any:
    loop = asyncio.get_running_loop()
    while True:
        if prompt is not None:
            out.write(prompt)
            out.flush()
        line = await loop.run_in_executor(None, stdin.readline)
        if not line:
            return
        line = line.strip()
        if line:
            yield line


async def run_chat(runner: SessionRunner, printer: ChatPrinter, stdin: TextIO = sys.stdin) -> int:
    from .build import SessionRefused

    runner.listeners.append(printer)
    try:
        await runner.start()
    except SessionRefused as exc:
        printer.error(str(exc))
        return 1
    except Exception as exc:  # a provider that cannot be built (missing key...)
        printer.error(f"agent {runner.name} could not start: {type(exc).__name__}: {exc}")
        return 1
    try:
        if runner.loaded.spec.greeting:
            printer("reply", {"text": runner.loaded.spec.greeting, "greeting": True})
        interactive = stdin.isatty() and not printer.as_json
        async for line in _lines(stdin, "you> " if interactive else None, printer.out):
            printer.user(line)
            try:
                result = await runner.run_turn(line)
            except Exception as exc:  # the conversation goes on after a failed turn
                printer.error(f"{type(exc).__name__}: {exc}")
                continue
            for event in result.events:
                item = getattr(event, "item", None)
                if getattr(event, "type", "") == "message" and getattr(item, "role", "") == "assistant":
                    text = item.text_content or ""
                    if text:
                        printer("reply", {"text": text})
    finally:
        await runner.aclose()
    return 1 if printer.errors else 0
