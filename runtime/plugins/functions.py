"""A plugin tool as the model sees it (name, description, JSON Schema of its
parameters) and as it is called, without importing livekit.

A tool factory returns a plain function or a livekit function tool (or a list of
them). `tools` and `call` describe and call both from here: livekit's import
(about a second) is paid only by a plugin that imports it, and by sessions, which
wrap plain functions with livekit's ``function_tool`` (mcp/toolset.py).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_type_hints

if TYPE_CHECKING:
    from .registry import Tool
    from ..observe.tool_calls import CallRecorder


@dataclass(frozen=True)
class PluginFunction:
    """One function a plugin's tool factory made."""

    name: str  # as the model sees it
    description: str
    func: Callable[..., Any]  # a plain function, or the livekit tool (callable too)
    plugin: str
    registered: str  # the name the spec lists (``clock.now``)

    @property
    def source(self) -> str:
        return f"plugin:{self.plugin}"

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON Schema livekit gives the model for this function's arguments
        (its legacy form, as the Realtime API receives it)."""
        if is_livekit_tool(self.func):
            from livekit.agents.llm.utils import build_legacy_openai_schema  # the plugin already imported livekit

            return build_legacy_openai_schema(self.func, internally_tagged=True)["parameters"]
        return arguments_schema(self.func)

    async def call(self, arguments: dict[str, Any], recorder: CallRecorder) -> str:
        """Call with keyword ``arguments``, recorded as a session records it; the
        result as the model receives it."""
        with recorder.call(server=self.source, tool=self.name, exposed_name=self.name,
                           arguments=arguments) as call:
            result = self.func(**arguments)
            if inspect.isawaitable(result):
                result = await result
            call.text = as_text(result)
            return call.text


def is_livekit_tool(obj: Any) -> bool:
    """A livekit function tool, told apart without importing livekit."""
    return type(obj).__module__.startswith("livekit.") and hasattr(obj, "info")


def made_by(tool: Tool) -> list[Any]:
    """What a plugin's tool factory returns, as a list."""
    made = tool.factory()
    return list(made) if isinstance(made, (list, tuple)) else [made]


def plugin_functions(tool: Tool) -> list[PluginFunction]:
    out = []
    for made in made_by(tool):
        if is_livekit_tool(made):
            name, description = made.info.name, made.info.description or ""
        else:
            name, description = made.__name__, _docstring(made).description or ""
        out.append(PluginFunction(name, description, made, tool.plugin, tool.name))
    return out


def arguments_schema(func: Callable[..., Any]) -> dict[str, Any]:
    """The JSON Schema of ``func``'s parameters, built as livekit's
    ``function_arguments_to_pydantic_model`` builds it (model name, defaults, the
    docstring's ``Args:`` as descriptions), so the model sees the same either way;
    tests/test_cli_imports.py compares the two."""
    from pydantic import create_model
    from pydantic.fields import FieldInfo
    from pydantic_core import PydanticUndefined

    param_docs = {p.arg_name: p.description for p in _docstring(func).params}
    hints = get_type_hints(func, include_extras=True)
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(func).parameters.items():
        info = FieldInfo.from_annotation(hints[name])
        if param.default is not param.empty and info.default is PydanticUndefined:
            info.default = param.default
        if info.description is None:
            info.description = param_docs.get(name)
        fields[name] = (info.annotation, info)
    model_name = "".join(part.capitalize() for part in func.__name__.split("_")) + "Args"
    return create_model(model_name, **fields).model_json_schema()


def _docstring(func: Callable[..., Any]) -> Any:
    from docstring_parser import parse_from_object

    return parse_from_object(func)


def as_text(result: Any) -> str:
    """What a plugin tool returned, as the model receives it."""
    return result if isinstance(result, str) else json.dumps(result, default=str)
