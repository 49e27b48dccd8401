"""A server's sampling request answered by the call's own LLM (``mcp.sampling`` holds
the limits and the protocol; this is only the model). A realtime model cannot be
asked for a side completion, so a call in realtime mode refuses it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..mcp.sampling import Refused, SamplingReply, SamplingRequest


def llm_sampler(current_llm: Callable[[], Any],
                call_loop: Callable[[], asyncio.AbstractEventLoop | None]) -> Callable[[SamplingRequest], Any]:
    """A ``Sampler`` asking whatever ``current_llm()`` is when the request comes (a
    handoff or a realtime -> pipeline switch changes it), in the call's loop: the
    connection may live in another (serve's pool under ``--executor thread``), and
    the model's HTTP session belongs to the call's."""

    async def in_call_loop(request: SamplingRequest) -> SamplingReply:
        loop = call_loop()
        if loop is not None and loop is not asyncio.get_running_loop() and not loop.is_closed():
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(sample(request), loop))
        return await sample(request)

    async def sample(request: SamplingRequest) -> SamplingReply:
        from livekit.agents.llm import LLM, ChatContext

        llm = current_llm()
        if not isinstance(llm, LLM):
            raise Refused("the agent's model is a realtime model, which cannot answer a side request")
        ctx = ChatContext.empty()
        if request.system:
            ctx.add_message(role="system", content=request.system)
        for role, text in request.messages:
            ctx.add_message(role="assistant" if role == "assistant" else "user", content=text)
        parts: list[str] = []
        limit = request.max_tokens * 4  # stop reading once past the bound; mcp.sampling cuts exactly
        async with llm.chat(chat_ctx=ctx, extra_kwargs=_max_tokens(llm, request.max_tokens)) as stream:
            async for chunk in stream:
                if chunk.delta is not None and chunk.delta.content:
                    parts.append(chunk.delta.content)
                    if sum(map(len, parts)) > limit:
                        break
        return SamplingReply("".join(parts), str(getattr(llm, "model", "") or type(llm).__name__))

    return in_call_loop


def _max_tokens(llm: Any, tokens: int) -> dict[str, Any]:
    # OpenAI-compatible chat APIs take the bound this way; other LLMs are cut afterwards
    return {"max_completion_tokens": tokens} if type(llm).__module__.startswith("livekit.plugins.openai") else {}
