"""A secret given through ${VAR} never comes out: not in logs at any level, error
messages, /status, /metrics, `check --format json` or `chat --json`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.openai_chat import FakeOpenAI
from helpers import CLI, child_env, run_cli, write
from mcp_servers.harness import free_port, read_records, start_http_server
from serve_harness import Serve

TOKEN = "canary-token-7f3a9c5e"
KEY = "sk-canary-key-91b2d4"
SECRETS = {"CANARY_TOKEN": TOKEN, "CANARY_KEY": KEY}


@pytest.fixture
def search(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    record = tmp_path / "search.jsonl"
    server = start_http_server("streamable-http", record=record, name="search")
    yield server.url, record
    server.stop()


def write_spec(agents: Path, fake: FakeOpenAI, search_url: str) -> None:
    dead = free_port()
    write(agents / "desk.yaml", f"""\
apiVersion: voice-runtime/v1
instructions: You look things up.
pipeline:
  llm: {{provider: openai, model: gpt-4o-mini, base_url: "{fake.base_url}", api_key: "${{CANARY_KEY}}"}}
  text_only: true
mcp_servers:
  search:
    url: "{search_url}"
    headers: {{Authorization: "Bearer ${{CANARY_TOKEN}}"}}
  archive:
    url: "http://127.0.0.1:{dead}/mcp?token=${{CANARY_TOKEN}}"
    headers: {{X-Api-Key: "${{CANARY_KEY}}"}}
    connect_timeout: 2
""")


def assert_no_secret(text: str, where: str) -> None:
    assert TOKEN not in text and KEY not in text, f"a secret leaked into {where}"
    assert "canary-token" not in text and "sk-canary" not in text, f"part of a secret leaked into {where}"


def test_the_secrets_really_reach_the_servers_that_need_them(
    tmp_path: Path, fake_openai: FakeOpenAI, search: tuple[str, Path]
) -> None:
    # control: the test below would pass trivially if the secrets were never used
    url, record = search
    write_spec(tmp_path / "agents.d", fake_openai, url)
    fake_openai.use_tool_then_answer("echo", {"text": "hello"})
    result = subprocess.run([*CLI, "chat", str(tmp_path / "agents.d"), "--agent", "desk", "--json"],
                            input="look it up\n", capture_output=True, text=True, timeout=90,
                            env=child_env(SECRETS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert fake_openai.chat_requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert [r["tool"] for r in read_records(record)] == ["echo"]


def test_check_and_chat_output_never_hold_a_secret(
    tmp_path: Path, fake_openai: FakeOpenAI, search: tuple[str, Path]
) -> None:
    url, _ = search
    agents = tmp_path / "agents.d"
    write_spec(agents, fake_openai, url)
    checked = run_cli("check", agents, "--format", "json", env=SECRETS)
    assert checked.rc == 0, checked.output
    report = json.loads(checked.stdout)
    archive = next(s for s in report["mcp_servers"] if s["server"] == "archive")
    assert archive["reachable"] is False and archive["error"]
    assert_no_secret(checked.stdout + checked.stderr, "check --format json")
    text = run_cli("check", agents, env=SECRETS)
    assert_no_secret(text.stdout + text.stderr, "check")
    fake_openai.use_tool_then_answer("echo", {"text": "hello"})
    chat = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk", "--json", "--log-level", "debug"],
                          input="look it up\n", capture_output=True, text=True, timeout=90, env=child_env(SECRETS))
    assert chat.returncode == 0, chat.stdout + chat.stderr
    assert_no_secret(chat.stdout, "chat --json")
    assert_no_secret(chat.stderr, "chat's debug log")


def test_a_secret_in_an_invalid_value_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    agents = tmp_path / "agents.d"
    write(agents / "desk.yaml", """\
apiVersion: voice-runtime/v1
instructions: x
pipeline:
  llm: {provider: openai, model: gpt-4o-mini, temperature: "${CANARY_TOKEN}"}
  text_only: true
""")
    for fmt in ("text", "json"):
        result = run_cli("check", agents, "--offline", "--format", fmt, env=SECRETS)
        assert result.rc == 1
        assert "pipeline.llm.temperature" in result.output
        assert_no_secret(result.output, f"check --format {fmt} errors")


def test_serve_logs_at_debug_status_and_metrics_never_hold_a_secret(
    tmp_path: Path, fake_openai: FakeOpenAI, search: tuple[str, Path]
) -> None:
    url, record = search
    agents = tmp_path / "agents.d"
    write_spec(agents, fake_openai, url)
    fake_openai.use_tool_then_answer("echo", {"text": "hello"})
    with Serve(agents, "--log-level", "debug", "--log-format", "json", env=SECRETS) as serve:
        serve.wait_for(lambda: serve.agent("desk") and serve.agent("desk")["registered"], message="registered")
        serve.wait_for(lambda: serve.agent("desk")["mcp_servers"]["archive"]["error"], message="archive's error")
        serve.simulate("desk", ["look it up"])
        serve.wait_for(lambda: len(read_records(record)) == 1, message="the tool call")
        serve.wait_for(lambda: len(fake_openai.chat_requests) >= 2, message="the answer")
        status = serve.get("/status")[1]
        assert "${CANARY_TOKEN}" in status  # shown as written
        assert_no_secret(status, "/status")
        assert_no_secret(serve.get("/metrics")[1], "/metrics")
        assert_no_secret(serve.get("/readyz")[1], "/readyz")
        assert serve.stop() == 0
        assert_no_secret(serve.output(), "serve's debug log")
