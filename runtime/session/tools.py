"""livekit function tools made from the tool plan (``mcp.toolset``): each MCP tool
called through ``call_tool`` (speaking a filler while a slow one runs), each plugin
tool wrapped to be traced like an MCP tool."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

from ..mcp.toolset import ToolFailure, call_tool
from ..plugins.functions import as_text

if TYPE_CHECKING:
    from ..mcp.toolset import McpTool, ToolPlan
    from ..observe.tool_calls import CallRecorder
    from ..plugins.registry import Tool as PluginTool
    from .fillers import Fillers
    from .questions import ServerQuestions


def mcp_tools(plan: ToolPlan, recorder: CallRecorder, fillers: Fillers | None = None,
              questions: ServerQuestions | None = None) -> list[Any]:
    """livekit function tools for every MCP tool the plan shows the model; with
    ``fillers``, a tool whose server (or own entry) sets filler/timeout_say speaks
    while it runs; with ``questions``, a tool of a server that may ask the caller
    something (``elicitation: allow``) returns the question to the model."""
    return [_function_tool(tool, recorder, fillers, questions) for tool in plan.mcp]


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, ToolFailure) and exc.outcome == "timeout"


def _function_tool(tool: McpTool, recorder: CallRecorder, fillers: Fillers | None = None,
                   questions: ServerQuestions | None = None) -> Any:
    from livekit.agents.llm import ToolError, function_tool

    plan = fillers.plan_for(tool.conn, tool.tool.name) if fillers is not None else None
    asks = questions if questions is not None and tool.conn.server.elicitation == "allow" else None

    async def call(raw_arguments: dict[str, Any]) -> Any:
        running = call_tool(tool, raw_arguments, recorder)
        if asks is not None:
            running = asks.run(tool.server, running)
        try:
            if plan is None or fillers is None:
                return await running
            return await fillers.guard(tool.server, tool.tool.name, plan, running, _is_timeout)
        except ToolFailure as exc:
            raise ToolError(str(exc)) from None

    schema = {"name": tool.exposed, "description": tool.tool.description or tool.tool.name,
              "parameters": tool.parameters}
    return function_tool(call, raw_schema=schema)


def plugin_function_tools(tool: PluginTool) -> list[Any]:
    """The livekit tools a plugin's factory returns; a plain function becomes one
    through livekit's ``function_tool`` (name, docstring and signature)."""
    from livekit.agents.llm import function_tool

    from ..plugins.functions import is_livekit_tool, made_by

    return [t if is_livekit_tool(t) else function_tool(t) for t in made_by(tool)]


def plugin_tools(tool: PluginTool, recorder: CallRecorder) -> list[Any]:
    """The livekit tools a plugin's factory returns, each wrapped to be traced."""
    return [_traced(t, f"plugin:{tool.plugin}", recorder) for t in plugin_function_tools(tool)]


def _traced(lk_tool: Any, server: str, recorder: CallRecorder) -> Any:
    from ..core.livekit_compat import tool_function

    func = tool_function(lk_tool)  # the undecorated function: livekit parses arguments with it
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


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, list, dict, type(None)))
