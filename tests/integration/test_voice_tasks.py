"""A tool run as an MCP task, by voice (espeak-ng caller audio, silero, the speech
fakes, tests/mcp_servers/tasks.py): the server's status lines are spoken while it
runs, and the caller speaking over one cancels the task on the server."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes.openai_chat import text, tool_call
from voice_harness import Fakes, VoiceCall, pipeline_spec

pytestmark = [
    pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng"),
    pytest.mark.timeout(90),
]

TASKS = Path(__file__).resolve().parents[1] / "mcp_servers" / "tasks.py"


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    started = await Fakes().start()
    yield started
    await started.stop()


async def test_the_caller_speaking_over_a_tasks_status_line_cancels_the_task_on_the_server(
    tmp_path: Path, fakes: Fakes
) -> None:
    record = tmp_path / "tasks.jsonl"
    block = {"command": sys.executable, "args": [str(TASKS), "--record", str(record)],
             "filler": {"after_ms": 300, "say": ["Let me look into that for you, it takes a little while."],
                        "say_progress": True}}
    fakes.deepgram.say("Research the tides.", "Never mind.")
    fakes.chat.enqueue(tool_call("research", {"topic": "tides", "seconds": 20}), text("Okay."))
    spec = pipeline_spec(fakes, extra=f"mcp_servers:\n  research: {json.dumps(block)}\n").replace(
        "  turn_detection: vad\n", "  turn_detection: vad\n  interrupt_after_ms: 250\n")
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        await call.say("Research the tides.")
        await call.wait_for(lambda: call.event_times("filler") and call.speaker.playing, what="a status line playing")
        [(_, first)] = call.event_times("filler")[:1]
        assert (first["kind"], first["text"]) == ("progress", "Step 1 of 66")
        await call.say("Never mind.")
        await call.wait_for(lambda: call.event_times("tool_result"), what="the tool call to end")
        [(_, result)] = call.event_times("tool_result")
        assert result["outcome"] == "cancelled"

        def methods() -> list[str]:
            return [json.loads(line)["method"] for line in record.read_text().splitlines()]

        await call.wait_for(lambda: "tasks/cancel" in methods(), what="the server to get tasks/cancel")
        assert methods()[0] == "tools/call" and "tasks/result" not in methods()
    finally:
        await call.aclose()
