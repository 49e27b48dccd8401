"""A call's instructions from its MCP servers (``instructions_from``,
``context_resources``; the keys are ``spec/mcp_context.py``), fetched at the call's
start through the connections it acquired (serve's warm ones, lent through the
gateway). A server that is down, slow or refusing costs only its part: the spec's
own instructions stand in for the prompt, a missing resource is left out, each with
a WARNING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..spec.call_context import substitute
from ..spec.mcp_context import MAX_PROMPT_CHARS, MAX_RESOURCE_CHARS
from .results import cap_text

log = logging.getLogger("voice_runtime.mcp")


async def call_instructions(loaded: Any, connections: Mapping[str, Any], values: Mapping[str, str],
                            warn: Callable[[str], None]) -> str | None:
    """The instructions for this call, or None when the spec takes none from its servers."""
    spec = loaded.spec
    source, resources = spec.instructions_from, spec.context_resources
    if source is None and not resources:
        return None

    async def fetch(server: str, what: str, then: str, get: Callable[[Any], Any]) -> str | None:
        conn = connections.get(server)
        try:
            if conn is None:
                raise LookupError("not connected for this call")
            return str(await get(conn))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure leaves the fallback, with why
            warn(f"{what} of MCP server {server} could not be read ({_why(exc)}); {then}")
            return None

    jobs = []
    if source is not None:
        arguments = {k: substitute(v, values) for k, v in source.arguments.items()}
        jobs.append(fetch(source.server, f"instructions_from: prompt {source.prompt!r}",
                          "the spec's own instructions are used instead",
                          lambda conn: conn.get_prompt(source.prompt, arguments)))
    jobs += [fetch(r.server, f"context_resources: {r.uri}", "the call starts without it",
                   lambda conn, uri=r.uri: conn.read_resource(uri)) for r in resources]
    got = list(await asyncio.gather(*jobs))
    instructions = loaded.instructions
    if source is not None:
        prompt = got.pop(0)
        if prompt is not None:
            instructions = cap_text(prompt, MAX_PROMPT_CHARS)
    for resource, text in zip(resources, got):
        if text is not None:
            instructions += f"\n\nContext from {resource.uri}:\n{cap_text(text, MAX_RESOURCE_CHARS)}"
    return instructions


def _why(exc: BaseException) -> str:
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, MCPError):  # the server's own words stay out of the log: a fixed description
        return f"JSON-RPC error {exc.code}"
    return str(exc) or type(exc).__name__
