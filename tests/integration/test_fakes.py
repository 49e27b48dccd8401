"""The OpenAI fakes speak the protocol the REAL livekit plugins expect.

Every test drives the real `openai` client or the real livekit `openai.LLM` /
`openai.realtime.RealtimeModel` plugins over 127.0.0.1; nothing of livekit is mocked.
Async tests rely on `asyncio_mode = "auto"`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai as openai_sdk
import pytest
import pytest_asyncio
from livekit.agents import (
    Agent,
    AgentSession,
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    function_tool,
    llm,
)
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.plugins import openai

from fakes.openai_chat import FakeOpenAI, error, text, tool_call, tool_calls
from fakes.openai_realtime import FakeRealtime

# Small retry budgets keep every failure path well under a second.
FAST_RETRY = APIConnectOptions(max_retry=1, retry_interval=0.1, timeout=5.0)


class WeatherAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You answer weather questions.")
        self.calls: list[str] = []

    @function_tool
    async def get_weather(self, city: str) -> str:
        """Look up the current weather.

        Args:
            city: The city to look up.
        """
        self.calls.append(city)
        return f"sunny in {city}"


def _text_only_session(model: llm.LLM | llm.RealtimeModel, **kwargs: Any) -> AgentSession:
    # no VAD, no turn detector: turns come only from session.run(user_input=...)
    return AgentSession(llm=model, vad=None, turn_handling={"turn_detection": None}, **kwargs)


@pytest_asyncio.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest_asyncio.fixture
async def fake_realtime() -> AsyncIterator[FakeRealtime]:
    async with FakeRealtime() as fake:
        yield fake


@pytest_asyncio.fixture
async def realtime_model(
    fake_realtime: FakeRealtime,
) -> AsyncIterator[openai.realtime.RealtimeModel]:
    model = openai.realtime.RealtimeModel(
        base_url=fake_realtime.base_url, api_key="x", modalities=["text"], conn_options=FAST_RETRY
    )
    yield model
    await model.aclose()  # it owns an aiohttp session that AgentSession does not close


# -- chat completions ---------------------------------------------------------------------


async def test_openai_client_streams_tool_call_chunks_then_usage_then_done(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.enqueue(tool_call("get_weather", {"city": "Paris"}, call_id="call_x"))
    client = openai_sdk.AsyncOpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "weather?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    await client.close()

    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id == "call_x" and deltas[0].function.name == "get_weather"
    assert len(deltas) > 2, "arguments should arrive in several pieces"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


async def test_openai_client_gets_a_plain_completion_when_not_streaming(
    fake_openai: FakeOpenAI,
) -> None:
    client = openai_sdk.AsyncOpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=0)
    completion = await client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hello there"}]
    )
    await client.close()

    assert completion.choices[0].message.content == "echo: hello there"  # the default script
    assert completion.choices[0].finish_reason == "stop"
    assert fake_openai.requests[-1].headers["Authorization"] == "Bearer x"


async def test_agent_session_runs_the_tool_the_fake_calls_and_sends_its_result_back(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.use_tool_then_answer("get_weather", {"city": "Paris"})
    agent = WeatherAgent()
    model = openai.LLM(base_url=fake_openai.base_url, api_key="x")
    async with _text_only_session(model) as session:
        await session.start(agent)
        result = await session.run(user_input="What's the weather in Paris?")

    result.expect.next_event().is_function_call(name="get_weather", arguments={"city": "Paris"})
    result.expect.next_event().is_function_call_output(output="sunny in Paris")
    reply = result.expect.next_event().is_message(role="assistant").event().item
    result.expect.no_more_events()
    assert reply.text_content == "Result: sunny in Paris"
    assert agent.calls == ["Paris"]

    first, second = fake_openai.chat_requests
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    call_id = second["messages"][-2]["tool_calls"][0]["id"]
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": call_id,
        "content": "sunny in Paris",
    }


async def test_parallel_tool_calls_in_one_reply_all_run(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        tool_calls([("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]),
        text("Both sunny."),
    )
    agent = WeatherAgent()
    model = openai.LLM(base_url=fake_openai.base_url, api_key="x")
    async with _text_only_session(model) as session:
        await session.start(agent)
        result = await session.run(user_input="Paris and Rome?")

    assert sorted(agent.calls) == ["Paris", "Rome"]
    result.expect.contains_message(role="assistant")
    tool_results = [m for m in fake_openai.chat_requests[1]["messages"] if m["role"] == "tool"]
    assert sorted(m["content"] for m in tool_results) == ["sunny in Paris", "sunny in Rome"]


async def test_http_500_on_demand_fails_the_turn_and_the_next_turn_recovers(
    fake_openai: FakeOpenAI,
) -> None:
    errors: list[Any] = []
    session = _text_only_session(
        openai.LLM(base_url=fake_openai.base_url, api_key="x"),
        conn_options=SessionConnectOptions(
            llm_conn_options=APIConnectOptions(max_retry=0, retry_interval=0.1)
        ),
    )
    session.on("error", errors.append)
    async with session:
        await session.start(WeatherAgent())
        fake_openai.enqueue(error(500, "boom"))
        with pytest.raises(APIStatusError) as raised:
            await session.run(user_input="hello")
        recovered = await session.run(user_input="again")

    assert raised.value.status_code == 500
    assert raised.value.body["message"] == "boom"
    [event] = errors
    assert isinstance(event.error, llm.LLMError) and not event.error.recoverable
    assert isinstance(event.error.error, APIStatusError)
    recovered.expect.next_event().is_message(role="assistant")
    assert recovered.events[-1].item.text_content == "echo: again"


def test_fake_openai_serves_from_a_background_thread_for_subprocess_tests() -> None:
    fake = FakeOpenAI()
    base_url = fake.start_in_thread()
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=5) as resp:
            models = json.load(resp)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        req = urllib.request.Request(
            f"{base_url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            completion = json.load(resp)
    finally:
        fake.stop_thread()

    assert [m["id"] for m in models["data"]] == fake.model_ids
    assert completion["choices"][0]["message"]["content"] == "echo: hi"
    assert [r.path for r in fake.requests] == ["/v1/models", "/v1/chat/completions"]


# -- realtime -----------------------------------------------------------------------------


async def test_realtime_text_turn_runs_the_tool_and_answers_with_its_result(
    fake_realtime: FakeRealtime, realtime_model: openai.realtime.RealtimeModel
) -> None:
    fake_realtime.use_tool_then_answer("get_weather", {"city": "Paris"})
    agent = WeatherAgent()
    async with _text_only_session(realtime_model) as session:
        await session.start(agent)
        result = await session.run(user_input="What's the weather in Paris?")

    result.expect.next_event().is_function_call(name="get_weather", arguments={"city": "Paris"})
    result.expect.next_event().is_function_call_output(output="sunny in Paris")
    reply = result.expect.next_event().is_message(role="assistant").event().item
    result.expect.no_more_events()
    assert reply.text_content == "Result: sunny in Paris"
    assert agent.calls == ["Paris"]

    assert fake_realtime.handshakes[0]["path"] == "/v1/realtime"
    assert fake_realtime.handshakes[0]["query"] == {"model": "gpt-realtime"}
    assert [t["name"] for t in fake_realtime.session_config["tools"]] == ["get_weather"]
    assert fake_realtime.session_config["output_modalities"] == ["text"]
    assert [item["type"] for item in fake_realtime.conversation] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert fake_realtime.conversation[2]["output"] == "sunny in Paris"
    assert len(fake_realtime.events_of_type("response.create")) == 2


@pytest.mark.parametrize(("max_retry", "expected_recoverable"), [(0, [False]), (1, [True, False])])
async def test_realtime_refused_connection_ends_in_an_unrecoverable_model_error(
    fake_realtime: FakeRealtime, max_retry: int, expected_recoverable: list[bool]
) -> None:
    fake_realtime.refuse_connections = True
    model = openai.realtime.RealtimeModel(
        base_url=fake_realtime.base_url,
        api_key="x",
        modalities=["text"],
        conn_options=APIConnectOptions(max_retry=max_retry, retry_interval=0.1, timeout=5.0),
    )
    errors: list[Any] = []
    fatal = asyncio.Event()

    def on_error(event: Any) -> None:
        errors.append(event)
        if not event.error.recoverable:
            fatal.set()

    session = _text_only_session(model)
    session.on("error", on_error)
    try:
        await session.start(WeatherAgent())  # the realtime socket is opened here
        await asyncio.wait_for(fatal.wait(), 5)
    finally:
        await session.aclose()
        await model.aclose()

    assert [e.error.recoverable for e in errors] == expected_recoverable
    for event in errors:
        assert isinstance(event.error, llm.RealtimeModelError)
        assert isinstance(event.error.error, APIConnectionError)
        handshake_error = event.error.error.__cause__
        assert isinstance(handshake_error, aiohttp.WSServerHandshakeError)
        assert handshake_error.status == 503
    assert len(fake_realtime.handshakes) == max_retry + 1
    assert fake_realtime.connection_count == 0


async def test_realtime_session_reconnects_and_replays_history_after_a_dropped_socket(
    fake_realtime: FakeRealtime, realtime_model: openai.realtime.RealtimeModel
) -> None:
    fake_realtime.drop_after_responses = 1
    reconnected = asyncio.Event()
    async with _text_only_session(realtime_model) as session:
        await session.start(Agent(instructions="Echo."))
        realtime_session = session.current_agent.realtime_llm_session
        realtime_session.on("session_reconnected", lambda _: reconnected.set())
        await session.run(user_input="one")  # the fake drops the socket after this answer
        await asyncio.wait_for(reconnected.wait(), 5)
        result = await session.run(user_input="two")

    result.expect.next_event().is_message(role="assistant")
    assert result.events[-1].item.text_content == "echo: two"
    assert fake_realtime.connection_count == 2
    # the new socket's conversation was rebuilt from the client's history
    texts = [c["text"] for item in fake_realtime.conversation for c in item["content"]]
    assert texts == ["one", "echo: one", "two", "echo: two"]


async def test_realtime_error_reply_fails_only_that_response(
    fake_realtime: FakeRealtime, realtime_model: openai.realtime.RealtimeModel
) -> None:
    errors: list[Any] = []
    fake_realtime.enqueue(error(500, "boom"), text("fine now"))
    async with _text_only_session(realtime_model) as session:
        session.on("error", errors.append)
        await session.start(Agent(instructions="Echo."))
        failed = await session.run(user_input="one")
        recovered = await session.run(user_input="two")

    assert failed.events == []
    [event] = errors
    assert isinstance(event.error, llm.RealtimeModelError) and event.error.recoverable
    assert "server_error" in str(event.error.error)
    assert recovered.events[-1].item.text_content == "fine now"


async def test_fake_realtime_in_a_thread_can_be_dropped_from_the_test_loop() -> None:
    fake = FakeRealtime()
    base_url = fake.start_in_thread()
    ws_url = base_url.replace("http", "ws", 1) + "/realtime?model=m"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(ws_url) as ws:
                created = await ws.receive_json(timeout=5)
                await fake.drop_all()
                closing = await ws.receive(timeout=5)
    finally:
        fake.stop_thread()

    assert created["type"] == "session.created"
    assert created["session"]["model"] == "m"
    assert closing.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
