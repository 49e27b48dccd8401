"""livekit function tools made from MCP servers and plugin tools, each one traced.

What livekit's own MCPToolset lacks and this adds: allow-lists on every transport,
prefixes (automatic on a name collision, which livekit turns into a ValueError),
results as plain text capped in size, failures as a sentence the model can say,
and a ToolCallRecord for every call.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .connection import McpUnavailable

if TYPE_CHECKING:
    from mcp.types import CallToolResult

    from ..registry import Tool as PluginTool
    from ..tool_calls import CallRecorder
    from .connection import McpConnection


class ToolFailure(Exception):
    """A failed call, worded for the model to say to the caller."""


@dataclass(frozen=True)
class McpTool:
    """One MCP tool as the model sees it."""

    exposed: str
    conn: McpConnection
    tool: Any  # mcp.types.Tool

    @property
    def server(self) -> str:
        return self.conn.name

    @property
    def parameters(self) -> dict[str, Any]:
        return self.tool.input_schema or {"type": "object", "properties": {}}


def exposed_names(connections: dict[str, McpConnection]) -> dict[tuple[str, str], str]:
    """(server, tool) -> the name the model sees. An explicit ``prefix`` is used as
    is; tools whose names collide across servers get ``<server>_`` in front."""
    chosen: dict[tuple[str, str], str] = {}
    for server, conn in connections.items():
        for tool in _allowed(conn):
            prefix = conn.server.prefix or ""
            chosen[(server, tool.name)] = f"{prefix}{tool.name}"
    counts = Counter(chosen.values())
    for (server, tool), name in list(chosen.items()):
        if counts[name] > 1:
            chosen[(server, tool)] = f"{server}_{name}"
    return chosen


def _allowed(conn: McpConnection) -> list[Any]:
    allowed = conn.server.allowed_tools
    withheld = set(conn.changed_tools) if conn.pinning else set()
    return [t for t in conn.tools if (allowed is None or t.name in allowed) and t.name not in withheld]


def visible_tools(connections: dict[str, McpConnection]) -> list[McpTool]:
    names = exposed_names(connections)
    return [
        McpTool(names[(server, tool.name)], conn, tool)
        for server, conn in connections.items()
        for tool in _allowed(conn)
    ]


async def call_tool(tool: McpTool, arguments: dict[str, Any], recorder: CallRecorder) -> str:
    """Call through the connection, traced; the result is capped text. Raises
    ToolFailure with a sentence the model can say."""
    conn, server, name = tool.conn, tool.server, tool.tool.name
    with recorder.call(server=server, tool=name, exposed_name=tool.exposed, arguments=arguments) as call:
        try:
            result = await conn.call(name, arguments)
        except McpUnavailable as exc:
            call.fail("unavailable", str(exc))
            raise ToolFailure(f"the {server} service is not available right now") from None
        except asyncio.TimeoutError:
            call.fail("timeout", f"no answer within {conn.server.timeout:g}s")
            raise ToolFailure(f"the {server} service did not answer in time") from None
        except asyncio.CancelledError:
            raise  # the user interrupted; the SDK tells the server
        except Exception as exc:
            call.fail("error", f"{type(exc).__name__}: {exc}")
            raise ToolFailure(f"the {server} tool {name} failed") from None
        call.text = cap_text(result_text(result), conn.server.max_result_chars)
        if result.is_error:
            call.fail("error", call.text)
            raise ToolFailure(f"the {server} tool {name} failed: {call.text[:500]}")
        return call.text


def mcp_tools(connections: dict[str, McpConnection], recorder: CallRecorder) -> list[Any]:
    """livekit function tools for every visible MCP tool."""
    return [_function_tool(tool, recorder) for tool in visible_tools(connections)]


def _function_tool(tool: McpTool, recorder: CallRecorder) -> Any:
    from livekit.agents.llm import ToolError, function_tool

    async def call(raw_arguments: dict[str, Any]) -> str:
        try:
            return await call_tool(tool, raw_arguments, recorder)
        except ToolFailure as exc:
            raise ToolError(str(exc)) from None

    schema = {"name": tool.exposed, "description": tool.tool.description or tool.tool.name,
              "parameters": tool.parameters}
    return function_tool(call, raw_schema=schema)


def plugin_tools(tool: PluginTool, recorder: CallRecorder) -> list[Any]:
    """The livekit tools a plugin's factory returns, each wrapped to be traced."""
    made = tool.factory()
    made = made if isinstance(made, (list, tuple)) else [made]
    return [_traced(t, f"plugin:{tool.plugin}", recorder) for t in made]


def _traced(lk_tool: Any, server: str, recorder: CallRecorder) -> Any:
    func = lk_tool._func  # livekit keeps the undecorated function here
    name = lk_tool.info.name

    @functools.wraps(func)  # keeps the signature livekit parses arguments with
    async def traced(*args: Any, **kwargs: Any) -> Any:
        arguments = {k: v for k, v in kwargs.items() if _jsonable(v)}
        with recorder.call(server=server, tool=name, exposed_name=name, arguments=arguments) as call:
            result = func(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            call.text = as_text(result)
            return result

    return type(lk_tool)(traced, lk_tool.info)


def as_text(result: Any) -> str:
    """What a plugin tool returned, as the model receives it."""
    return result if isinstance(result, str) else json.dumps(result, default=str)


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, list, dict, type(None)))


def result_text(result: CallToolResult) -> str:
    """Text content as text (livekit's default would hand the model the JSON of
    each content item); other content is described briefly."""
    parts = []
    for item in result.content:
        text = getattr(item, "text", None)
        if text is not None:
            parts.append(text)
        else:
            parts.append(f"[{getattr(item, 'type', 'content')} content, {getattr(item, 'mime_type', '') or 'no type'}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, default=str))
    return "\n".join(parts)


def cap_text(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    return text[:cap] + f"\n[result truncated: {len(text)} characters, showing the first {cap}]"
