"""Instructions and context a call takes from its MCP servers at start:
``instructions_from: {server, prompt, arguments}`` (the prompt's text becomes the
agent's instructions; arguments may use ``${call.NAME}``) and
``context_resources: [{server, uri}]`` (each resource's text appended under its URI).
What a server sends is capped (``MAX_PROMPT_CHARS``, ``MAX_RESOURCE_CHARS``); a server
that is down, or a prompt or resource it refuses, leaves the spec's own
``instructions`` (which every spec keeps, as this fallback) with a WARNING.

Here only the spec keys and their cross-checks (the fetching is ``mcp.context``).
Its own base model: ``models`` imports this module for its fields, so this one
cannot import ``models``' StrictModel back; the config is the same.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PROMPT_CHARS = 20_000
MAX_RESOURCE_CHARS = 20_000
MAX_RESOURCES = 10


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstructionsFrom(_Strict):
    """The agent's instructions from a server's prompt, fetched at each call's start."""

    server: str = Field(min_length=1, description="A server of mcp_servers that has the prompt.")
    prompt: str = Field(min_length=1, max_length=200, description="The prompt's name.")
    arguments: dict[str, str] = Field(
        default_factory=dict, description="The prompt's arguments; values may use ${call.NAME}.")


class ContextResource(_Strict):
    """A resource read at each call's start; its text is added to the instructions."""

    server: str = Field(min_length=1, description="A server of mcp_servers that has the resource.")
    uri: str = Field(min_length=1, max_length=2000, description="The resource's URI.")

    @field_validator("uri")
    @classmethod
    def _has_scheme(cls, value: str) -> str:
        if ":" not in value:
            raise ValueError("a resource URI names its scheme, e.g. file:///notes.md or demo://resource/x")
        return value


def check(spec: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """(key path, problem) for each server named that the spec does not have."""
    servers = spec.mcp_servers
    known = ", ".join(sorted(servers)) or "none"
    problems: list[tuple[tuple[str | int, ...], str]] = []
    source = spec.instructions_from
    if source is not None and source.server not in servers:
        problems.append((("instructions_from", "server"),
                         f"no MCP server {source.server!r} in mcp_servers (servers: {known})"))
    for i, resource in enumerate(spec.context_resources):
        if resource.server not in servers:
            problems.append((("context_resources", i, "server"),
                             f"no MCP server {resource.server!r} in mcp_servers (servers: {known})"))
    return problems
