"""`mcp-login` waits for a person, not for a server: the browser's redirect may come
long after the block's connect_timeout, and a store it could not write is refused
before the browser opens. Against tests/fakes/oauth_server.py in front of a real MCP
server (tests/mcp_servers/recorder.py --oauth-issuer)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.oauth_server import FakeAuthServer
from helpers import CLI, child_env, write
from mcp_servers.harness import HttpServer
from serve_harness import spec

SECRET = "s3cret-for-the-login-5521"
REDIRECT_DELAY_S = 2.5  # the person in the browser: longer than the block's connect_timeout


@pytest.fixture(scope="module")
def auth_server() -> Iterator[FakeAuthServer]:
    server = FakeAuthServer()
    yield server
    server.close()


def _agent(agents: Path, url: str, store: Path) -> None:
    write(agents / "desk.yaml", spec("You help.", "http://127.0.0.1:9/v1")
          + f"mcp_servers:\n  crm:\n    url: {url}\n    connect_timeout: 1\n    auth:\n      oauth: "
            f"{{grant: authorization_code, client_id: desk, client_secret: '${{CRM_SECRET}}', store: {store}}}\n")


def _login(agents: Path, browser: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "mcp-login", str(agents), "--agent", "desk", "--server", "crm", "--timeout", "60"],
                          capture_output=True, text=True, timeout=90,
                          env=child_env({"CRM_SECRET": SECRET, "BROWSER": browser}))


def test_a_login_whose_redirect_comes_after_connect_timeout_still_stores_its_refresh_token(
    tmp_path: Path, agents: Path, auth_server: FakeAuthServer
) -> None:
    slow_browser = tmp_path / "slow_browser.py"
    slow_browser.write_text("import sys, time, urllib.request\n"
                            f"time.sleep({REDIRECT_DELAY_S})\n"
                            "urllib.request.urlopen(sys.argv[1], timeout=30).read()\n")
    store = tmp_path / "secrets" / "crm-login.json"
    with HttpServer(record=tmp_path / "crm.jsonl", name="crm", oauth_issuer=auth_server.issuer).start() as crm:
        _agent(agents, crm.url, store)
        login = _login(agents, f"{sys.executable} {slow_browser} %s")
    assert login.returncode == 0, login.stdout + login.stderr
    assert f"refresh token stored in {store} (0600)" in login.stdout
    assert json.loads(store.read_text())["refresh_token"] in auth_server.issued
    for token in auth_server.issued:
        assert token not in login.stdout + login.stderr


def test_a_login_store_that_cannot_be_written_exits_2_before_the_browser_opens(
    tmp_path: Path, agents: Path, auth_server: FakeAuthServer
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    opened = tmp_path / "browser-opened"
    with HttpServer(record=tmp_path / "crm.jsonl", name="crm", oauth_issuer=auth_server.issuer).start() as crm:
        _agent(agents, crm.url, blocker / "crm-login.json")
        login = _login(agents, f"touch {opened} %s")
    assert login.returncode == 2, login.stdout + login.stderr
    assert f"the login store {blocker / 'crm-login.json'} cannot be written: its folder cannot be created" \
        in login.stderr
    assert "http" not in login.stdout + login.stderr  # no authorization URL printed
    assert not opened.exists()
