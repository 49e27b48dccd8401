"""An authorization server that echoes the client's credentials in its error text
(`invalid_client: bad client: header=Basic dm9p...`) must not make `check` show them:
not the secret, not its percent-encoded form, not the base64 Basic credential the
SDK builds from them (RFC 6749 2.3.1)."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

from fakes.oauth_server import FakeAuthServer
from helpers import run_cli, write
from mcp_servers.harness import HttpServer
from serve_harness import spec

CLIENT_ID, SECRET = "voice:desk", "Cli+Sec/SECRET16= &x"  # characters percent-encoding changes


def test_check_shows_an_authorization_server_refusal_without_the_client_secret_it_echoed(
    tmp_path: Path, agents: Path
) -> None:
    auth_server = FakeAuthServer(echo_credentials=True)
    try:
        with HttpServer(record=tmp_path / "crm.jsonl", name="crm", oauth_issuer=auth_server.issuer).start() as crm:
            write(agents / "desk.yaml", spec("You help.", "http://127.0.0.1:9/v1")
                  + f"mcp_servers:\n  crm:\n    url: {crm.url}\n    auth:\n      oauth: {{client_id: '{CLIENT_ID}', "
                    f"client_secret: '${{CRM_SECRET}}', token_endpoint_auth: client_secret_basic, "
                    f"issuer: '{auth_server.issuer}'}}\n")
            result = run_cli("check", agents, env={"CRM_SECRET": SECRET})
    finally:
        auth_server.close()
    header = auth_server.token_requests[0]["authorization"]
    basic = base64.b64encode(f"{quote(CLIENT_ID, safe='')}:{quote(SECRET, safe='')}".encode()).decode()
    assert header == f"Basic {basic}"  # what the server echoed
    output = result.stdout + result.stderr
    assert "invalid_client" in output, output  # the reason is still there
    for shape in (SECRET, quote(SECRET, safe=""), basic, basic.rstrip("=")[8:-4]):
        assert shape not in output, (shape, output)
