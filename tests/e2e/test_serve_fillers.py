"""Filler speech in a real `serve` job (process executor): a slow tool's filler line is
said by the agent in the job process, is part of what the call's report says the agent
said, and is counted on serve's /metrics."""

from __future__ import annotations

import json
from pathlib import Path

from fakes.openai_chat import FakeOpenAI
from helpers import write
from mcp_servers.harness import read_records, stdio_command
from serve_harness import Serve, spec

METRIC = 'voice_runtime_tool_fillers_total{agent="desk",server="booking",tool="sleep"}'


def test_a_serve_jobs_slow_tool_says_its_filler_and_serve_counts_it(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    command, args = stdio_command(record=record, name="booking")
    server = {"command": command, "args": args, "filler": {"after_ms": 300, "say": ["One moment please."]}}
    write(agents / "desk.yaml", spec("You are the desk.", fake_openai.base_url)
          + f"mcp_servers:\n  booking: {json.dumps(server)}\n")
    fake_openai.use_tool_then_answer("sleep", {"seconds": 1})
    with Serve(agents) as serve:
        serve.wait_ready()
        code, report = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["is my room booked?"], "wait": True}).encode(), timeout=90)
        assert code == 200, report
        [turn] = report["turns"]
        assert turn["reply"] == "One moment please. Result: slept"
        assert [(c["tool"], c["outcome"]) for c in turn["tool_calls"]] == [("sleep", "ok")]
        assert [r["tool"] for r in read_records(record)] == ["sleep"]
        serve.wait_for(lambda: serve.metric(METRIC) == 1.0, message="the filler in /metrics")
