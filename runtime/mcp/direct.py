"""`voice-runtime tools` and `voice-runtime call`: the tools an agent's model sees,
and one tool called directly through the same path a session uses (allow-list,
prefixes, timeout, cap, tracing and metrics), so "is the tool really running?"
has a direct answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .pool import Acquired, McpPool
from .toolset import McpTool, ToolFailure, Withheld, call_tool, plan_tools
from ..plugins.functions import PluginFunction, plugin_functions
from ..observe.tool_calls import CallRecorder, ToolCallRecord

if TYPE_CHECKING:
    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec

log = logging.getLogger("voice_runtime.mcp")


@dataclass
class ToolRow:
    name: str  # as the model sees it
    source: str  # "mcp:<server>" or "plugin:<plugin>"
    original: str  # as the server or plugin names it
    description: str
    parameters: dict[str, Any]
    target: McpTool | PluginFunction

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "original": self.original,
                "description": self.description, "parameters": self.parameters}


@dataclass
class Toolbox:
    rows: list[ToolRow]
    acquired: Acquired
    recorder: CallRecorder
    withheld: list[Withheld]
    warnings: list[str]  # one line per withheld tool (grouped for the tool limits)

    def find(self, name: str) -> ToolRow | None:
        """By the name the model sees, or by a plugin tool's registered name
        (``clock.now``) when that names exactly one function."""
        exact = [r for r in self.rows if r.name == name]
        if exact:
            return exact[0]
        by_original = [r for r in self.rows if r.source.startswith("plugin:") and r.original == name]
        return by_original[0] if len(by_original) == 1 else None


async def open_toolbox(loaded: LoadedSpec, plugins: Plugins, pool: McpPool) -> Toolbox:
    acquired = await pool.acquire(loaded)
    recorder = CallRecorder(loaded.name, "cli", [_count])
    rows: list[ToolRow] = []
    # described and called without livekit: `tools` and `call` do not import it
    plugin = [(f.source, f) for name in loaded.spec.tools for f in plugin_functions(plugins.registry.tools[name])]
    up = {name: conn for name, conn in acquired.connections.items() if conn.state == "up"}
    plan = plan_tools(up, plugin_tools=plugin, lock=acquired.lock)
    for f in plan.plugin:
        rows.append(ToolRow(f.name, f.source, f.registered, f.description, _plugin_parameters(f), f))
    for tool in plan.mcp:
        rows.append(ToolRow(tool.exposed, f"mcp:{tool.server}", tool.tool.name, tool.tool.description or "",
                            tool.parameters, tool))
    warnings = plan.warnings()
    for line in warnings:
        log.warning("agent %s: %s", loaded.name, line)
    return Toolbox(rows, acquired, recorder, plan.withheld, warnings)


def _count(record: ToolCallRecord) -> None:
    # prometheus_client (about 0.1 s to import) only once a tool is really called:
    # `tools` lists without it. The CLI's calls are counted, not sent to the plugins' hook.
    from ..observe.metrics import observe_tool_call

    observe_tool_call(record)


def _plugin_parameters(f: PluginFunction) -> dict[str, Any]:
    try:
        return f.parameters
    except Exception:  # noqa: BLE001 - only for display
        return {}


async def call_row(row: ToolRow, arguments: dict[str, Any], recorder: CallRecorder) -> tuple[str, ToolCallRecord]:
    """Call one tool; returns its result text and the call's record. Raises
    ToolFailure with the sentence the model would have been given."""
    try:
        if isinstance(row.target, McpTool):
            text = await call_tool(row.target, arguments, recorder)
        else:
            text = await row.target.call(arguments, recorder)
    except ToolFailure:
        raise
    except TypeError as exc:  # wrong arguments for a plugin function
        raise ToolFailure(f"bad arguments for {row.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin tool's own failure, reported as the model would see it
        raise ToolFailure(f"{type(exc).__name__}: {exc}") from None
    return text, recorder.records[-1]
