"""The shipped examples, as shipped, the way a new user runs them.

`agents.d/` and `plugins/` are copied unchanged; the providers reach the fakes only
through the standard variables the examples follow (OPENAI_BASE_URL, OPENAI_API_KEY),
with chat completions and the Realtime websocket on one port as api.openai.com has
them (tests/fakes/openai_platform.py). Conversations go through the real
`voice-runtime chat --json` subprocess reading stdin, and one through a real
`voice-runtime serve` job (process executor, POST /simulate).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_chat import error, text
from fakes.openai_platform import FakeOpenAIPlatform
from helpers import CLI, REPO, child_env
from serve_harness import Serve

CONCIERGE_GREETING = "Hello, Acme front desk. How can I help?"
SUPPORT_GREETING = "Thanks for calling Acme support. What can I do for you?"
# the examples' optional variables stay unset: their defaults are what ships
UNSET = {v: None for v in ("CARTESIA_VOICE", "SEARCH_MCP_URL", "SEARCH_TOKEN", "SUPPORT_TIMEZONE",
                           "VOICE_RUNTIME_DISABLE_PLUGINS", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY")}


@pytest.fixture
def openai_platform() -> Iterator[FakeOpenAIPlatform]:
    fake = FakeOpenAIPlatform()
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A copy of the repository's agents.d/ and plugins/, side by side as shipped."""
    shutil.copytree(REPO / "agents.d", tmp_path / "agents.d")
    shutil.copytree(REPO / "plugins", tmp_path / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "agents.d"


def provider_env(fake: FakeOpenAIPlatform) -> dict[str, str | None]:
    return {**UNSET, "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-example"}


def chat(agents: Path, agent: str, lines: list[str], fake: FakeOpenAIPlatform) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run(
        [*CLI, "chat", str(agents), "--agent", agent, "--json"], input="".join(f"{line}\n" for line in lines),
        capture_output=True, text=True, timeout=120, env=child_env(provider_env(fake)),
    )
    return result, time.monotonic() - start


def events(result: subprocess.CompletedProcess[str], *kinds: str) -> list[dict[str, Any]]:
    evs = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [e for e in evs if not kinds or e["type"] in kinds]


def conversation(result: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    return [(e["type"], e["text"]) for e in events(result, "user", "reply")]


def messages(request: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in request["messages"] if m["role"] != "system"]


def test_concierge_as_shipped_with_realtime_refused_greets_and_answers_every_turn_on_the_pipeline(
    shipped: Path, openai_platform: FakeOpenAIPlatform
) -> None:
    openai_platform.refuse_connections = True
    result, wall = chat(shipped, "concierge", ["Do you have a room tonight?", "And tomorrow?"], openai_platform)
    assert result.returncode == 0, result.stdout + result.stderr
    assert events(result, "error") == []
    assert conversation(result) == [
        ("reply", CONCIERGE_GREETING),
        ("user", "Do you have a room tonight?"), ("reply", "echo: Do you have a room tonight?"),
        ("user", "And tomorrow?"), ("reply", "echo: And tomorrow?"),
    ]
    [fallback] = events(result, "fallback")
    assert fallback["from"] == "realtime" and fallback["to"] == "pipeline" and "503" in fallback["reason"]
    assert openai_platform.handshakes and not any(h["accepted"] for h in openai_platform.handshakes)
    # the pipeline knows what was said: the greeting, then the conversation
    assert messages(openai_platform.chat.chat_requests[-1]) == [
        ("assistant", CONCIERGE_GREETING),
        ("user", "Do you have a room tonight?"), ("assistant", "echo: Do you have a room tonight?"),
        ("user", "And tomorrow?"),
    ]
    # no turn waits out one of livekit's 5-10 s realtime timeouts (it took 30 s and failed)
    assert wall < 25, f"took {wall:.1f} s"


def test_concierge_as_shipped_with_a_healthy_realtime_model_answers_on_it_and_it_knows_it_greeted(
    shipped: Path, openai_platform: FakeOpenAIPlatform
) -> None:
    result, _ = chat(shipped, "concierge", ["Hello"], openai_platform)
    assert result.returncode == 0, result.stdout + result.stderr
    assert conversation(result) == [("reply", CONCIERGE_GREETING), ("user", "Hello"), ("reply", "echo: Hello")]
    assert events(result, "fallback", "error") == []
    assert openai_platform.chat.chat_requests == []  # the pipeline stayed idle
    assert openai_platform.connection_count == 1
    assert CONCIERGE_GREETING in openai_platform.session_config["instructions"]


def test_concierge_as_shipped_whose_realtime_socket_drops_mid_call_goes_on_on_the_pipeline_with_the_history(
    shipped: Path, openai_platform: FakeOpenAIPlatform
) -> None:
    openai_platform.drop_after_responses = 1  # the socket dies right after the first answer
    result, _ = chat(shipped, "concierge", ["My name is Ada.", "What is my name?"], openai_platform)
    assert result.returncode == 0, result.stdout + result.stderr
    assert events(result, "error") == []
    assert conversation(result) == [
        ("reply", CONCIERGE_GREETING),
        ("user", "My name is Ada."), ("reply", "echo: My name is Ada."),
        ("user", "What is my name?"), ("reply", "echo: What is my name?"),
    ]
    assert len(events(result, "fallback")) == 1
    # the realtime turn reached the pipeline's history
    assert messages(openai_platform.chat.chat_requests[-1]) == [
        ("assistant", CONCIERGE_GREETING),
        ("user", "My name is Ada."), ("assistant", "echo: My name is Ada."),
        ("user", "What is my name?"),
    ]


def test_support_as_shipped_sends_both_llms_of_its_fallback_chain_to_openai_base_url(
    shipped: Path, openai_platform: FakeOpenAIPlatform
) -> None:
    # the first model fails; the backup answers, at the same OPENAI_BASE_URL
    # (it used to hard-code https://api.openai.com/v1)
    openai_platform.chat.script = lambda request: error(500) if request["model"] == "gpt-4.1-mini" else text("backup here")
    result, _ = chat(shipped, "support", ["Is anyone there?"], openai_platform)
    assert result.returncode == 0, result.stdout + result.stderr
    assert conversation(result) == [("reply", SUPPORT_GREETING), ("user", "Is anyone there?"), ("reply", "backup here")]
    models = [r["model"] for r in openai_platform.chat.chat_requests]
    # (livekit's FallbackAdapter may also probe the failed one in the background)
    assert models[0] == "gpt-4.1-mini" and "gpt-4o-mini" in models
    assert {r.headers["Authorization"] for r in openai_platform.chat.chat_requests} == {"Bearer sk-example"}


def test_concierge_as_shipped_served_with_realtime_refused_answers_a_simulated_call_on_the_pipeline(
    shipped: Path, openai_platform: FakeOpenAIPlatform
) -> None:
    openai_platform.refuse_connections = True
    with Serve(shipped, env=provider_env(openai_platform)) as serve:
        serve.wait_ready()
        serve.simulate("concierge", ["Do you have a room tonight?"])
        serve.wait_for(lambda: "-> 'echo: Do you have a room tonight?'" in serve.output(), 60,
                       "the simulated turn answered by the pipeline")
        assert serve.stop() == 0
    log = serve.output()
    assert "realtime model failed" in log and "switching to the pipeline" in log
    assert "generate_reply timed out" not in log
    assert messages(openai_platform.chat.chat_requests[-1]) == [
        ("assistant", CONCIERGE_GREETING), ("user", "Do you have a room tonight?"),
    ]
