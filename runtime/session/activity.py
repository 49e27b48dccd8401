"""One agent's part of a call, swapped whole on a handoff (livekit splits its
``AgentActivity`` from the ``AgentSession`` the same way): the agent's spec, its MCP
connections and tool lock, the recorder of its tool calls, its tools and its mode.
The long-lived call (``session.runner.SessionRunner``) owns the rest: I/O, the pool,
the listeners, livekit's session, the history."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..mcp.toolset import plan_tools
from ..spec.call_context import pinned_arguments
from ..observe import tracing
from ..observe.tool_calls import CallRecorder
from .handoffs import HandoffOwner
from .tools import mcp_tools, plugin_tools

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..mcp.connection import McpConnection
    from ..mcp.gateway import GatewayPool
    from ..mcp.pool import McpPool
    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec
    from ..observe.tool_calls import Sink, ToolCallRecord
    from .fillers import Fillers
    from ..mcp.sampling import Sampler
    from .questions import ServerQuestions

# on log records that say what a session event (warning, fallback) says too: `chat`
# prints the event, so its default log filter drops the record
SHOWN_AS_EVENT = {"session_event": True}

log = logging.getLogger("voice_runtime.build")


class SessionRefused(Exception):
    """A session cannot start (a ``required`` MCP server is down); says why."""


class ActivityOwner(HandoffOwner, Protocol):
    """What an activity needs of the call it is part of (the runner; the transfer
    tools it builds take the call itself, see ``handoffs.HandoffOwner``)."""

    listeners: list[Callable[[str, dict[str, Any]], None]]
    stand_ins: list[Any]
    call_context: dict[str, str]  # the call's values, for pinned tool arguments
    questions: ServerQuestions
    sampler: Sampler
    line: Any  # session/phone.py PhoneLine, or None

    def hang_up(self, reason: str) -> None: ...

    def mcp_pool(self) -> McpPool | GatewayPool: ...

    def own(self, connections: list[McpConnection]) -> None: ...

    def not_a_reply(self, line: str) -> None: ...


@dataclass
class AgentActivity:
    """The agent a call is with now; a handoff replaces it (``moved_to``)."""

    owner: ActivityOwner
    loaded: LoadedSpec
    mode: str = ""
    connections: dict[str, McpConnection] = field(default_factory=dict)
    tool_lock: dict[str, dict[str, str]] | None = None  # the spec's `tools --lock` approvals
    recorder: CallRecorder | None = None
    tools: list[Any] = field(default_factory=list)
    _on_up: Any = None  # the callback put on this activity's connections

    @property
    def name(self) -> str:
        return self.loaded.name

    def moved_to(self, target: LoadedSpec, mode: str) -> AgentActivity:
        """The activity of ``target``, this one's callbacks taken off its connections.
        Until ``connect_mcp`` and ``build_tools`` it still holds this agent's
        connections and tools: what the livekit agent has until the handoff's is built."""
        self.detach()
        return AgentActivity(self.owner, target, mode, self.connections, self.tool_lock, None, self.tools)

    async def connect_mcp(self) -> None:
        """Take the spec's MCP connections from the pool (warm in ``serve``). A down
        server costs its own tools, unless it is ``required``."""
        owner = self.owner
        acquired = await owner.mcp_pool().acquire(self.loaded)
        self.connections, self.tool_lock = acquired.connections, acquired.lock
        owner.own(acquired.owned)  # a handoff acquires again: every call-owned connection closes at the end
        for name, why in acquired.unavailable.items():
            if self.connections[name].server.required:
                raise SessionRefused(f"required MCP server {name} is unavailable: {why}")
            log.warning("agent %s: MCP server %s is unavailable, starting without its tools: %s",
                        self.name, name, why, extra=SHOWN_AS_EVENT)
            owner.emit("warning", {"message": f"MCP server {name} unavailable: {why}"})
        loop = asyncio.get_running_loop()
        # reconnects are seen in the pool's loop; the agent lives in this one
        self._on_up = lambda conn: loop.call_soon_threadsafe(self._server_back, conn)
        for conn in self.connections.values():
            conn.on_up.append(self._on_up)
            # a pooled connection is shared: its questions find this call through the tool call
            # that asked (ServerQuestions.run); only a connection of this call's own answers here
            if conn.server.elicitation == "allow" and not conn.server.pooled:
                conn.elicitor = owner.questions.ask
            if conn.server.sampling.allow:  # never pooled: this call's own connection
                conn.sampler = owner.sampler
        await self._instructions_from_servers()

    async def _instructions_from_servers(self) -> None:
        """``instructions_from`` / ``context_resources``: read now, through this call's
        connections; whatever cannot be read leaves the spec's own, with a WARNING."""
        from ..mcp.context import call_instructions

        def warn(line: str) -> None:
            log.warning("agent %s: %s", self.name, line, extra=SHOWN_AS_EVENT)
            self.owner.emit("warning", {"message": line})

        told = await call_instructions(self.loaded, self.connections, self.owner.call_context, warn)
        if told is not None:
            self.loaded = dataclasses.replace(self.loaded, instructions=told)

    def detach(self) -> None:
        """No more reconnect callbacks from this activity's connections."""
        for conn in self.connections.values():
            if self._on_up in conn.on_up:
                conn.on_up.remove(self._on_up)

    def build_tools(self) -> list[Any]:
        owner = self.owner
        if self.recorder is None:
            self.recorder = CallRecorder(self.name, owner.session_id, session_sinks(owner.plugins), owner.listeners,
                                         tracer=tracing.tracer(),
                                         transports={n: c.transport for n, c in self.connections.items()},
                                         traced_arguments=frozenset(
                                             n for n, c in self.connections.items() if c.server.trace_arguments))
        plugin = []
        for tool_name in self.loaded.spec.tools:
            registered = owner.plugins.registry.tools[tool_name]
            plugin += [(f"plugin:{registered.plugin}", t) for t in plugin_tools(registered, self.recorder)]
        # a tool that would make livekit or the model API refuse the session is withheld
        values = owner.call_context
        plan = plan_tools(self.connections, plugin_tools=plugin, lock=self.tool_lock,
                          pins=lambda server, tool: pinned_arguments(server, tool, values))
        for line in plan.warnings():
            log.warning("agent %s session %s: %s", self.name, owner.session_id, line, extra=SHOWN_AS_EVENT)
            owner.emit("warning", {"message": line})
        from .handoffs import transfer_tools
        from .phone import phone_tools, tool_names

        tools = plan.plugin + mcp_tools(plan, self.recorder, self._fillers(), owner.questions) + transfer_tools(owner)
        phone = phone_tools(owner, self.loaded.spec.telephony, owner.hang_up)
        # livekit refuses a session with two tools of one name: the spec's telephony wins
        taken = tool_names(phone)
        for name in sorted(taken & tool_names(tools)):
            line = f"tool {name} is hidden by the telephony tool of the same name"
            log.warning("agent %s session %s: %s", self.name, owner.session_id, line, extra=SHOWN_AS_EVENT)
            owner.emit("warning", {"message": line})
        tools = [t for t in tools if not tool_names([t]) & taken] + phone
        owner.questions.offer = self._offer_question_tools
        if owner.questions.offered:
            from .questions import question_tools

            tools += question_tools(owner.questions, self._speak)
        if not owner.stand_ins:
            return tools
        names = {getattr(getattr(t, "info", None), "name", None) for t in tools}
        return tools + [t for t in owner.stand_ins if t.info.name not in names]

    async def _offer_question_tools(self) -> None:
        """A server asked this call's first question: the model gets the tools that answer it."""
        self.tools = self.build_tools()
        agent = getattr(self.owner.session, "current_agent", None)
        if agent is not None:
            await agent.update_tools(self.tools)

    def _fillers(self) -> Fillers:
        from .fillers import Fillers

        owner = self.owner
        servers = {id(conn): self.loaded.spec.mcp_servers[name] for name, conn in self.connections.items()
                   if name in self.loaded.spec.mcp_servers}
        return Fillers(self.name, self._speak, owner.listeners, servers=servers)

    def _speak(self, line: str) -> Any:
        """Say ``line`` as the agent, the runtime's words (a filler, a server's progress
        line, a read-back): it lands in the history as the agent's words, yet the model
        never said it, so the claim watch is told to pass it by. The session and mode
        are read at the time of the line: a realtime -> pipeline switch moves it to the TTS."""
        from .fillers import speak_in

        self.owner.not_a_reply(line)
        return speak_in(self.owner.session, self.owner.mode, line)

    def _server_back(self, conn: McpConnection) -> None:
        """A server reconnected: its tools (maybe changed, maybe new) reach the
        agent in the same conversation."""
        owner = self.owner
        if owner.session is None or getattr(owner.session, "current_agent", None) is None:
            return
        self.tools = self.build_tools()
        log.info("agent %s session %s: MCP server %s is back; %d tools", self.name, owner.session_id,
                 conn.name, len(self.tools))
        owner.offer_tools(self.tools)


def session_sinks(plugins: Plugins) -> list[Sink]:
    """Where a session's tool call records go: Prometheus and the plugins'
    ``voice_runtime_tool_called`` hook (``notify``: an exporter's bug must not fail the call),
    and under ``serve`` its journal of recent calls (the status page)."""
    from ..observe.call_journal import sink_from_env
    from ..observe.metrics import observe_tool_call
    from ..plugins.manager import notify

    def tool_called(record: ToolCallRecord) -> None:
        notify(plugins, "voice_runtime_tool_called", record=record)

    journal = sink_from_env()
    return [observe_tool_call, tool_called, *([journal] if journal is not None else [])]
