"""The model a test case's ``script`` puts in place of the spec's LLM: each LLM
request takes the next entry (a tool call or words), whichever agent asks (a
handoff target included). A livekit ``llm.LLM``, so the session, its tool
execution and livekit's RunResult are the real ones."""

from __future__ import annotations

import json
from typing import Any


def scripted_llm(entries: list[Any]) -> Any:
    """A livekit LLM answering from ``entries`` (``files.ScriptEntry``)."""
    from livekit.agents import llm

    class ScriptedStream(llm.LLMStream):  # type: ignore[misc]
        def __init__(self, owner: Any, **kwargs: Any) -> None:
            super().__init__(owner, **kwargs)
            self._owner = owner

        async def _run(self) -> None:
            owner = self._owner
            owner.asked += 1
            n = owner.asked
            if n > len(owner.entries):
                owner.exhausted = True
                delta = llm.ChoiceDelta(role="assistant", content=f"(the script has no entry for LLM request {n})")
            else:
                entry = owner.entries[n - 1]
                if entry.tool_call is not None:
                    call = llm.FunctionToolCall(name=entry.tool_call, arguments=json.dumps(entry.arguments),
                                                call_id=f"script_{n}")
                    delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
                else:
                    delta = llm.ChoiceDelta(role="assistant", content=entry.say)
            # _event_ch is how every livekit LLM plugin hands out its chunks (LLMStream's subclass API)
            self._event_ch.send_nowait(llm.ChatChunk(id=f"script-{n}", delta=delta))

    class ScriptedLLM(llm.LLM):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.entries = list(entries)
            self.requests: list[Any] = []  # the chat context of every request
            self.asked = 0
            self.exhausted = False

        @property
        def model(self) -> str:
            return "script"

        @property
        def provider(self) -> str:
            return "voice-runtime"

        def chat(self, *, chat_ctx: Any, tools: Any = None, conn_options: Any = None, **_: Any) -> Any:
            from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

            self.requests.append(chat_ctx.copy())
            return ScriptedStream(self, chat_ctx=chat_ctx, tools=tools or [],
                                  conn_options=conn_options or DEFAULT_API_CONNECT_OPTIONS)

    return ScriptedLLM()
