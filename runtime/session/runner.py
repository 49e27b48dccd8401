"""Spec -> a running livekit AgentSession: providers through the plugins' factories,
fallback chains, MCP and plugin tools, greeting, and realtime -> pipeline fallback.

livekit has no realtime -> pipeline fallback; ``RuntimeSession`` adds it: on the
first error of the realtime model it swaps in a pipeline agent carrying the chat
history, and the session goes on (see notes/livekit-1.8.9.md, section 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..mcp.pool import McpPool
from ..mcp.toolset import plan_tools
from ..observe import tracing
from ..plugins.manager import notify
from ..observe.tool_calls import CallRecorder
from .tools import mcp_tools, plugin_tools

if TYPE_CHECKING:
    from collections.abc import Callable

    from .fillers import Fillers
    from .handoffs import TurnHandoffs
    from ..mcp.connection import McpConnection
    from ..mcp.gateway import GatewayPool
    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec
    from ..observe.tool_calls import Sink, ToolCallRecord

# on log records that say what a session event (warning, fallback) says too: `chat`
# prints the event, so its default log filter drops the record
SHOWN_AS_EVENT = {"session_event": True}

log = logging.getLogger("voice_runtime.build")


class SessionRefused(Exception):
    """A session cannot start (a ``required`` MCP server is down); says why."""


def import_livekit_plugins() -> None:
    """Import every installed ``livekit.plugins.*`` package. livekit requires
    plugins to register on the main thread, and console/serve build agents in
    job threads or processes; livekit's own ``download-files`` does the same."""
    import importlib
    import pkgutil

    import livekit.plugins

    for module in pkgutil.iter_modules(livekit.plugins.__path__):
        try:
            importlib.import_module(f"livekit.plugins.{module.name}")
        except Exception as exc:  # noqa: BLE001 - a broken optional plugin is not ours to fail on
            log.warning("livekit plugin %s failed to import: %s", module.name, exc)


def session_sinks(plugins: Plugins) -> list[Sink]:
    """Where a session's tool call records go: Prometheus and the plugins'
    ``voice_runtime_tool_called`` hook (``notify``: an exporter's bug must not fail the call),
    and under ``serve`` its journal of recent calls (the status page)."""
    from ..observe.call_journal import sink_from_env
    from ..observe.metrics import observe_tool_call

    def tool_called(record: ToolCallRecord) -> None:
        notify(plugins, "voice_runtime_tool_called", record=record)

    journal = sink_from_env()
    return [observe_tool_call, tool_called, *([journal] if journal is not None else [])]


def make_provider(plugins: Plugins, kind: str, options: Any) -> Any:
    """Build with the plugin's factory, handing it an instance of its own options
    model (the spec's copy also carries the ``provider`` discriminator)."""
    provider = plugins.registry.provider(kind, options.provider)
    own = provider.options.model_validate(options.model_dump(exclude_unset=True, exclude={"provider"}))
    return provider.factory(own)


def make_chain(plugins: Plugins, kind: str, chain: list[Any], *, vad: Any = None) -> Any:
    """One provider, or livekit's FallbackAdapter over a list of them."""
    made = [make_provider(plugins, kind, options) for options in chain]
    if len(made) == 1:
        return made[0]
    from livekit.agents import llm, stt, tts

    if kind == "llm":
        return llm.FallbackAdapter(made)
    if kind == "stt":
        return stt.FallbackAdapter(made, vad=vad)
    return tts.FallbackAdapter(made)


@dataclass
class Models:
    """The livekit objects one agent mode needs."""

    mode: str  # "realtime" or "pipeline"
    llm: Any
    stt: Any = None
    tts: Any = None
    vad: Any = None
    turn_detection: Any = None


def build_models(plugins: Plugins, loaded: LoadedSpec, mode: str, *, text_only: bool = False) -> Models:
    spec: Any = loaded.spec
    if mode == "realtime":
        options = spec.realtime
        if text_only and "modalities" in type(options).model_fields:
            options = options.model_copy(update={"modalities": ["text"]})
        if spec.pipeline is not None and getattr(options, "max_retry", 1) == 0:
            # a first failure must surface as a recoverable error for the
            # pipeline fallback to take over cleanly
            options = options.model_copy(update={"max_retry": 1})
        return Models("realtime", make_provider(plugins, "realtime", options))
    pipeline = spec.pipeline
    if text_only or pipeline.text_only:
        return Models("pipeline", make_chain(plugins, "llm", pipeline.llm))
    vad = make_provider(plugins, "vad", pipeline.vad) if pipeline.vad is not None else None
    return Models(
        "pipeline",
        llm=make_chain(plugins, "llm", pipeline.llm),
        stt=make_chain(plugins, "stt", pipeline.stt, vad=vad),
        tts=make_chain(plugins, "tts", pipeline.tts),
        vad=vad,
        turn_detection=_turn_detection(pipeline.turn_detection),
    )


@dataclass
class TurnAnswered:
    """What ``run_turn`` returns for a turn the realtime model answered just before
    it failed: the answer's events, as in livekit's RunResult."""

    events: list[Any]


def _turn_detection(value: str | None) -> Any:
    if value is None:
        return None
    if value == "model":
        from livekit.agents.inference import TurnDetector

        return TurnDetector()
    return value


def build_agent(loaded: LoadedSpec, models: Models, tools: list[Any], *, chat_ctx: Any = None,
                instructions: str | None = None) -> Any:
    from .handoffs import runtime_agent_class

    return runtime_agent_class()(**build_agent_kwargs(loaded, models, tools, chat_ctx=chat_ctx,
                                                      instructions=instructions))


def build_agent_kwargs(loaded: LoadedSpec, models: Models, tools: list[Any], *, chat_ctx: Any = None,
                       instructions: str | None = None) -> dict[str, Any]:
    from livekit.agents import NOT_GIVEN

    kwargs: dict[str, Any] = {
        "instructions": loaded.instructions if instructions is None else instructions,
        "tools": tools,
        "llm": models.llm,
        "stt": models.stt if models.stt is not None else NOT_GIVEN,
        "tts": models.tts if models.tts is not None else NOT_GIVEN,
        "vad": models.vad if models.vad is not None else NOT_GIVEN,
    }
    if models.turn_detection is not None:
        kwargs["turn_handling"] = {"turn_detection": models.turn_detection}
    if chat_ctx is not None:
        kwargs["chat_ctx"] = chat_ctx
    return kwargs


def _runtime_session_class() -> type:
    from livekit.agents.llm import RealtimeModelError

    from ..core.livekit_compat import session_with_error_hook

    class RuntimeSession(session_with_error_hook()):  # type: ignore[misc]
        """An AgentSession that hands realtime failures to a fallback instead of
        closing (livekit closes a session on an unrecoverable realtime error)."""

        realtime_fallback: Callable[[Any], None] | None = None
        _fell_back = False

        def arm_fallback(self, fallback: Callable[[Any], None] | None) -> None:
            """After a handoff: the target's own realtime -> pipeline fallback, if it has one."""
            self.realtime_fallback, self._fell_back = fallback, False

        def on_session_error(self, error: Any) -> bool:
            if isinstance(error, RealtimeModelError) and self.realtime_fallback is not None:
                if not self._fell_back:
                    self._fell_back = True
                    self.realtime_fallback(error)
                # later errors come from the realtime model being replaced (its
                # retries give up after the switch); they must not close the session
                return True
            return False

    return RuntimeSession


@dataclass
class SessionRunner:
    """One conversation with one agent: connects its MCP servers, builds the agent,
    starts the livekit session, and switches realtime -> pipeline when needed."""

    loaded: LoadedSpec
    plugins: Plugins
    text_only: bool = False
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    listeners: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    # shared warm connections (serve: its McpPool, or a job process's GatewayPool);
    # None: the runner connects its own and closes them
    pool: McpPool | GatewayPool | None = None
    connections: dict[str, McpConnection] = field(default_factory=dict)
    tool_lock: dict[str, dict[str, str]] | None = None  # the spec's `tools --lock` approvals
    recorder: CallRecorder | None = None
    # the agents this call may hand off to, as they were when it started (handoffs.py)
    specs: dict[str, LoadedSpec] = field(default_factory=dict)
    # a conversation test's scripted model (testing/scripted.py): every agent's LLM, text only
    llm_override: Any = None
    # a conversation test's mocked tools that no server of the agent lists now (one may be
    # down): offered under their names, so livekit's mock_tools can answer them
    stand_ins: list[Any] = field(default_factory=list)
    # a call without a room (chat --audio-in, tests): livekit io.AudioInput / io.AudioOutput
    audio_in: Any = None
    audio_out: Any = None
    session: Any = None
    mode: str = ""
    tools: list[Any] = field(default_factory=list)
    switched: asyncio.Event = field(default_factory=asyncio.Event)  # set once on realtime -> pipeline
    _models: list[Models] = field(default_factory=list)
    _own_pool: McpPool | None = None
    _owned: list[McpConnection] = field(default_factory=list)  # this call's `shared: false` connections
    _on_up: Any = None
    _tool_updates: set[asyncio.Task[None]] = field(default_factory=set)
    _started: bool = False
    tools_ready_at: float = 0.0  # perf_counter() once the MCP connections were taken and the tools built
    marks: dict[str, float] = field(default_factory=dict)  # perf_counter() at each step of start()
    _pending_fallback: Any = None  # a realtime error seen while session.start() was still running
    _greeting_msg: Any = None  # text mode: the greeting as an assistant message of the history
    _greeting_task: asyncio.Task[None] | None = None
    _claims: Any = None  # the ClaimWatch of the session
    _span: Any = tracing.NO_SPAN  # the session's span (the root of its trace) when tracing is on
    _counted_as: str | None = None  # the agent this session counts under in voice_runtime_sessions_current
    _warming: asyncio.Future[Any] | None = None  # handoff targets' MCP servers, connected while the call goes on
    handoff_turn: TurnHandoffs = field(init=False)  # the handoffs of the caller's current turn (its bound)
    _exit_stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    def __post_init__(self) -> None:
        from .handoffs import TurnHandoffs

        self.handoff_turn = TurnHandoffs(self)

    @property
    def name(self) -> str:
        return self.loaded.name

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Tell whoever watches the session (``chat``, a simulated call's report)."""
        for listener in self.listeners:
            listener(event, data)

    _emit = emit

    async def connect_mcp(self) -> None:
        """Take the spec's MCP connections from the pool (warm in ``serve``). A down
        server costs its own tools, unless it is ``required``."""
        if self.pool is None:
            self.pool = self._own_pool = McpPool()
        acquired = await self.pool.acquire(self.loaded)
        self.connections, self.tool_lock = acquired.connections, acquired.lock
        self._owned += acquired.owned  # a handoff acquires again: every call-owned connection closes at the end
        for name, why in acquired.unavailable.items():
            if self.connections[name].server.required:
                raise SessionRefused(f"required MCP server {name} is unavailable: {why}")
            log.warning("agent %s: MCP server %s is unavailable, starting without its tools: %s",
                        self.name, name, why, extra=SHOWN_AS_EVENT)
            self._emit("warning", {"message": f"MCP server {name} unavailable: {why}"})
        loop = asyncio.get_running_loop()
        # reconnects are seen in the pool's loop; the agent lives in this one
        self._on_up = lambda conn: loop.call_soon_threadsafe(self._server_back, conn)
        for conn in self.connections.values():
            conn.on_up.append(self._on_up)

    def build_tools(self) -> list[Any]:
        if self.recorder is None:
            self.recorder = CallRecorder(self.name, self.session_id, session_sinks(self.plugins), self.listeners,
                                         tracer=tracing.tracer(),
                                         transports={n: c.transport for n, c in self.connections.items()},
                                         traced_arguments=frozenset(
                                             n for n, c in self.connections.items() if c.server.trace_arguments))
        plugin = []
        for tool_name in self.loaded.spec.tools:
            registered = self.plugins.registry.tools[tool_name]
            plugin += [(f"plugin:{registered.plugin}", t) for t in plugin_tools(registered, self.recorder)]
        # a tool that would make livekit or the model API refuse the session is withheld
        plan = plan_tools(self.connections, plugin_tools=plugin, lock=self.tool_lock)
        for line in plan.warnings():
            log.warning("agent %s session %s: %s", self.name, self.session_id, line, extra=SHOWN_AS_EVENT)
            self._emit("warning", {"message": line})
        from .handoffs import transfer_tools

        tools = plan.plugin + mcp_tools(plan, self.recorder, self._fillers()) + transfer_tools(self)
        if not self.stand_ins:
            return tools
        names = {getattr(getattr(t, "info", None), "name", None) for t in tools}
        return tools + [t for t in self.stand_ins if t.info.name not in names]

    async def switch_to(self, target: LoadedSpec) -> None:
        """The session continues as ``target`` (a handoff): its MCP servers from the
        pool, its tools, its models; the livekit Agent is built by the caller."""
        for conn in self.connections.values():
            if self._on_up in conn.on_up:
                conn.on_up.remove(self._on_up)
        self.loaded, self.recorder = target, None
        self._count_as(target.name)
        spec: Any = target.spec
        self.mode = "realtime" if spec.realtime is not None and self.llm_override is None else "pipeline"
        if self.session is not None:
            with_fallback = self.mode == "realtime" and spec.pipeline is not None
            self.session.arm_fallback(self._fall_back_to_pipeline if with_fallback else None)
        if self.mode == "realtime":
            self.switched = asyncio.Event()  # not fallen back yet: this is the target's realtime model
        await self.connect_mcp()
        self.tools = self.build_tools()

    def agent_kwargs(self, chat_ctx: Any) -> dict[str, Any]:
        """What ``build_agent`` gives livekit's Agent for the current spec and mode."""
        models = self._build_models(self.mode)
        return build_agent_kwargs(self.loaded, models, self.tools, chat_ctx=chat_ctx)

    def _fillers(self) -> Fillers:
        from .fillers import Fillers, speak_in

        # the session and mode at the time of the line: a realtime -> pipeline switch
        # moves the fillers to the pipeline's TTS
        servers = {id(conn): self.loaded.spec.mcp_servers[name] for name, conn in self.connections.items()
                   if name in self.loaded.spec.mcp_servers}
        return Fillers(self.name, lambda line: speak_in(self.session, self.mode, line), self.listeners,
                       servers=servers)

    def _server_back(self, conn: McpConnection) -> None:
        """A server reconnected: its tools (maybe changed, maybe new) reach the
        agent in the same conversation."""
        if self.session is None or getattr(self.session, "current_agent", None) is None:
            return
        self.tools = self.build_tools()
        log.info("agent %s session %s: MCP server %s is back; %d tools", self.name, self.session_id,
                 conn.name, len(self.tools))
        self.offer_tools(self.tools)

    def offer_tools(self, tools: list[Any]) -> None:
        """The current agent's tools become ``tools`` (livekit's update_tools, in the background)."""
        agent = getattr(self.session, "current_agent", None) if self.session is not None else None
        if agent is None:
            return
        task = asyncio.ensure_future(agent.update_tools(tools))
        self._tool_updates.add(task)
        task.add_done_callback(self._tool_updates.discard)

    async def start(self, *, room: Any = None) -> Any:
        from ..observe.metrics import observe_session

        if tracing.setup():
            tracing.add_secrets(self.loaded)
        # the root of the call's trace: livekit's spans and our tool calls are its children
        self._span = tracing.start_root("session", {
            "voice_runtime.agent": self.name, "voice_runtime.session_id": self.session_id,
            "voice_runtime.spec_digest": self.loaded.digest})
        try:
            session = await self._start(room)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                outcome = "refused" if isinstance(exc, SessionRefused) else "failed"
                observe_session(self.name, outcome)
                self._span.set_attribute("voice_runtime.session.outcome", outcome)
                self._span.set_attribute("voice_runtime.session.error", f"{type(exc).__name__}: {exc}")
            await self.aclose()  # no MCP child process outlives a failed start
            raise
        observe_session(self.name, "started")
        self._span.set_attribute("voice_runtime.session.outcome", "started")
        self._span.set_attribute("voice_runtime.session.mode", self.mode)
        return session

    async def _start(self, room: Any) -> Any:
        spec: Any = self.loaded.spec
        self.marks["start"] = time.perf_counter()
        await self.connect_mcp()
        self.marks["mcp"] = time.perf_counter()
        self.tools = self.build_tools()
        self.tools_ready_at = self.marks["tools"] = time.perf_counter()
        self.mode = "realtime" if spec.realtime is not None and self.llm_override is None else "pipeline"
        models = self._build_models(self.mode)
        agent = self._text_mode_agent(models) if self.text_only else build_agent(self.loaded, models, self.tools)
        session_kwargs: dict[str, Any] = {}
        if self.text_only:
            session_kwargs = {"vad": None, "turn_handling": {"turn_detection": None}}
        else:
            if self.audio_in is not None:
                # livekit ignores barge-in for the first 3 s of agent speech while a room's
                # echo canceller warms up; a caller played from a file has no echo
                session_kwargs["aec_warmup_duration"] = None
                # ...and has said all it will when the session closes: no final transcript
                # is pending (livekit would wait 2 s for one)
                session_kwargs["session_close_transcript_timeout"] = 0.1
            interrupt_after_ms = getattr(spec.pipeline, "interrupt_after_ms", None)
            if interrupt_after_ms is not None:
                # a session option in livekit (the agent's turn_handling does not reach it)
                session_kwargs["turn_handling"] = {"interruption": {"min_duration": interrupt_after_ms / 1000}}
        self.session = _runtime_session_class()(**session_kwargs)
        if self.mode == "realtime" and spec.pipeline is not None:
            self.session.realtime_fallback = self._fall_back_to_pipeline
        self.session.on("close", self._on_close)
        from .claims import ClaimWatch

        self._claims = ClaimWatch(self)
        self._claims.attach(self.session)
        self.handoff_turn.attach(self.session)
        if self.audio_in is not None:
            from livekit.agents.utils import http_context

            # outside a job (chat --audio-in, tests) the speech plugins' websockets need
            # the HTTP session a job would give them; inside a job this is a no-op
            await self._exit_stack.enter_async_context(http_context.open())
            self.session.input.audio = self.audio_in
        if self.audio_out is not None:
            self.session.output.audio = self.audio_out
        await self.session.start(agent, **({"room": room} if room is not None else {}))
        self._started = True
        self._count_as(self.name)
        targets = [s for name, s in self.specs.items() if name != self.name]
        if targets and self.pool is not None:
            # a handoff then finds its target's servers connected: no handshake on the caller's time
            self._warming = asyncio.ensure_future(self.pool.warm(targets))
        notify(self.plugins, "voice_runtime_session_started", agent=self.name, session_id=self.session_id,
               spec=self.loaded.spec, mode=self.mode)
        if self._pending_fallback is not None:
            # livekit's update_agent() before start() has returned swaps nothing: the
            # realtime model failed while starting, so swap now
            self._fall_back_to_pipeline(self._pending_fallback)
        if spec.greeting and not self.text_only:
            self._greeting_task = asyncio.ensure_future(self._greet(spec.greeting))
        return self.session

    def _build_models(self, mode: str) -> Models:
        if self.llm_override is not None:
            models = Models("pipeline", self.llm_override)
        else:
            models = build_models(self.plugins, self.loaded, mode, text_only=self.text_only)
        self._models.append(models)  # closed in aclose(): realtime models own an HTTP session
        return models

    async def run_turn(self, text: str) -> Any:
        """One text turn (``session.run``). If the realtime model fails during the
        turn, the turn is asked again of the pipeline once it has taken over."""
        if not self.switched.is_set():
            await self._realtime_connected()
        if self.switched.is_set():
            await self._pipeline_active()
        asked_at = time.time()
        run = asyncio.ensure_future(self.session.run(user_input=text))
        if self.switched.is_set() or self.session.realtime_fallback is None:
            return await run
        switch = asyncio.ensure_future(self.switched.wait())
        done, _ = await asyncio.wait({run, switch}, return_when=asyncio.FIRST_COMPLETED)
        if run in done:
            switch.cancel()
            return run.result()
        await self._pipeline_active()
        run.cancel()
        # the socket may drop just after the realtime model answered this turn: its
        # answer (in the history the pipeline inherited) stands; asking again would
        # say it twice. Words it took in without answering are asked again, once.
        answered = await self._answer_in_history(text, asked_at)
        if answered is not None:
            return answered
        return await self.session.run(user_input=text)

    async def _answer_in_history(self, text: str, asked_at: float) -> Any:
        from livekit.agents import ChatMessageEvent

        agent = self.session.current_agent
        ctx = agent.chat_ctx.copy()
        items = [i for i in ctx.items if getattr(i, "type", "") == "message"]
        asked = next((n for n in range(len(items) - 1, -1, -1)
                      if items[n].role == "user" and items[n].text_content == text
                      and items[n].created_at >= asked_at), None)
        if asked is None:
            return None
        replies = [i for i in items[asked + 1:] if i.role == "assistant"]
        if replies:
            return TurnAnswered([ChatMessageEvent(item=r) for r in replies])
        ctx.remove(items[asked])
        await agent.update_chat_ctx(ctx)
        return None

    async def _realtime_connected(self) -> None:
        """Until a realtime model's socket is up, wait for it or for the fallback: a
        turn sent to a socket that is refused costs livekit's 5 s acknowledgement
        timeout before the pipeline can answer it. Models that cannot tell
        (no ``connected`` event) are not waited for."""
        # the newest models: a handoff target's realtime model is appended after the first agent's
        connected = getattr(self._models[-1].llm, "connected", None) if self.mode == "realtime" else None
        if not isinstance(connected, asyncio.Event) or connected.is_set():
            return
        switch = asyncio.ensure_future(self.switched.wait())
        up = asyncio.ensure_future(connected.wait())
        timeout = getattr(self.loaded.spec.realtime, "connect_timeout", 10.0)
        await asyncio.wait({switch, up}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        switch.cancel()
        up.cancel()

    async def _pipeline_active(self, timeout: float = 15.0) -> None:
        # livekit swaps activities in a background task and has no public signal
        # for "the new agent is live"; its activity's agent is the tell
        from ..core.livekit_compat import active_agent

        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            agent = active_agent(self.session)
            if agent is not None and agent is self.session.current_agent:
                return
            await asyncio.sleep(0.05)

    def _text_mode_agent(self, models: Models) -> Any:
        """In text mode the greeting is shown, not spoken: the model must still know
        it was said. A pipeline gets it as the first message of the history. A
        realtime model is told in its instructions instead: livekit's
        session.start() waits up to 5 s for the server to acknowledge a starting
        history, so with the realtime model down the history would cost 5 s of
        silence before the fallback could take over."""
        greeting = self.loaded.spec.greeting
        if not greeting:
            return build_agent(self.loaded, models, self.tools)
        from livekit.agents import ChatContext

        ctx = ChatContext.empty()
        self._greeting_msg = ctx.add_message(role="assistant", content=greeting)
        if models.mode == "pipeline":
            return build_agent(self.loaded, models, self.tools, chat_ctx=ctx)
        told = f"{self.loaded.instructions}\n\nYou have already greeted the caller with: {greeting}"
        return build_agent(self.loaded, models, self.tools, instructions=told)

    async def _greet(self, greeting: str) -> None:
        """Say the greeting; a realtime model that fails before it has greeted leaves
        it to the pipeline."""
        if self.mode == "realtime" and not self.switched.is_set():
            handle = self.session.generate_reply(instructions=f"Greet the caller with exactly: {greeting}")
            switch = asyncio.ensure_future(self.switched.wait())
            said = asyncio.ensure_future(handle.wait_for_playout())
            await asyncio.wait({said, switch}, return_when=asyncio.FIRST_COMPLETED)
            switch.cancel()
            said.cancel()
            if not self.switched.is_set() or (handle.done() and not handle.interrupted):
                return
        await self._pipeline_active()
        if self.session is not None:
            await self.session.say(greeting)

    def _fall_back_to_pipeline(self, error: Any) -> None:
        if not self._started:
            self._pending_fallback = error
            return
        reason = f"{type(error.error).__name__}: {error.error}" if getattr(error, "error", None) else str(error)
        log.warning("agent %s session %s: realtime model failed (%s); switching to the pipeline",
                    self.name, self.session_id, reason, extra=SHOWN_AS_EVENT)
        from ..core.livekit_compat import realtime_session
        from ..observe.metrics import observe_fallback

        session = self.session
        rt_session = realtime_session(session)
        if rt_session is not None:
            # After a fatal error livekit's RealtimeSession.aclose() re-raises the
            # connection error, which would abort the agent swap: close it quietly.
            original = rt_session.aclose

            async def quiet_aclose() -> None:
                try:
                    await original()
                except Exception as exc:  # noqa: BLE001 - already reported above
                    log.debug("realtime session closed with %s", exc)

            rt_session.aclose = quiet_aclose
        models = self._build_models("pipeline")
        chat_ctx = session.current_agent.chat_ctx.copy()
        if self._greeting_msg is not None and chat_ctx.get_by_id(self._greeting_msg.id) is None:
            chat_ctx.insert(self._greeting_msg)  # the realtime model knew it from its instructions
        try:
            # a reply the realtime model was generating will never come: cancel it
            # so the old activity drains now instead of after livekit's 10 s timeout
            session.interrupt(force=True)
        except Exception:  # noqa: BLE001 - nothing to interrupt
            pass
        session.update_agent(build_agent(self.loaded, models, self.tools, chat_ctx=chat_ctx))
        self.mode = "pipeline"
        self.switched.set()
        self._emit("fallback", {"from": "realtime", "to": "pipeline", "reason": reason})
        observe_fallback(self.name)
        self._span.add_event("fallback", {"from_mode": "realtime", "to_mode": "pipeline", "reason": reason})
        notify(self.plugins, "voice_runtime_session_fallback", agent=self.name, session_id=self.session_id,
               from_mode="realtime", to_mode="pipeline", reason=reason)

    def _on_close(self, event: Any) -> None:
        reason = str(getattr(getattr(event, "reason", None), "value", getattr(event, "reason", "")))
        notify(self.plugins, "voice_runtime_session_ended", agent=self.name, session_id=self.session_id, reason=reason)

    def _count_as(self, agent: str | None) -> None:
        from ..observe.metrics import count_session

        if self._counted_as is not None:
            count_session(self._counted_as, -1)
        if agent is not None:
            count_session(agent, 1)
        self._counted_as = agent

    async def aclose(self) -> None:
        self._count_as(None)
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
        if self._greeting_task is not None and not self._greeting_task.done():
            self._greeting_task.cancel()
        if self._claims is not None:  # the last reply's check reports before the session is gone
            await self._claims.settle()
        if self.session is not None:
            session, self.session = self.session, None
            try:
                await session.aclose()
            except Exception:  # noqa: BLE001 - closing must not fail the caller
                log.debug("session close raised", exc_info=True)
        for conn in self.connections.values():
            if self._on_up in conn.on_up:
                conn.on_up.remove(self._on_up)
        owned, self._owned = self._owned, []
        await asyncio.gather(*(conn.aclose() for conn in owned), return_exceptions=True)
        if self._own_pool is not None:
            await self._own_pool.aclose()
        for models in self._models:
            for model in (models.llm, models.stt, models.tts):
                close = getattr(model, "aclose", None)
                if close is not None:
                    try:
                        await close()
                    except Exception:  # noqa: BLE001
                        log.debug("closing %r raised", model, exc_info=True)
        self._models.clear()
        span, self._span = self._span, tracing.NO_SPAN
        if span is not tracing.NO_SPAN:
            span.end()
            await tracing.flush()  # a job process may be ended soon after its session
        await self._exit_stack.aclose()
