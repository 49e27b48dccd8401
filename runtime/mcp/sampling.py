"""A server's ``sampling/createMessage``: a completion asked of our model, answered
only where the spec allows it per server (``sampling: {allow: true, max_requests,
max_tokens}``; without it the capability is not announced and a request is refused).

Bounds: ``max_requests`` per connection (a sampling block is connected per call, so
per call), ``max_tokens`` (the server's own ask is lowered to it; the text is also cut
at about 4 characters a token, as a model that ignores the limit would overrun it),
text messages only. Who answers is the connection's ``sampler``: in a call, the
agent's own LLM (``session.questions``); elsewhere (``voice-runtime call``) nobody,
so the request is refused with a reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..observe import tracing

if TYPE_CHECKING:
    from mcp.client.session import ClientRequestContext
    from mcp.types import CreateMessageRequestParams, CreateMessageResult, ErrorData

    from ..spec.models import Sampling

log = logging.getLogger("voice_runtime.mcp")

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class SamplingRequest:
    server: str
    system: str | None
    messages: tuple[tuple[str, str], ...]  # (role, text)
    max_tokens: int
    temperature: float | None


@dataclass(frozen=True)
class SamplingReply:
    text: str
    model: str
    stop_reason: str | None = "endTurn"


Sampler = Callable[[SamplingRequest], Awaitable[SamplingReply]]


class Refused(Exception):
    """Why a sampling request is not answered; the server is told."""


def read_request(server: str, params: Any, limits: Sampling) -> SamplingRequest:
    messages = []
    for message in params.messages:
        content = message.content
        parts = content if isinstance(content, list) else [content]
        if not all(getattr(p, "type", None) == "text" for p in parts):
            raise Refused("only text messages can be sampled")
        messages.append((str(message.role), "".join(p.text for p in parts)))
    if getattr(params, "tools", None):
        raise Refused("sampling with tools is not supported")
    return SamplingRequest(server, params.system_prompt, tuple(messages),
                           min(int(params.max_tokens), limits.max_tokens), params.temperature)


def sdk_callback(server: str, limits: Sampling, sampler: Callable[[], Sampler | None]) -> Callable[..., Any]:
    """The mcp ``ClientSession``'s ``sampling_callback`` for one connection: counts
    its requests against ``max_requests``; the sampler is looked up at each request."""
    used = 0

    async def callback(context: ClientRequestContext, params: CreateMessageRequestParams
                       ) -> CreateMessageResult | ErrorData:
        from mcp.types import INVALID_REQUEST, CreateMessageResult, ErrorData, TextContent

        from ..observe.metrics import observe_server_request

        nonlocal used
        try:
            if used >= limits.max_requests:
                raise Refused(f"this call allows {limits.max_requests} sampling request(s) (max_requests)")
            request = read_request(server, params, limits)
            answer = sampler()
            if answer is None:
                raise Refused("no model here to answer (sampling is answered only during a call)")
            used += 1
            with tracing.span("mcp.sampling", {"mcp.server": server, "mcp.sampling.max_tokens": request.max_tokens,
                                               "mcp.sampling.request": used}):
                reply = await answer(request)
        except Refused as exc:
            log.warning("MCP server %s: sampling request refused: %s", server, exc)
            observe_server_request(server, "sampling", "denied")
            return ErrorData(code=INVALID_REQUEST, message=f"sampling refused: {exc}")
        except Exception as exc:  # noqa: BLE001 - the model failed: the server is told, the call goes on
            log.warning("MCP server %s: sampling failed: %s: %s", server, type(exc).__name__, exc)
            observe_server_request(server, "sampling", "error")
            return ErrorData(code=INVALID_REQUEST, message=f"sampling failed: {type(exc).__name__}")
        text = reply.text[: request.max_tokens * CHARS_PER_TOKEN]
        observe_server_request(server, "sampling", "answered")
        log.info("MCP server %s: sampling request %d/%d answered by %s (%d characters)", server, used,
                 limits.max_requests, reply.model, len(text))
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text=text), model=reply.model,
                                   stop_reason="maxTokens" if len(text) < len(reply.text) else reply.stop_reason)

    return callback
