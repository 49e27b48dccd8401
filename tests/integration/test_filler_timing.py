"""Filler timing in a text session (the real SessionRunner, livekit session and openai
plugin against the fake; the recorder MCP server over stdio): lines come in turn, at
most every `every_ms`, and stop when the result is in."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fakes.openai_chat import FakeOpenAI
from mcp_servers.harness import stdio_command

from voice_runtime.session.runner import SessionRunner
from voice_runtime.plugins.manager import make_plugin_manager
from voice_runtime.spec.loader import load_folder


async def test_filler_lines_repeat_in_turn_at_most_every_every_ms_until_the_result_is_in(tmp_path: Path) -> None:
    command, args = stdio_command(record=tmp_path / "calls.jsonl")
    server = {"command": command, "args": args,
              "filler": {"after_ms": 200, "every_ms": 500, "say": ["One moment.", "Still looking."]}}
    async with FakeOpenAI() as fake:
        fake.use_tool_then_answer("sleep", {"seconds": 1.6})
        (tmp_path / "agents").mkdir()
        (tmp_path / "agents" / "desk.yaml").write_text(
            "apiVersion: voice-runtime/v1\ninstructions: x\n"
            f"pipeline: {{llm: {{provider: openai, base_url: '{fake.base_url}', api_key: k}}, text_only: true}}\n"
            f"mcp_servers:\n  booking: {json.dumps(server)}\n")
        plugins = make_plugin_manager(None)
        loaded = load_folder(tmp_path / "agents", plugins).specs[0]
        events: list[tuple[float, str, dict[str, Any]]] = []
        runner = SessionRunner(loaded, plugins, text_only=True,
                               listeners=[lambda e, d: events.append((time.monotonic(), e, d))])
        await runner.start()
        try:
            result = await runner.run_turn("is it booked?")
        finally:
            await runner.aclose()

    [called] = [t for t, e, _ in events if e == "tool_call"]
    [returned] = [t for t, e, _ in events if e == "tool_result"]
    fillers = [(t, d["text"]) for t, e, d in events if e == "filler"]
    lines = [text for _, text in fillers]
    assert len(lines) >= 2 and lines == [("One moment.", "Still looking.")[i % 2] for i in range(len(lines))], fillers
    starts = [t for t, _ in fillers]
    assert starts[0] - called >= 0.2
    # every_ms counts from the moment a line is handed to the session; the listener stamps it a
    # little later, by however long a loaded machine delays that line's event (9 ms short seen
    # at load 11). A line repeated every after_ms (0.2 s), every_ms ignored, stays caught.
    assert all(b - a >= 0.5 - 0.1 for a, b in zip(starts, starts[1:])), fillers
    assert starts[-1] < returned  # none after the result
    said = [e.item.text_content for e in result.events if getattr(e, "type", "") == "message"]
    assert said[-1] == "Result: slept"
