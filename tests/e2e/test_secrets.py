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


def write_spec(agents: Path, fake: FakeOpenAI, search_url: str, *, key: str = "CANARY_KEY",
               header: str = "CANARY_TOKEN", url_token: str = "CANARY_TOKEN", search_token: bool = False) -> None:
    """A desk whose LLM key, search header and URL tokens come from these variables;
    the archive server is down, so its error text carries its URL and header too."""
    dead = free_port()
    search = f"{search_url}?token=${{{url_token}}}" if search_token else search_url
    write(agents / "desk.yaml", f"""\
apiVersion: voice-runtime/v1
instructions: You look things up.
pipeline:
  llm: {{provider: openai, model: gpt-4o-mini, base_url: "{fake.base_url}", api_key: "${{{key}}}"}}
  text_only: true
mcp_servers:
  search:
    url: "{search}"
    headers: {{Authorization: "Bearer ${{{header}}}"}}
  archive:
    url: "http://127.0.0.1:{dead}/mcp?token=${{{url_token}}}"
    headers: {{X-Api-Key: "${{{key}}}"}}
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
        serve.wait_for(lambda: serve.agent("desk") and serve.agent("desk")["ready"], message="ready")
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


# -- secrets in the shapes real deployments give them (issue 11, item 3) ----------------

URL_TOKEN = 'sec ret/é+XYZzy"12'  # in a URL: httpx writes sec%20ret/%C3%A9+XYZzy%2212
MOUNTED = 'ghp_Mnt0Qv+/"9=\n'  # a Kubernetes Secret mounted from a file ends in a newline
MOUNTED_KEY = 'sk-Kq7canary "+/=9\n'
CANARIES = {"CANARY_URL_TOKEN": URL_TOKEN, "CANARY_MOUNTED": MOUNTED, "CANARY_MOUNTED_KEY": MOUNTED_KEY}
# letters and digits no encoding changes (percent, JSON, repr): finding one of these
# anywhere means some shape of the secret got out, whole or in part
PROBES = ("XYZzy", "Mnt0Qv", "Kq7canary")


def assert_no_shape_of_a_canary(text: str, where: str) -> None:
    found = [p for p in PROBES if p in text]
    assert not found, f"a secret leaked into {where}: {found}"


def write_canary_spec(agents: Path, fake: FakeOpenAI, search_url: str) -> None:
    """The same desk with the canaries of every shape: a mounted file's key and
    header, and a token that URLs percent-encode."""
    write_spec(agents, fake, search_url, key="CANARY_MOUNTED_KEY", header="CANARY_MOUNTED",
               url_token="CANARY_URL_TOKEN", search_token=True)


def echo_the_key_in_a_401(request: dict) -> object:
    from fakes.openai_chat import error

    # as an API gateway that quotes the credential it refused
    return error(401, f"Incorrect API key provided: {request.headers['Authorization']}")


@pytest.mark.parametrize("shape", [
    "raw", "stripped", "repr", "ascii", "bytes repr", "json", "json unicode", "json of a bytes repr",
    "json twice", "quote", "quote_plus", "httpx url", "basic auth 0", "basic auth 1", "basic auth 2",
])
def test_every_shape_of_a_secret_is_redacted(shape: str) -> None:
    import base64
    import urllib.parse

    from voice_runtime.spec.secrets import SecretSet

    value = 'sec ret/é+XYZzy"12\n'
    stripped = value.strip()
    shapes = {
        "raw": value, "stripped": stripped, "repr": repr(value), "ascii": ascii(value),
        "bytes repr": repr(value.encode()), "json": json.dumps(value),
        "json unicode": json.dumps(value, ensure_ascii=False), "json of a bytes repr": json.dumps(repr(value.encode())),
        "json twice": json.dumps(json.dumps(value)), "quote": urllib.parse.quote(value, safe=""),
        "quote_plus": urllib.parse.quote_plus(value), "httpx url": "sec%20ret/%C3%A9+XYZzy%2212",
        **{f"basic auth {n}": base64.b64encode(b"u" * n + b":" + stripped.encode()).decode() for n in range(3)},
    }
    secrets = SecretSet({value: "${TOK}"})
    out = secrets.redact(f"before {shapes[shape]} after")
    assert "XYZzy" not in out and "WFlaenk" not in out  # the value, and base64 of its middle
    assert out.startswith("before ") and out.endswith(" after") and "${TOK}" in out


def test_a_header_with_a_mounted_files_newline_works_and_one_it_cannot_carry_is_refused(
    tmp_path: Path, fake_openai: FakeOpenAI, search: tuple[str, Path]
) -> None:
    url, record = search
    agents = tmp_path / "agents.d"
    write_canary_spec(agents, fake_openai, url)
    checked = run_cli("check", agents, "--format", "json", env=CANARIES)
    assert checked.rc == 0, checked.output
    servers = {s["server"]: s for s in json.loads(checked.stdout)["mcp_servers"]}
    assert servers["search"]["reachable"], servers["search"]  # "Bearer ghp_...\n" would be an illegal header
    called = run_cli("call", agents, "--agent", "desk", "echo", "--args", '{"text": "hi"}', env=CANARIES)
    assert called.rc == 0 and "hi" in called.stdout, called.output
    inside = run_cli("check", agents, "--offline", env={**CANARIES, "CANARY_MOUNTED": "ghp_Mnt0Qv\nX-Evil: 1\n"})
    assert inside.rc == 1
    assert "mcp_servers.search.headers" in inside.output and "line break inside" in inside.output, inside.output
    assert_no_shape_of_a_canary(inside.output, "check's header error")
    accent = run_cli("check", agents, "--offline", env={**CANARIES, "CANARY_MOUNTED": "ghp_Mnt0Qvé"})
    assert accent.rc == 1 and "header Authorization has a character HTTP headers cannot carry" in accent.output
    assert_no_shape_of_a_canary(accent.output, "check's header error")


def test_check_tools_and_call_never_show_any_shape_of_a_secret(
    tmp_path: Path, fake_openai: FakeOpenAI, search: tuple[str, Path]
) -> None:
    url, _ = search
    agents = tmp_path / "agents.d"
    write_canary_spec(agents, fake_openai, url)
    runs = {
        "check": run_cli("check", agents, env=CANARIES),
        "check --format json": run_cli("check", agents, "--format", "json", env=CANARIES),
        "tools": run_cli("tools", agents, "--agent", "desk", "--log-level", "debug", env=CANARIES),
        "tools --format json": run_cli("tools", agents, "--agent", "desk", "--format", "json", env=CANARIES),
        "call --json --metrics": run_cli("call", agents, "--agent", "desk", "echo", "--args",
                                         json.dumps({"text": "hello"}), "--json", "--metrics", env=CANARIES),
        "call of a down server": run_cli("call", agents, "--agent", "desk", "archive_lookup", env=CANARIES),
    }
    for where, result in runs.items():
        assert "Traceback" not in result.output, (where, result.output)
        assert_no_shape_of_a_canary(result.output, where)
    assert "${CANARY_URL_TOKEN}" in runs["check --format json"].stdout  # the URL is shown as written
    assert '"hello"' in runs["call --json --metrics"].stdout  # the call went through


def test_a_provider_error_quoting_the_key_is_redacted_in_chat_json(
    tmp_path: Path, fake_openai: FakeOpenAI, search: tuple[str, Path]
) -> None:
    url, _ = search
    agents = tmp_path / "agents.d"
    write_canary_spec(agents, fake_openai, url)
    fake_openai.script = echo_the_key_in_a_401
    chat = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk", "--json", "--log-level", "debug"],
                          input="look it up\n", capture_output=True, text=True, timeout=90,
                          env=child_env(CANARIES))
    assert chat.returncode == 1, chat.stdout + chat.stderr
    assert fake_openai.chat_requests[0].headers["Authorization"] == f"Bearer {MOUNTED_KEY.strip()}"
    errors = [json.loads(line) for line in chat.stdout.splitlines() if '"error"' in line]
    assert errors and "${CANARY_MOUNTED_KEY}" in errors[0]["message"], chat.stdout  # quoted, then redacted
    assert_no_shape_of_a_canary(chat.stdout, "chat --json")
    assert_no_shape_of_a_canary(chat.stderr, "chat's debug log and tracebacks")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_serve_logs_status_and_metrics_never_show_any_shape_of_a_secret(
    tmp_path: Path, fake_openai: FakeOpenAI, search: tuple[str, Path], log_format: str
) -> None:
    url, _ = search
    agents = tmp_path / "agents.d"
    write_canary_spec(agents, fake_openai, url)
    fake_openai.script = echo_the_key_in_a_401
    with Serve(agents, "--log-level", "debug", "--log-format", log_format, env=CANARIES) as serve:
        serve.wait_for(lambda: serve.agent("desk") and serve.agent("desk")["mcp_servers"]["search"]["state"] == "up",
                       message="search up")
        serve.simulate("desk", ["look it up"])
        # the job's failed turn, quoting the key, reached the log (redacted)
        serve.wait_for(lambda: "Incorrect API key provided: Bearer ${CANARY_MOUNTED_KEY}" in serve.output()
                       .replace('\\"', '"'), message="the provider's error in the log")
        # httpx logged the search server's URL, percent-encoded (redacted)
        serve.wait_for(lambda: "mcp?token=${CANARY_URL_TOKEN}" in serve.output(), message="httpx's request line")
        for path in ("/status", "/metrics", "/readyz"):
            assert_no_shape_of_a_canary(serve.get(path)[1], path)
        assert serve.stop() == 0
        assert_no_shape_of_a_canary(serve.output(), f"serve's {log_format} log at debug")


def test_a_default_written_in_the_spec_is_shown_as_written_not_garbled(tmp_path: Path) -> None:
    """A value that came from `${VAR:-default}` with VAR unset is the spec's own text,
    not a secret: redacting it turned the template shown by `check` and /status into
    `${VAR:-${VAR}}`. A value the environment gave is still redacted."""
    agents = tmp_path / "agents.d"
    write(agents / "desk.yaml", """\
apiVersion: voice-runtime/v1
instructions: You look things up.
pipeline:
  llm: {provider: openai, model: gpt-4o-mini, api_key: sk-test}
  text_only: true
mcp_servers:
  search:
    url: "${SEARCH_URL:-http://127.0.0.1:9/mcp}"
    headers: {Authorization: "Bearer ${SEARCH_TOKEN:-public-demo-token}"}
""")
    unset = run_cli("check", "--offline", "--format", "json", agents, env={"SEARCH_URL": None, "SEARCH_TOKEN": None})
    assert unset.rc == 0, unset.output
    server = json.loads(unset.stdout)["agents"][0]["mcp_servers"]["search"]
    assert server["target"] == "${SEARCH_URL:-http://127.0.0.1:9/mcp}"
    given = run_cli("check", "--offline", "--format", "json", agents,
                    env={"SEARCH_URL": "http://127.0.0.1:9/mcp?k=env-given-token-5521", "SEARCH_TOKEN": None})
    assert given.rc == 0, given.output
    assert "env-given-token-5521" not in given.output
    assert json.loads(given.stdout)["agents"][0]["mcp_servers"]["search"]["target"] == \
        "${SEARCH_URL:-http://127.0.0.1:9/mcp}"
