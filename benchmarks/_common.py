"""Shared by the session/tool/concurrency benchmarks: paths, quiet logging, stats, the spec.

Not a benchmark itself (the leading underscore keeps it out of ``benchmarks/*.py`` runs).
The test doubles come from ``tests/``: the fake OpenAI server replaces the remote LLM
API, and MCP servers are the real ``tests/mcp_servers/recorder.py``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # fakes/ and mcp_servers/ (test doubles, not runtime code)


def quiet_logging(level: int = logging.WARNING) -> None:
    """Everything on stderr (stdout is the one JSON object); livekit and the MCP SDK
    only when something is really wrong."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for name in ("livekit", "livekit.agents", "livekit.plugins", "mcp", "httpx2", "httpcore", "asyncio", "openai"):
        logging.getLogger(name).setLevel(logging.ERROR)


def log_tool_calls_like_serve() -> logging.Handler:
    """voice-runtime's per-call INFO line is part of what is measured: a tool call is
    formatted and written as it would be in production, to /dev/null instead of a
    terminal (formatting and the write are paid, the screen is not)."""
    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("voice_runtime.tools")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    return handler


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def emit(result: dict[str, Any]) -> None:
    """The one line on stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def spec_yaml(
    name: str,
    llm_url: str,
    servers: dict[str, dict[str, Any]],
    *,
    instructions: str = "You answer with the tools.",
) -> str:
    """A text-only pipeline spec with ``servers`` (name -> {command, args} or {url}, plus
    any other server key such as allowed_tools). Values are written as JSON, which is YAML."""
    lines = [
        "apiVersion: voice-runtime/v1",
        f"name: {name}",
        f"instructions: {json.dumps(instructions)}",
        "pipeline:",
        f"  llm: {{provider: openai, model: gpt-4o-mini, base_url: {json.dumps(llm_url)}, api_key: sk-fake}}",
        "  text_only: true",
        "mcp_servers:",
    ]
    for server, block in servers.items():
        lines.append(f"  {server}: {json.dumps(block)}")
    return "\n".join(lines) + "\n"


def load_spec(folder: Path, text: str, filename: str = "agent.yaml") -> tuple[Any, Any]:
    """Write one spec into ``folder`` and load it the way serve does: (plugins, LoadedSpec)."""
    from voice_runtime.plugins.manager import make_plugin_manager
    from voice_runtime.spec.loader import load_folder

    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_text(text, encoding="utf-8")
    plugins = make_plugin_manager(folder.parent / "plugins", entry_points=False)
    if plugins.errors:
        raise SystemExit(f"plugins failed to load: {[str(e) for e in plugins.errors]}")
    result = load_folder(folder, plugins)
    if result.errors or len(result.specs) != 1:
        raise SystemExit("the benchmark spec is invalid:\n" + "\n".join(str(e) for e in result.errors))
    return plugins, result.specs[0]
