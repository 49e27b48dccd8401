"""The thin adapter the official MCP conformance suite runs as its client: it writes
an agent spec whose one MCP server is the scenario's URL (its last argument) and calls
that server's tool through `voice-runtime call`, as a user would.

The suite sets MCP_CONFORMANCE_SCENARIO; each scenario names the tool it expects
called (none for `initialize`, which `voice-runtime check` connects for). The auth/*
scenarios' server lists `test-tool`; the block gets `auth: {oauth: ...}` as an operator
would write it, from the suite's MCP_CONFORMANCE_CONTEXT (credentials through ${VAR}),
and the authorization-code scenarios log in through `browser.py` as BROWSER.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# the scenario -> (the tool to call, its arguments, the server block's extra keys, the call's options)
SCENARIOS: dict[str, tuple[str | None, str, str, list[str]]] = {
    "initialize": (None, "{}", "", []),
    "tools_call": ("add_numbers", '{"a": 2, "b": 3}', "", []),
    "elicitation-sep1034-client-defaults": (
        "test_client_elicitation_defaults", "{}", "    elicitation: allow\n", ["--elicit", "accept-defaults"]),
    "sse-retry": ("test_reconnection", "{}", "", []),
}


# a client id that is its metadata document's URL (CIMD), which the suite's server accepts
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"


def oauth_block(scenario: str, env: dict[str, str]) -> str:
    """The `auth:` lines for an auth/* scenario; the credentials go into ``env``."""
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    lines = []
    if scenario.startswith("auth/client-credentials-"):
        lines += ["grant: client_credentials", f"client_id: {json.dumps(context['client_id'])}"]
        if "private_key_pem" in context:
            env["CONFORMANCE_PRIVATE_KEY"] = context["private_key_pem"]
            lines += ["private_key: ${CONFORMANCE_PRIVATE_KEY}",
                      f"signing_algorithm: {context.get('signing_algorithm', 'ES256')}"]
        else:
            env["CONFORMANCE_CLIENT_SECRET"] = context["client_secret"]
            lines += ["client_secret: ${CONFORMANCE_CLIENT_SECRET}", "token_endpoint_auth: client_secret_basic"]
    else:
        lines += ["grant: authorization_code", f"client_metadata_url: {CLIENT_METADATA_URL}"]
        if context.get("client_id"):  # pre-registered: the server offers no registration
            lines.append(f"client_id: {json.dumps(context['client_id'])}")
        if context.get("client_secret"):
            env["CONFORMANCE_CLIENT_SECRET"] = context["client_secret"]
            lines.append("client_secret: ${CONFORMANCE_CLIENT_SECRET}")
    return "    auth:\n      oauth:\n" + "".join(f"        {line}\n" for line in lines)


def main() -> int:
    url = sys.argv[-1]
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    env = dict(os.environ)
    if scenario.startswith("auth/") and scenario not in SCENARIOS:
        SCENARIOS[scenario] = ("test-tool", "{}", oauth_block(scenario, env), [])
        env["BROWSER"] = f"{sys.executable} {Path(__file__).with_name('browser.py')} %s"
    if scenario not in SCENARIOS:
        print(f"adapter: scenario {scenario!r} not supported; supported: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    tool, args, extra, options = SCENARIOS[scenario]
    cli = [sys.executable, "-m", "voice_runtime.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        agents = Path(tmp) / "agents.d"
        agents.mkdir()
        (agents / "conformance.yaml").write_text(
            "apiVersion: voice-runtime/v1\ninstructions: You call tools.\n"
            "pipeline:\n  llm: {provider: openai, model: gpt-4o-mini, api_key: sk-unused}\n  text_only: true\n"
            f"mcp_servers:\n  scenario:\n    url: \"{url}\"\n    transport: streamable_http\n{extra}")
        if tool is None:
            command = [*cli, "check", str(agents)]
        else:
            command = [*cli, "call", str(agents), "--agent", "conformance", tool, "--args", args, *options]
        return subprocess.run(command, timeout=60, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
