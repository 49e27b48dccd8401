"""Session hooks seen by an in-process plugin, from a real livekit session.

A text-only SessionRunner talks to the fake OpenAI chat server over HTTP and to the
recorder MCP server over stdio; a plugin object registered with
``make_plugin_manager(extra=[...])`` records every hook call it gets.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from fakes.openai_chat import FakeOpenAI
from fakes.openai_realtime import FakeRealtime
from mcp_servers.harness import read_records, stdio_command

import voice_runtime
from voice_runtime.session.runner import SessionRunner
from voice_runtime.plugins.manager import Plugins, make_plugin_manager
from voice_runtime.spec.loader import LoadedSpec, load_folder
from voice_runtime.observe.tool_calls import ToolCallRecord

AGENT = "hooks-weather"
SERVER = "weather"
QUESTION = "weather in Paris?"
TOOL_RESULT = "sunny in Paris"

pytestmark = pytest.mark.timeout(60)


class RecorderPlugin:
    """Records every session hook call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == hook]

    @voice_runtime.hookimpl
    def voice_runtime_session_started(self, agent: str, session_id: str, spec: Any, mode: str) -> None:
        self.calls.append(("started", {"agent": agent, "session_id": session_id, "spec": spec, "mode": mode}))

    @voice_runtime.hookimpl
    def voice_runtime_session_fallback(
        self, agent: str, session_id: str, from_mode: str, to_mode: str, reason: str
    ) -> None:
        self.calls.append(
            ("fallback", {"agent": agent, "session_id": session_id, "from_mode": from_mode,
                          "to_mode": to_mode, "reason": reason})
        )

    @voice_runtime.hookimpl
    def voice_runtime_session_ended(self, agent: str, session_id: str, reason: str) -> None:
        self.calls.append(("ended", {"agent": agent, "session_id": session_id, "reason": reason}))

    @voice_runtime.hookimpl
    def voice_runtime_tool_called(self, record: ToolCallRecord) -> None:
        self.calls.append(("tool_called", {"record": record}))


class BrokenExporter:
    """An exporter with a bug: its tool hook always raises."""

    def __init__(self) -> None:
        self.calls = 0

    @voice_runtime.hookimpl
    def voice_runtime_tool_called(self, record: ToolCallRecord) -> None:
        self.calls += 1
        raise RuntimeError("exporter is down")


@pytest.fixture
async def chat_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def realtime_fake() -> AsyncIterator[FakeRealtime]:
    async with FakeRealtime() as fake:
        yield fake


def load_agent(
    tmp_path: Path,
    chat_url: str,
    *,
    plugin_objects: list[object],
    realtime_url: str | None = None,
    with_mcp: bool = True,
) -> tuple[Plugins, LoadedSpec]:
    lines = [
        "apiVersion: voice-runtime/v1",
        f"name: {AGENT}",
        "instructions: You answer weather questions with the weather tool.",
    ]
    if realtime_url is not None:
        lines.append(
            f"realtime: {{provider: openai, base_url: {json.dumps(realtime_url)}, api_key: x,"
            " max_retry: 1, retry_interval: 0.1}"
        )
    lines += [
        "pipeline:",
        f"  llm: {{provider: openai, base_url: {json.dumps(chat_url)}, api_key: x}}",
        "  text_only: true",
    ]
    if with_mcp:
        command, args = stdio_command(record=tmp_path / "rec.jsonl")
        lines += [
            "mcp_servers:",
            f"  {SERVER}: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}",
        ]
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "weather.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plugins = make_plugin_manager(None, entry_points=False, extra=plugin_objects)
    assert plugins.errors == [], [str(e) for e in plugins.errors]
    result = load_folder(folder, plugins)
    assert result.errors == [], [str(e) for e in result.errors]
    return plugins, result.specs[0]


def tool_calls_metric(outcome: str = "ok") -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "voice_runtime_tool_calls_total",
        {"agent": AGENT, "server": SERVER, "tool": "get_weather", "outcome": outcome},
    )
    return value or 0.0


def events_of(result: Any, type_name: str) -> list[Any]:
    return [ev.item for ev in result.events if type(ev).__name__ == type_name]


def final_reply(result: Any) -> str:
    messages = [m for m in events_of(result, "ChatMessageEvent") if m.role == "assistant"]
    assert messages, f"no assistant message in {result.events!r}"
    return messages[-1].text_content or ""


@dataclass
class WeatherTurn:
    """What one finished session with one tool-using turn left behind."""

    runner: SessionRunner
    loaded: LoadedSpec
    recorder: RecorderPlugin
    result: Any
    calls_before_close: list[tuple[str, dict[str, Any]]]
    metric_before: float
    record_file: Path


@pytest.fixture
async def weather_turn(tmp_path: Path, chat_fake: FakeOpenAI) -> WeatherTurn:
    chat_fake.use_tool_then_answer("get_weather", {"city": "Paris"})
    recorder = RecorderPlugin()
    plugins, loaded = load_agent(tmp_path, chat_fake.base_url, plugin_objects=[recorder])
    metric_before = tool_calls_metric()
    runner = SessionRunner(loaded, plugins, text_only=True)
    try:
        await runner.start()
        result = await runner.run_turn(QUESTION)
        calls_before_close = list(recorder.calls)
    finally:
        await runner.aclose()
    return WeatherTurn(runner, loaded, recorder, result, calls_before_close, metric_before, tmp_path / "rec.jsonl")


# -- lifecycle hooks ---------------------------------------------------------------------


async def test_session_started_hook_gets_agent_session_id_spec_and_pipeline_mode(weather_turn: WeatherTurn) -> None:
    started = weather_turn.recorder.of("started")

    assert len(started) == 1
    assert started[0]["agent"] == AGENT
    assert started[0]["session_id"] == weather_turn.runner.session_id
    assert started[0]["mode"] == "pipeline"
    assert started[0]["spec"] is weather_turn.loaded.spec
    assert weather_turn.recorder.calls[0][0] == "started"


async def test_session_ended_hook_fires_once_on_close_with_the_same_session_id(weather_turn: WeatherTurn) -> None:
    assert [name for name, _ in weather_turn.calls_before_close if name == "ended"] == []

    ended = weather_turn.recorder.of("ended")

    assert len(ended) == 1
    assert ended[0]["agent"] == AGENT
    assert ended[0]["session_id"] == weather_turn.runner.session_id
    assert ended[0]["reason"] == "user_initiated"
    assert weather_turn.recorder.calls[-1][0] == "ended"


# -- tool calls --------------------------------------------------------------------------


async def test_tool_called_hook_gets_a_record_of_the_mcp_call(weather_turn: WeatherTurn) -> None:
    records = [kwargs["record"] for kwargs in weather_turn.recorder.of("tool_called")]

    assert len(records) == 1
    record = records[0]
    assert isinstance(record, ToolCallRecord)
    assert (record.agent, record.session_id) == (AGENT, weather_turn.runner.session_id)
    assert (record.server, record.tool, record.exposed_name) == (SERVER, "get_weather", "get_weather")
    assert record.outcome == "ok"
    assert record.error is None
    assert record.latency_ms > 0
    assert record.result_chars == len(TOOL_RESULT)
    assert re.fullmatch(r"[0-9a-f]{16}", record.args_digest)
    canonical = json.dumps({"city": "Paris"}, sort_keys=True, separators=(",", ":"))
    assert record.args_digest == hashlib.sha256(canonical.encode()).hexdigest()[:16]


async def test_tool_call_record_holds_no_argument_values(weather_turn: WeatherTurn) -> None:
    (kwargs,) = weather_turn.recorder.of("tool_called")
    record = kwargs["record"]

    strings = {f.name: getattr(record, f.name) for f in fields(record) if isinstance(getattr(record, f.name), str)}
    leaking = {name: value for name, value in strings.items() if "Paris" in value}
    assert leaking == {}
    assert "Paris" not in json.dumps(record.as_dict(), default=str)


async def test_the_turn_runs_the_mcp_tool_with_the_models_arguments_and_answers_with_its_result(
    weather_turn: WeatherTurn, chat_fake: FakeOpenAI
) -> None:
    calls = read_records(weather_turn.record_file)
    assert [(c["tool"], c["args"]) for c in calls] == [("get_weather", {"city": "Paris"})]

    (output,) = events_of(weather_turn.result, "FunctionCallOutputEvent")
    assert (output.name, output.output, output.is_error) == ("get_weather", TOOL_RESULT, False)
    assert final_reply(weather_turn.result) == f"Result: {TOOL_RESULT}"
    assert len(chat_fake.chat_requests) == 2  # the tool call, then the answer


async def test_tool_call_counter_goes_up_by_one_for_the_call(weather_turn: WeatherTurn) -> None:
    assert tool_calls_metric() == weather_turn.metric_before + 1
    assert tool_calls_metric("error") == 0.0


async def test_a_raising_tool_called_hook_does_not_break_the_tool_call(
    tmp_path: Path, chat_fake: FakeOpenAI
) -> None:
    chat_fake.use_tool_then_answer("get_weather", {"city": "Paris"})
    broken, recorder = BrokenExporter(), RecorderPlugin()
    # pluggy calls the last registered first: the recorder runs before the broken one
    plugins, loaded = load_agent(tmp_path, chat_fake.base_url, plugin_objects=[broken, recorder])
    metric_before = tool_calls_metric()
    runner = SessionRunner(loaded, plugins, text_only=True)
    try:
        await runner.start()
        result = await runner.run_turn(QUESTION)
    finally:
        await runner.aclose()

    assert broken.calls == 1
    (output,) = events_of(result, "FunctionCallOutputEvent")
    assert (output.output, output.is_error) == (TOOL_RESULT, False)
    assert final_reply(result) == f"Result: {TOOL_RESULT}"
    assert [k["record"].outcome for k in recorder.of("tool_called")] == ["ok"]
    assert tool_calls_metric() == metric_before + 1
    assert len(recorder.of("ended")) == 1


async def test_a_raising_tool_called_hook_does_not_hide_the_record_from_other_plugins(
    tmp_path: Path, chat_fake: FakeOpenAI
) -> None:
    chat_fake.use_tool_then_answer("get_weather", {"city": "Paris"})
    recorder, broken = RecorderPlugin(), BrokenExporter()
    # registered last, the broken exporter is called first
    plugins, loaded = load_agent(tmp_path, chat_fake.base_url, plugin_objects=[recorder, broken])
    runner = SessionRunner(loaded, plugins, text_only=True)
    try:
        await runner.start()
        result = await runner.run_turn(QUESTION)
    finally:
        await runner.aclose()

    assert final_reply(result) == f"Result: {TOOL_RESULT}"
    assert broken.calls == 1
    assert [k["record"].outcome for k in recorder.of("tool_called")] == ["ok"]


# -- realtime -> pipeline fallback -------------------------------------------------------


async def test_realtime_connection_failure_falls_back_to_the_pipeline_and_tells_plugins(
    tmp_path: Path, chat_fake: FakeOpenAI, realtime_fake: FakeRealtime
) -> None:
    realtime_fake.refuse_connections = True
    recorder = RecorderPlugin()
    plugins, loaded = load_agent(
        tmp_path, chat_fake.base_url, plugin_objects=[recorder],
        realtime_url=realtime_fake.base_url, with_mcp=False,
    )
    runner = SessionRunner(loaded, plugins, text_only=True)
    try:
        await runner.start()
        assert [k["mode"] for k in recorder.of("started")] == ["realtime"]
        result = await runner.run_turn("hello")
        mode_after_turn = runner.mode
    finally:
        await runner.aclose()

    (fallback,) = recorder.of("fallback")
    assert fallback["agent"] == AGENT
    assert fallback["session_id"] == runner.session_id
    assert (fallback["from_mode"], fallback["to_mode"]) == ("realtime", "pipeline")
    assert "APIConnectionError" in fallback["reason"]
    assert "503" in fallback["reason"]
    assert mode_after_turn == "pipeline"
    assert runner.switched.is_set()
    # the realtime model never got through; the chat model answered the turn, once
    assert realtime_fake.handshakes and realtime_fake.connection_count == 0
    assert final_reply(result) == "echo: hello"
    (request,) = chat_fake.chat_requests
    assert [m["content"] for m in request["messages"] if m["role"] == "user"] == ["hello"]
    assert [name for name, _ in recorder.calls] == ["started", "fallback", "ended"]
