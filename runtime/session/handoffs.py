"""Handoffs between the agents of one folder: ``handoffs: [{agent, when, history}]``.

Each entry is a tool ``transfer_to_<agent>`` whose description is ``when``. When
the model calls it, the same livekit session continues as the target agent (a
tool returning an ``Agent`` is livekit's handoff): the target's instructions, its
tools and MCP servers (taken from the session's pool: blocks already connected
are not connected again), its LLM, and its greeting if it has one; otherwise it
answers the turn that brought the caller to it. The history it gets follows the
entry's ``history``: ``full`` (default), ``summary`` (written by the model that
hands off) or ``none``.

A caller turn goes through at most ``max_handoffs_per_turn`` handoffs (of the agent
asked to hand off; default 3): two models that always transfer to each other would
otherwise pass the turn back and forth, one LLM request each, for ever. Past the
bound the transfer is refused (the model is told to answer itself), the transfer
tools are withheld until its answer, and the refusal is logged, counted
(``voice_runtime_handoffs_refused_total{agent,reason}``) and shown (``chat``).

A call keeps the specs it started with: the runner is given, when the call starts,
every agent it can reach through handoffs (``spec.handoffs.reachable``); a reload during the
call changes none of them.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec


class HandoffOwner(Protocol):
    """What handoffs need of the call they run in (``session.runner.SessionRunner``,
    which imports this module): the current agent's spec, tools and mode, the agents
    it may hand off to, livekit's session, and the way to continue as another agent."""

    session_id: str
    loaded: LoadedSpec
    plugins: Plugins
    specs: dict[str, LoadedSpec]
    session: Any
    mode: str
    tools: list[Any]
    handoff_turn: TurnHandoffs

    @property
    def name(self) -> str: ...

    def emit(self, event: str, data: dict[str, Any]) -> None: ...

    def offer_tools(self, tools: list[Any]) -> None: ...

    async def switch_to(self, target: LoadedSpec) -> None: ...

    def agent_kwargs(self, chat_ctx: Any) -> dict[str, Any]: ...


log = logging.getLogger("voice_runtime.handoffs")

SUMMARY_PROMPT = ("Summarize the conversation so far in a few sentences for a colleague who takes over the call: "
                  "who the caller is, what they want, what has been done and what is still open.")


def tool_name(agent: str) -> str:
    """``transfer_to_<agent>``; an agent name may hold ``.``, which model APIs refuse in tool names."""
    return "transfer_to_" + re.sub(r"[^A-Za-z0-9_-]", "_", agent)


def transfer_tools(runner: HandoffOwner) -> list[Any]:
    """The current agent's ``transfer_to_<agent>`` tools (targets the call knows)."""
    from livekit.agents.llm import function_tool

    tools = []
    for handoff in runner.loaded.spec.handoffs:
        if handoff.agent not in runner.specs:
            continue

        async def transfer(raw_arguments: dict[str, Any], _handoff: Any = handoff) -> Any:
            turn = runner.handoff_turn
            if turn.count >= runner.loaded.spec.max_handoffs_per_turn:
                return await turn.refuse(_handoff.agent)
            turn.count += 1
            return await hand_off(runner, _handoff)

        schema = {"name": tool_name(handoff.agent), "description": handoff.when,
                  "parameters": {"type": "object", "properties": {}, "required": [], "additionalProperties": False}}
        tools.append(function_tool(transfer, raw_schema=schema))
    return tools


REFUSED = ("Not transferred: this caller turn has already been handed between agents {count} times, the "
           "limit. Do not try to transfer again; answer the caller yourself now.")


@dataclass
class TurnHandoffs:
    """The handoffs of the caller's current turn, which starts with each message of
    the caller (livekit's ``conversation_item_added``: typed and spoken turns alike)."""

    runner: HandoffOwner
    count: int = 0
    withheld: bool = False  # the transfer tools, until the current agent has answered

    def attach(self, session: Any) -> None:
        session.on("conversation_item_added", self._on_item)

    def _on_item(self, event: Any) -> None:
        item = getattr(event, "item", None)
        if getattr(item, "type", "") != "message":
            return
        if item.role == "user":
            self.count = 0
        if self.withheld and item.role in ("user", "assistant"):
            self.withheld = False
            self.runner.offer_tools(self.runner.tools)

    async def refuse(self, target: str) -> str:
        """The transfer to ``target`` is past the bound: the current agent keeps the
        turn, and is not offered a transfer again until it has answered."""
        from ..observe.metrics import observe_handoff_refused

        runner, limit = self.runner, self.runner.loaded.spec.max_handoffs_per_turn
        log.warning("agent %s session %s: handoff to %s refused: %d handoffs in this caller turn already "
                    "(max_handoffs_per_turn: %d); %s answers", runner.name, runner.session_id, target,
                    self.count, limit, runner.name,
                    extra={"session_event": True, "agent": runner.name, "handoff_to": target,
                           "session_id": runner.session_id})
        observe_handoff_refused(runner.name, "limit")
        runner.emit("handoff_refused", {"from": runner.name, "to": target, "reason": "limit", "limit": limit})
        transfers = {tool_name(h.agent) for h in runner.loaded.spec.handoffs}
        agent = runner.session.current_agent
        self.withheld = True
        await agent.update_tools([t for t in runner.tools if getattr(getattr(t, "info", None), "name", None)
                                  not in transfers])
        return REFUSED.format(count=self.count)


async def hand_off(runner: HandoffOwner, handoff: Any) -> Any:
    """Continue ``runner``'s session as ``handoff.agent``: the new livekit Agent,
    which the transfer tool returns (livekit swaps it in)."""
    from ..observe.metrics import observe_handoff
    from ..plugins.manager import notify

    source, target = runner.loaded, runner.specs[handoff.agent]
    chat_ctx = await _history(runner, handoff.history)
    await runner.switch_to(target)
    agent = handoff_agent_class()(greeting=target.spec.greeting, realtime=runner.mode == "realtime",
                                  **runner.agent_kwargs(chat_ctx))
    log.info("agent %s session %s: handoff to %s (history: %s)", source.name, runner.session_id, target.name,
             handoff.history, extra={"agent": source.name, "handoff_to": target.name, "session_id": runner.session_id})
    observe_handoff(source.name, target.name)
    notify(runner.plugins, "voice_runtime_session_handoff", session_id=runner.session_id, from_agent=source.name,
           to_agent=target.name, history=handoff.history)
    runner.emit("handoff", {"from": source.name, "to": target.name, "history": handoff.history})
    return agent


async def _history(runner: HandoffOwner, history: str) -> Any:
    from livekit.agents import ChatContext

    if history == "none":
        return ChatContext.empty()
    current = runner.session.current_agent.chat_ctx
    # the source's instructions are not the target's; a tool call still waiting for
    # its output (this transfer) would make the model API refuse the request
    ctx = current.copy(exclude_instructions=True, exclude_function_call=True)
    if history == "full":
        return ctx
    summary = await _summarize(runner, ctx)
    out = ChatContext.empty()
    out.add_message(role="assistant", content=f"Summary of the conversation so far: {summary}")
    return out


async def _summarize(runner: HandoffOwner, ctx: Any) -> str:
    """One request to the current agent's LLM (public ``llm.chat``)."""
    llm = runner.session.current_agent.llm
    ask = ctx.copy()
    ask.add_message(role="system", content=SUMMARY_PROMPT)
    parts: list[str] = []
    try:
        async with llm.chat(chat_ctx=ask) as stream:
            async for chunk in stream:
                if chunk.delta is not None and chunk.delta.content:
                    parts.append(chunk.delta.content)
    except Exception as exc:  # noqa: BLE001 - a handoff must not fail on its summary
        log.warning("agent %s session %s: the handoff summary failed (%s); handing off the last turns instead",
                    runner.name, runner.session_id, exc)
        return " / ".join(f"{m.role}: {m.text_content}" for m in ctx.messages()[-4:])
    return "".join(parts).strip()


@functools.cache
def runtime_agent_class() -> type:
    """The class of every agent of a session (the first, a fallback pipeline, a
    handoff target): livekit's Agent, whose replies offer the model only the tools
    the agent has now. livekit gives every step of a reply (the request after a tool's result)
    the tool list the reply started with, so a tool withdrawn while it ran (a
    transfer refused at ``max_handoffs_per_turn``) would be offered again."""
    from livekit.agents import Agent, llm

    class RuntimeAgent(Agent):  # type: ignore[misc]
        def llm_node(self, chat_ctx: Any, tools: list[Any], model_settings: Any) -> Any:
            current = llm.ToolContext(self.tools).function_tools
            # provider tools (no name) are not ours to withdraw
            kept = [t for t in tools if getattr(getattr(t, "info", None), "name", None) in current
                    or not hasattr(t, "info")]
            return Agent.default.llm_node(self, chat_ctx, kept, model_settings)

    return RuntimeAgent


@functools.cache
def handoff_agent_class() -> type:
    """One class for every handoff target (livekit's ``mock_tools`` is keyed by class)."""
    class HandoffAgent(runtime_agent_class()):  # type: ignore[misc]
        """The target of a handoff: it says its greeting, or answers the turn that
        brought the caller to it."""

        def __init__(self, *, greeting: str | None, realtime: bool, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._greeting = greeting
            self._realtime = realtime

        async def on_enter(self) -> None:
            if self._greeting and self._realtime:  # a realtime model speaks for itself (no TTS to say() with)
                self.session.generate_reply(instructions=f"Greet the caller with exactly: {self._greeting}")
            elif self._greeting:
                self.session.say(self._greeting, add_to_chat_ctx=True)
            else:
                self.session.generate_reply()

    return HandoffAgent

