"""Every extension point of voice-runtime. Each hook starts with ``voice_runtime_``.

Plugins implement them with ``@voice_runtime.hookimpl``. Hooks are synchronous:
pluggy would count an ``async def`` implementation's coroutine as a result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from .registry import ProviderRegistrar, ToolRegistrar
    from ..spec.models import AgentSpec
    from ..observe.tool_calls import ToolCallRecord

hookspec = pluggy.HookspecMarker("voice_runtime")


@hookspec
def voice_runtime_register_providers(register: ProviderRegistrar) -> None:
    """Called once per plugin manager, when the registry is built.

    Call ``register(kind, name, options, factory)`` for each provider:
    ``kind`` is one of ``stt``, ``llm``, ``tts``, ``vad``, ``realtime``; ``name`` is
    what specs write as ``provider:``; ``options`` is a pydantic model of the
    provider's settings (it becomes part of the spec schema); ``factory(options)``
    builds the livekit object and must import livekit lazily, inside the function.
    A provider that needs an API key passes ``api_key_env="ITS_API_KEY"``: the
    variable it reads when the spec sets no ``api_key``. ``check`` then warns, and
    ``chat``/``console`` refuse at once, when neither is set.
    A name already registered for the same kind is an error naming both plugins.
    """


@hookspec
def voice_runtime_register_tools(register: ToolRegistrar) -> None:
    """Called once per plugin manager, when the registry is built.

    Call ``register(name, factory, description=...)`` for each tool a spec may list
    under ``tools:``. ``factory()`` returns a plain function (its name, docstring and
    typed parameters are what the model sees, as with livekit's ``function_tool``)
    or a livekit function tool, or a list of them. It is called when an agent is
    built or by ``tools``/``call``, never by ``check``; plain functions keep
    ``tools`` and ``call`` from importing livekit.
    A duplicate name is an error naming both plugins.
    """


@hookspec
def voice_runtime_adjust_spec_data(data: dict[str, Any], path: Path) -> None:
    """Called for every spec file after YAML parsing and ``${VAR}`` expansion, before
    validation. Mutate ``data`` in place (e.g. fill in organisation defaults);
    the return value is ignored. Keys a plugin adds have no line in the file:
    errors about them point at the top of the file.
    """


@hookspec
def voice_runtime_check_spec(spec: AgentSpec, path: Path) -> list[Any] | None:
    """Called for every spec that validated. Return problems to reject it, or None.

    A problem is a message string (reported at the top of the file) or a
    ``(key_path, message)`` pair such as ``("pipeline.llm", "not allowed here")``,
    reported at that key's ``file:line:col``.
    """


@hookspec
def voice_runtime_session_started(agent: str, session_id: str, spec: AgentSpec, mode: str) -> None:
    """Called when an agent session has started; ``mode`` is ``realtime`` or ``pipeline``."""


@hookspec
def voice_runtime_session_fallback(
    agent: str, session_id: str, from_mode: str, to_mode: str, reason: str
) -> None:
    """Called when a session switches model mode (realtime -> pipeline), history kept."""


@hookspec
def voice_runtime_session_ended(agent: str, session_id: str, reason: str) -> None:
    """Called when an agent session has closed; ``reason`` is livekit's close reason."""


@hookspec
def voice_runtime_tool_called(record: ToolCallRecord) -> None:
    """Called after every tool call (MCP or plugin tool) with its record: agent,
    session, server, tool, argument digest, latency, outcome, result size. It never
    holds argument values or secrets. Export it (OpenTelemetry, audit log...) here.
    """


@hookspec
def voice_runtime_session_handoff(session_id: str, from_agent: str, to_agent: str, history: str) -> None:
    """Called when a session continues as another agent (its ``transfer_to_<agent>``
    tool ran); ``history`` is what the target was given: ``full``, ``summary`` or ``none``."""


@hookspec
def voice_runtime_unbacked_claim(agent: str, session_id: str, text: str, claim: str, action: str, rule: str,
                                 token: str | None) -> None:
    """Called when a reply claims an action or a lookup ("I've sent it") that no tool
    call of its turn backs. ``text`` is the reply, ``claim`` the sentence that claims,
    ``action`` the spec's ``claims.action`` (``warn`` or ``retry``), ``rule`` the rule
    that found it (``pattern``, ``tool_aware``, ``ungrounded_specific``, ``judge``),
    ``token`` the specific with no source (``ungrounded_specific``; else None). An
    implementation may take any subset of these arguments."""


@hookspec
def voice_runtime_call_report(report: dict[str, Any]) -> None:
    """Called once for every call's report, as receivers get it (redacted, with its
    analysis), before it is spooled for delivery: in the call's job process, or in
    serve for a call whose job process was killed (``end_reason: job_killed``), and by
    ``chat --json``. The dict is the report's JSON; do not change it. A hook that
    raises is logged; the report is delivered all the same."""
