"""The thin adapter the official MCP conformance suite runs as its client: it writes
an agent spec whose one MCP server is the scenario's URL (its last argument) and calls
that server's tool through `voice-runtime call`, as a user would.

The suite sets MCP_CONFORMANCE_SCENARIO; each scenario names the tool it expects
called (none for `initialize`, which `voice-runtime check` connects for).
"""

from __future__ import annotations

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


def main() -> int:
    url = sys.argv[-1]
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
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
        return subprocess.run(command, timeout=60).returncode


if __name__ == "__main__":
    raise SystemExit(main())
