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
from typing import TYPE_CHECKING, Any

from .connection import McpUnavailable

if TYPE_CHECKING:
    from mcp.types import CallToolResult

    from ..registry import Tool as PluginTool
    from ..tool_calls import CallRecorder
    from .connection import McpConnection

DEFAULT_RESULT_CAP = 16 * 1024


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
    return [t for t in conn.tools if allowed is None or t.name in allowed]


def mcp_tools(connections: dict[str, McpConnection], recorder: CallRecorder) -> list[Any]:
    names = exposed_names(connections)
    tools = []
    for server, conn in connections.items():
        for tool in _allowed(conn):
            tools.append(_mcp_tool(conn, tool, names[(server, tool.name)], recorder))
    return tools


def _mcp_tool(conn: McpConnection, tool: Any, exposed: str, recorder: CallRecorder) -> Any:
    from livekit.agents.llm import ToolError, function_tool

    server = conn.name
    cap = DEFAULT_RESULT_CAP

    async def call(raw_arguments: dict[str, Any]) -> str:
        started = recorder.started(exposed, raw_arguments, server)
        outcome, text, error = "ok", "", None
        try:
            result = await conn.call(tool.name, raw_arguments)
            text = cap_text(result_text(result), cap)
            if result.is_error:
                outcome, error = "error", text
                raise ToolError(f"the {server} tool {tool.name} failed: {text[:500]}")
            return text
        except McpUnavailable as exc:
            outcome, error = "unavailable", str(exc)
            raise ToolError(f"the {server} service is not available right now") from None
        except asyncio.TimeoutError:
            outcome, error = "timeout", f"no answer within {conn.server.timeout:g}s"
            raise ToolError(f"the {server} service did not answer in time") from None
        except asyncio.CancelledError:
            outcome = "cancelled"  # the user interrupted; the SDK tells the server
            raise
        except ToolError:
            raise
        except Exception as exc:
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
            raise ToolError(f"the {server} tool {tool.name} failed") from None
        finally:
            recorder.finished(server=server, tool=tool.name, exposed_name=exposed, arguments=raw_arguments,
                              started=started, outcome=outcome, result=text, error=error)

    schema = {
        "name": exposed,
        "description": tool.description or tool.name,
        "parameters": tool.input_schema or {"type": "object", "properties": {}},
    }
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
        started = recorder.started(name, arguments, server)
        outcome, text, error = "ok", "", None
        try:
            result = func(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            text = result if isinstance(result, str) else json.dumps(result, default=str)
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            recorder.finished(server=server, tool=name, exposed_name=name, arguments=arguments,
                              started=started, outcome=outcome, result=text, error=error)

    return type(lk_tool)(traced, lk_tool.info)


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
