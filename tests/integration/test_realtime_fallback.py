"""Realtime with pipeline fallback: livekit has no built-in for it, voice-runtime does.

The real openai RealtimeModel talks to a fake realtime websocket server; the pipeline's
real openai.LLM talks to a fake chat-completions server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_chat import FakeOpenAI
from fakes.openai_realtime import FakeRealtime

from voice_runtime.session.runner import SessionRunner
from voice_runtime.plugins.manager import make_plugin_manager
from voice_runtime.spec.loader import load_folder


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeRealtime]]:
    chat, realtime = FakeOpenAI(), FakeRealtime()
    await chat.start()
    await realtime.start()
    yield chat, realtime
    await chat.stop()
    await realtime.stop()


async def start_runner(tmp_path: Path, chat: FakeOpenAI, realtime: FakeRealtime) -> tuple[SessionRunner, list[Any]]:
    (tmp_path / "frontdesk.yaml").write_text(
        "apiVersion: voice-runtime/v1\n"
        "instructions: You are the front desk.\n"
        "realtime:\n"
        f"  {{provider: openai, base_url: '{realtime.base_url}', api_key: x, max_retry: 1, retry_interval: 0.1}}\n"
        "pipeline:\n"
        f"  llm: {{provider: openai, base_url: '{chat.base_url}', api_key: x}}\n"
        "  text_only: true\n"
    )
    plugins = make_plugin_manager(None)
    result = load_folder(tmp_path, plugins)
    assert result.ok, result.errors
    seen: list[Any] = []
    runner = SessionRunner(result.specs[0], plugins, text_only=True, listeners=[lambda e, d: seen.append((e, d))])
    await runner.start()
    return runner, seen


def replies(result: Any) -> list[str]:
    return [e.item.text_content for e in result.events if getattr(e, "type", "") == "message"]


async def test_a_realtime_model_that_refuses_connections_is_replaced_by_the_pipeline(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeRealtime]
) -> None:
    chat, realtime = fakes
    realtime.refuse_connections = True
    runner, seen = await start_runner(tmp_path, chat, realtime)
    try:
        result = await runner.run_turn("Do you have a room tonight?")
        assert runner.mode == "pipeline"
        assert replies(result) == ["echo: Do you have a room tonight?"]
        assert len(chat.chat_requests) == 1
        fallback = [d for e, d in seen if e == "fallback"]
        assert len(fallback) == 1 and fallback[0]["from"] == "realtime" and fallback[0]["to"] == "pipeline"
        assert "503" in fallback[0]["reason"]
        # and the conversation goes on on the pipeline
        result = await runner.run_turn("And tomorrow?")
        assert replies(result) == ["echo: And tomorrow?"]
    finally:
        await runner.aclose()


async def test_a_realtime_connection_dropped_mid_session_continues_on_the_pipeline_with_history(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeRealtime]
) -> None:
    chat, realtime = fakes
    runner, seen = await start_runner(tmp_path, chat, realtime)
    try:
        first = await runner.run_turn("My name is Ada.")
        assert runner.mode == "realtime" and replies(first) == ["echo: My name is Ada."]
        assert chat.chat_requests == []  # the realtime model answered the first turn

        realtime.refuse_connections = True  # it will not come back
        await realtime.drop_all()
        for _ in range(100):
            if runner.switched.is_set():
                break
            await asyncio.sleep(0.05)

        second = await runner.run_turn("What is my name?")
        assert runner.mode == "pipeline"
        assert replies(second) == ["echo: What is my name?"]
        messages = [(m["role"], m.get("content")) for m in chat.chat_requests[-1]["messages"]]
        # the pipeline LLM saw the whole conversation, including the realtime turn
        assert messages == [
            ("system", "You are the front desk."),
            ("user", "My name is Ada."),
            ("assistant", "echo: My name is Ada."),
            ("user", "What is my name?"),
        ]
        assert [e for e, _ in seen].count("fallback") == 1
    finally:
        await runner.aclose()


async def test_a_healthy_realtime_model_is_used_and_the_pipeline_stays_idle(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeRealtime]
) -> None:
    chat, realtime = fakes
    runner, seen = await start_runner(tmp_path, chat, realtime)
    try:
        result = await runner.run_turn("Hello")
        assert replies(result) == ["echo: Hello"]
        assert runner.mode == "realtime" and chat.chat_requests == [] and seen == []
        assert realtime.connection_count == 1
    finally:
        await runner.aclose()


async def test_a_spoken_greeting_the_refused_realtime_model_cannot_say_is_said_by_the_pipeline(tmp_path: Path) -> None:
    # a voice session (not text): the greeting is spoken, not history. serve's
    # /simulate jobs are text-only, so this one runs the runner in-process.
    from fakes.openai_platform import FakeOpenAIPlatform

    fake = FakeOpenAIPlatform()
    await fake.start()
    fake.refuse_connections = True
    (tmp_path / "desk.yaml").write_text(
        "apiVersion: voice-runtime/v1\ninstructions: You are the front desk.\ngreeting: Hello there.\n"
        f"realtime: {{provider: openai, base_url: '{fake.base_url}', api_key: x, modalities: [text]}}\n"
        f"pipeline:\n  llm: {{provider: openai, base_url: '{fake.base_url}', api_key: x}}\n  text_only: true\n"
    )
    plugins = make_plugin_manager(None)
    [loaded] = load_folder(tmp_path, plugins).specs
    runner = SessionRunner(loaded, plugins, text_only=False)
    try:
        await runner.start()
        for _ in range(200):
            said = [m.text_content for m in runner.session.history.items if getattr(m, "type", "") == "message"]
            if said:
                break
            await asyncio.sleep(0.05)
        assert said == ["Hello there."] and runner.mode == "pipeline"
        assert fake.events_of_type("response.create") == []  # never asked of the dead model
    finally:
        await runner.aclose()
        await fake.stop()
