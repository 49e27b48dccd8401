"""One call, from start to close: a spec turned into a running livekit AgentSession
(greeting, text turns, the realtime -> pipeline fallback), with the agent it is with
now as an ``AgentActivity`` that a handoff replaces.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.error_text import error_text, rounded_seconds
from ..mcp.pool import McpPool
from ..observe import tracing
from ..plugins.manager import notify
from .activity import SHOWN_AS_EVENT, AgentActivity
from .activity import SessionRefused as SessionRefused  # where callers catch it
from .providers import Models, build_agent, build_agent_kwargs, build_models
from .providers import import_livekit_plugins as import_livekit_plugins  # serve.supervisor, benchmarks
from .questions import ServerQuestions
from .sampling import llm_sampler

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..mcp.connection import McpConnection
    from ..mcp.gateway import GatewayPool
    from ..observe.tool_calls import CallRecorder
    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec

log = logging.getLogger("voice_runtime.build")


@dataclass
class TurnAnswered:
    """What ``run_turn`` returns for a turn the realtime model answered just before
    it failed: the answer's events, as in livekit's RunResult."""

    events: list[Any]


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


class SessionRunner:
    """One conversation: connects the agent's MCP servers, builds the agent, starts
    the livekit session, switches realtime -> pipeline when needed, and continues as
    another agent on a handoff. What belongs to the agent it is with now (spec,
    connections, tools, mode, recorder) is its ``activity``, read through the
    properties below; the rest lives as long as the call."""

    def __init__(self, loaded: LoadedSpec, plugins: Plugins, text_only: bool = False, session_id: str | None = None,
                 listeners: list[Callable[[str, dict[str, Any]], None]] | None = None,
                 pool: McpPool | GatewayPool | None = None, recorder: CallRecorder | None = None,
                 specs: dict[str, LoadedSpec] | None = None, llm_override: Any = None,
                 stand_ins: list[Any] | None = None, audio_in: Any = None, audio_out: Any = None,
                 call_context: dict[str, str] | None = None, line: Any = None,
                 background_sink: Callable[[Any], None] | None = None) -> None:
        from ..spec.call_context import for_call
        from .handoffs import TurnHandoffs

        # this call's checked context values (spec.call_context.resolve): substituted in
        # the spec it runs and every handoff target's, and in its pinned tool arguments
        self.call_context = call_context if call_context is not None else {}
        if loaded.spec.context:
            loaded = for_call(loaded, self.call_context)

        self.plugins = plugins
        self.text_only = text_only
        self.session_id = session_id if session_id is not None else uuid.uuid4().hex[:12]
        self.listeners = listeners if listeners is not None else []
        # shared warm connections (serve: its McpPool, or a job process's GatewayPool);
        # None: the runner connects its own and closes them
        self.pool = pool
        # the agents this call may hand off to, as they were when it started (handoffs.py)
        self.specs = specs if specs is not None else {}
        # a conversation test's scripted model (testing/scripted.py): every agent's LLM, text only
        self.llm_override = llm_override
        # a conversation test's mocked tools that no server of the agent lists now (one may be
        # down): offered under their names, so livekit's mock_tools can answer them
        self.stand_ins = stand_ins if stand_ins is not None else []
        # a call without a room (chat --audio-in, tests): livekit io.AudioInput / io.AudioOutput
        self.audio_in, self.audio_out = audio_in, audio_out
        self.activity = AgentActivity(self, loaded, recorder=recorder)
        self.questions = ServerQuestions()  # a server's question to the caller (MCP elicitation)
        self.questions.on_change = self._publish_question
        # a server's completion request (MCP sampling): the model of the mode the call is in now
        self.sampler = llm_sampler(lambda: self._models[-1].llm if self._models else None, lambda: self.questions.loop)
        self.session: Any = None
        self.switched = asyncio.Event()  # set once on realtime -> pipeline
        self._models: list[Models] = []
        self._own_pool: McpPool | None = None
        self._owned: list[McpConnection] = []  # this call's `shared: false` connections
        self._tool_updates: set[asyncio.Task[None]] = set()
        self._started = False
        self.tools_ready_at = 0.0  # perf_counter() once the MCP connections were taken and the tools built
        self.marks: dict[str, float] = {}  # perf_counter() at each step of start()
        self._pending_fallback: Any = None  # a realtime error seen while session.start() was still running
        self._greeting_msg: Any = None  # text mode: the greeting as an assistant message of the history
        self._greeting_task: asyncio.Task[None] | None = None
        self._claims: Any = None  # the ClaimWatch of the session
        self._span: Any = tracing.NO_SPAN  # the session's span (the root of its trace) when tracing is on
        self._counted_as: str | None = None  # the agent this session counts under in voice_runtime_sessions_current
        self._warming: asyncio.Future[Any] | None = None  # handoff targets' MCP servers, connected while the call goes on
        self.handoff_turn = TurnHandoffs(self)  # the handoffs of the caller's current turn (its bound)
        self._exit_stack = contextlib.AsyncExitStack()
        self.end_reason: str | None = None  # livekit's reason the session closed (the call report's)
        self.call_report: Any = None  # serve's job attaches one (session/call_report.py)
        # where the phone operations go (session/phone.py PhoneLine): a job's room, a test's fakes, or None
        self.line = line
        # a call without a room: where background_audio's mixed frames go (tests)
        self.background_sink = background_sink
        self.hang_up_reason: str | None = None  # ours (end_call, transferred, ...), once the call is being ended
        self._guards: Any = None  # session/phone.py CallGuards: limits and answering-machine detection
        self._background: Any = None  # livekit's BackgroundAudioPlayer, when the spec has background_audio

    # -- the agent the call is with now ---------------------------------------------------

    @property
    def loaded(self) -> LoadedSpec:
        return self.activity.loaded

    @property
    def name(self) -> str:
        return self.activity.loaded.name

    @property
    def mode(self) -> str:
        return self.activity.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.activity.mode = value

    @property
    def tools(self) -> list[Any]:
        return self.activity.tools

    @tools.setter
    def tools(self, value: list[Any]) -> None:
        self.activity.tools = value

    @property
    def connections(self) -> dict[str, McpConnection]:
        return self.activity.connections

    @property
    def tool_lock(self) -> dict[str, dict[str, str]] | None:
        return self.activity.tool_lock

    @property
    def recorder(self) -> CallRecorder | None:
        return self.activity.recorder

    # -- what the activity asks of the call -----------------------------------------------

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Tell whoever watches the session (``chat``, a simulated call's report)."""
        for listener in self.listeners:
            listener(event, data)

    _emit = emit

    def not_a_reply(self, line: str) -> None:
        """``line`` is about to be said by the runtime (a filler, a server's progress),
        not by the model: no claim check reads it."""
        if self._claims is not None:
            self._claims.not_a_reply(line)

    def mcp_pool(self) -> McpPool | GatewayPool:
        if self.pool is None:
            self.pool = self._own_pool = McpPool()
        return self.pool

    def own(self, connections: list[McpConnection]) -> None:
        self._owned += connections

    async def connect_mcp(self) -> None:
        await self.activity.connect_mcp()

    async def claims_settled(self) -> None:
        """Every claims check and judge verdict of the turns so far has reported."""
        if self._claims is not None:
            await self._claims.settle()

    def build_tools(self) -> list[Any]:
        return self.activity.build_tools()

    async def switch_to(self, target: LoadedSpec) -> None:
        """The session continues as ``target`` (a handoff): its MCP servers from the
        pool, its tools, its models; the livekit Agent is built by the caller."""
        if target.spec.context:
            from ..spec.call_context import for_call

            target = for_call(target, self.call_context)
        spec: Any = target.spec
        mode = "realtime" if spec.realtime is not None and self.llm_override is None else "pipeline"
        self.activity = self.activity.moved_to(target, mode)
        self._count_as(target.name)
        if self.session is not None:
            with_fallback = self.mode == "realtime" and spec.pipeline is not None
            self.session.arm_fallback(self._fall_back_to_pipeline if with_fallback else None)
        if self.mode == "realtime":
            self.switched = asyncio.Event()  # not fallen back yet: this is the target's realtime model
        await self.activity.connect_mcp()
        self.tools = self.activity.build_tools()
        if spec.telephony is not None and spec.telephony.max_call_seconds is not None:
            self._limit_call(spec.telephony)

    def _limit_call(self, telephony: Any) -> None:
        """A handoff target's ``max_call_seconds`` replaces the call's, counted from the
        call's start. Its silence_timeout and voicemail cannot: livekit's user_away_timeout
        is fixed when the session starts, and a machine answers before any handoff."""
        from .phone import CallGuards

        if self._guards is None:
            self._guards = CallGuards(self, telephony, self.hang_up, started=self.marks["start"])
        self._guards.limit(telephony.max_call_seconds)

    def agent_kwargs(self, chat_ctx: Any) -> dict[str, Any]:
        """What ``build_agent`` gives livekit's Agent for the current spec and mode."""
        models = self._build_models(self.mode)
        kwargs = build_agent_kwargs(self.loaded, models, self.tools, chat_ctx=chat_ctx)
        if not self.text_only:
            from .turn_taking import agent_turn_handling

            # the session's options are the first agent's; a handoff target takes turns its
            # own way through the keys livekit reads from the Agent
            turn_handling = agent_turn_handling(kwargs.get("turn_handling", {}), self.loaded.spec)
            if turn_handling:
                kwargs["turn_handling"] = turn_handling
        return kwargs

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
                self._span.set_attribute("voice_runtime.session.error", error_text(exc))
            await self.aclose()  # no MCP child process outlives a failed start
            raise
        observe_session(self.name, "started")
        self._span.set_attribute("voice_runtime.session.outcome", "started")
        self._span.set_attribute("voice_runtime.session.mode", self.mode)
        return session

    def _publish_question(self, question: Any) -> None:
        """Serve's status page lists a question waiting for this call's caller."""
        from ..observe.pending_questions import publish

        publish(self.name, self.session_id, question.server if question else None,
                [f.name for f in question.fields] if question else [])

    async def _start(self, room: Any) -> Any:
        spec: Any = self.loaded.spec
        self.marks["start"] = time.perf_counter()
        self.questions.bind()
        await self.activity.connect_mcp()
        self.marks["mcp"] = time.perf_counter()
        self.tools = self.activity.build_tools()
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
            from .turn_taking import merge_turn_handling

            # session options too: the agent a call starts with sets them for the call
            turn_handling = merge_turn_handling(session_kwargs.get("turn_handling", {}), spec)
            if turn_handling:
                session_kwargs["turn_handling"] = turn_handling
        if spec.telephony is not None:
            from .phone import CallGuards

            self._guards = CallGuards(self, spec.telephony, self.hang_up, started=self.marks["start"])
            if not self.text_only:  # a typed call has no silence, no machine to detect
                session_kwargs.update(self._guards.session_options())
        self.session = _runtime_session_class()(**session_kwargs)
        if self.mode == "realtime" and spec.pipeline is not None:
            self.session.realtime_fallback = self._fall_back_to_pipeline
        self.session.on("close", self._on_close)
        if self.call_report is not None:
            self.call_report.attach(self.session)
        from .claims import ClaimWatch

        self._claims = ClaimWatch(self)
        self._claims.attach(self.session)
        self.handoff_turn.attach(self.session)
        self.questions.attach(self.session)
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
        if self._guards is not None:
            self._guards.attach(self.session, audio=not self.text_only)
        if not self.text_only:
            from .turn_taking import start_background

            self._background = await start_background(spec.background_audio, self.loaded.path.parent, self.session,
                                                      room, self.background_sink)
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
        from ..core.terminal import as_text

        # a lone surrogate (a caller's JSON escape, bytes that are not UTF-8) failed
        # every LLM request of the turn, each retried
        text = as_text(text)
        if not self.switched.is_set():
            await self._realtime_connected()
        if self.switched.is_set():
            await self._pipeline_active()
        asked_at = time.time()
        try:
            return await self._run_turn(text, asked_at)
        except RuntimeError:
            if self.hang_up_reason is None:
                raise
            # the agent ended the call in this turn (end_call): livekit closes the session
            # under the turn's run once its speech is done, which may be before the run
            # noticed the closing line; what was said is in the history all the same
            return TurnAnswered(self._said_since(asked_at))

    def _said_since(self, asked_at: float) -> list[Any]:
        from livekit.agents import ChatMessageEvent

        return [ChatMessageEvent(item=i) for i in self.session.history.items
                if getattr(i, "type", "") == "message" and i.role == "assistant" and i.created_at >= asked_at]

    async def _run_turn(self, text: str, asked_at: float) -> Any:
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
        reason = error_text(error.error) if getattr(error, "error", None) else rounded_seconds(str(error))
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

    def hang_up(self, reason: str) -> None:
        """The call is being ended by us (a phone tool or limit, session/phone.py); the
        first reason given is the one reported."""
        if self.hang_up_reason is not None:
            return
        self.hang_up_reason = reason
        if self.call_report is not None:  # a simulated call may be reported before the session has closed
            self.call_report.end_reason = reason
        from .phone import tell

        tell(self, "hang_up", reason=reason)

    def _on_close(self, event: Any) -> None:
        from ..observe.metrics import observe_call_end
        from .phone import end_job

        reason = str(getattr(getattr(event, "reason", None), "value", getattr(event, "reason", "")))
        self.end_reason = self.hang_up_reason or self.end_reason or reason
        observe_call_end(self.name, self.end_reason)
        if self.hang_up_reason not in (None, "end_call"):  # livekit's EndCallTool ends its job itself
            end_job(self.line, self.end_reason, delete_room=self._deletes_room())
        if self.call_report is not None:  # the history is still there: the session closes after this
            self.call_report.snapshot_transcript()
        notify(self.plugins, "voice_runtime_session_ended", agent=self.name, session_id=self.session_id, reason=reason)

    def _deletes_room(self) -> bool:
        end_call = getattr(self.loaded.spec.telephony, "end_call", None)
        return end_call.delete_room if end_call is not None else True

    def _count_as(self, agent: str | None) -> None:
        from ..observe.metrics import count_session

        if self._counted_as is not None:
            count_session(self._counted_as, -1)
        if agent is not None:
            count_session(agent, 1)
        self._counted_as = agent

    async def aclose(self) -> None:
        self._count_as(None)
        if self._guards is not None:
            await self._guards.aclose()
        if self._background is not None:
            background, self._background = self._background, None
            with contextlib.suppress(Exception):
                await background.aclose()
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
        self.activity.detach()
        self.questions.close()  # a hang-up cancels a server's pending question
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
