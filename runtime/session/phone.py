"""An agent's phone behaviour at run time (the spec's ``telephony:`` block, see
``spec/telephony_agent.py``), built from livekit's own parts where they exist:

- ``end_call``: livekit's ``EndCallTool`` (an ``end_call`` tool; the session ends
  after the turn, the job and the room with it);
- ``transfer``: a ``transfer_call`` tool. cold: livekit-api's
  ``SipService.transfer_sip_participant`` (a SIP REFER of the caller's leg); warm:
  livekit's ``WarmTransferTask`` (calls the human in a side room, briefs them, moves
  them into the caller's room);
- ``dtmf``: ``send_dtmf`` (``LocalParticipant.publish_dtmf``, as livekit's
  ``send_dtmf_events`` does, with its codes and pacing) and ``collect_digits``
  (livekit's ``GetDtmfTask``);
- ``voicemail``: livekit's answering-machine detection ``AMD`` on the call's first
  words, then the message and a hang-up, or a hang-up;
- ``ivr_detection``, ``max_call_seconds``, ``silence_timeout`` (livekit's
  ``user_away_timeout``: the caller's state turns ``away``).

Where the call's phone operations go is its ``PhoneLine``: in a LiveKit job, the
room and the job's server API; in a call without a room (``chat --audio-in``,
tests) whatever the caller of ``SessionRunner`` gives. Every outcome (hang-up,
transfer, DTMF, voicemail) is told once as a ``("phone", {...})`` session event
(the call report, ``chat``) and counted in the metrics. Keyed digits are counted,
never shown: they are often PINs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..spec.telephony_agent import DTMF_DIGITS, E164

if TYPE_CHECKING:
    from ..spec.telephony_agent import Telephony, Transfer

log = logging.getLogger("voice_runtime.phone")

# livekit's send_dtmf_events waits this long between digits (beta/tools/send_dtmf.py)
DTMF_GAP_S = 0.3
PAUSE_S = 0.5  # a `w` in digits, as livekit's dtmf option of a SIP participant
_PENDING: set[asyncio.Future[Any]] = set()  # transfers waiting for their line to be said


@dataclass
class PhoneLine:
    """Where a call's phone operations go."""

    room_name: str
    # livekit-api's LiveKitAPI (its ``sip`` service); made on first use
    api: Callable[[], Any]
    # the SIP caller's participant identity, looked up when needed (they may join late)
    caller_identity: Callable[[], str | None]
    # LocalParticipant.publish_dtmf(code=, digit=)
    publish_dtmf: Callable[..., Awaitable[None]] | None = None
    # what emits ``sip_dtmf_received`` (rtc.SipDTMF): the room
    dtmf_events: Any = None
    in_job: bool = False  # a LiveKit job with a room: warm transfer and room deletion work

    @classmethod
    def of_job(cls, ctx: Any) -> PhoneLine:
        from livekit import rtc

        def caller() -> str | None:
            for participant in ctx.room.remote_participants.values():
                if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
                    return str(participant.identity)
            return None

        return cls(room_name=ctx.room.name, api=lambda: ctx.api, caller_identity=caller,
                   publish_dtmf=lambda **kw: ctx.room.local_participant.publish_dtmf(**kw),
                   dtmf_events=ctx.room, in_job=True)


class PhoneOwner(Protocol):
    """What the phone behaviour needs of its call (the runner)."""

    name: str
    session: Any
    mode: str  # pipeline or realtime: how a line is said
    line: PhoneLine | None

    def emit(self, event: str, data: dict[str, Any]) -> None: ...


def tell(owner: PhoneOwner, event: str, /, **data: Any) -> None:
    """One phone outcome: the session's listeners (call report, chat) and the metrics."""
    from ..observe.metrics import observe_phone

    owner.emit("phone", {"event": event, "agent": owner.name, **data})
    observe_phone(owner.name, event, data)
    log.info("agent %s: phone %s %s", owner.name, event, " ".join(f"{k}={v}" for k, v in data.items()),
             extra={"agent": owner.name, "phone": event})


def _say(owner: PhoneOwner, line: str) -> Any:
    """Say ``line`` as the agent, in the mode the call is in (a realtime model has no
    TTS: it is asked to say it, as filler lines are)."""
    from .fillers import speak_in

    return speak_in(owner.session, owner.mode, line)


def transfer_to_uri(to: str) -> str:
    """What LiveKit's transfer wants: tel:+E164, or the sip: URI as it is."""
    return f"tel:{to}" if E164.fullmatch(to) else to


def tool_names(tools: list[Any]) -> set[str]:
    """The names the model sees of ``tools`` (a livekit Toolset, EndCallTool, holds several)."""
    names: set[str] = set()
    for tool in tools:
        inner = getattr(tool, "tools", None)
        for one in inner if isinstance(inner, list) else [tool]:
            name = getattr(getattr(one, "info", None), "name", None)
            if name:
                names.add(name)
    return names


@dataclass
class _Listing:
    """The owner of tools built only to be listed (``voice-runtime tools``): no call,
    nothing said or told."""

    name: str = "listing"
    session: Any = None
    mode: str = "pipeline"
    line: PhoneLine | None = None

    def emit(self, event: str, data: dict[str, Any]) -> None:
        pass


def phone_tool_listing(telephony: Telephony | None) -> list[dict[str, Any]]:
    """``name``, ``description`` and ``parameters`` of each tool ``phone_tools`` gives
    the model, as the model is shown them (built, never called)."""
    from livekit.agents.llm.utils import build_legacy_openai_schema

    listed: list[dict[str, Any]] = []
    for tool in phone_tools(_Listing(), telephony, lambda reason: None):
        inner = getattr(tool, "tools", None)
        for one in inner if isinstance(inner, list) else [tool]:
            raw = getattr(one.info, "raw_schema", None)
            schema = raw if raw is not None else build_legacy_openai_schema(one, internally_tagged=True)
            listed.append({key: schema.get(key) for key in ("name", "description", "parameters")})
    return listed


def phone_tools(owner: PhoneOwner, telephony: Telephony | None, hang_up: Callable[[str], None]) -> list[Any]:
    """The tools the spec's ``telephony:`` block gives the model."""
    if telephony is None:
        return []
    tools: list[Any] = []
    if telephony.end_call is not None:
        tools.append(_end_call_tool(owner, telephony, hang_up))
    if telephony.transfer:
        tools.append(_transfer_tool(owner, telephony.transfer, hang_up))
    if telephony.dtmf is not None and telephony.dtmf.send:
        tools.append(_send_dtmf_tool(owner))
    if telephony.dtmf is not None and telephony.dtmf.collect is not None:
        tools.append(_collect_tool(owner, telephony))
    return tools


def _end_call_tool(owner: PhoneOwner, telephony: Telephony, hang_up: Callable[[str], None]) -> Any:
    from ..core.livekit_compat import end_call_toolset_class

    spec = telephony.end_call
    assert spec is not None

    async def called(event: Any) -> None:
        hang_up("end_call")
        if spec.say:
            # said by us, word for word; the model is given nothing to answer
            # (end_instructions=None), so the session ends once the line has played
            _say(owner, spec.say)

    line = owner.line
    return end_call_toolset_class()(
        end_instructions=None if spec.say else "say goodbye to the caller",
        delete_room=spec.delete_room and line is not None and line.in_job, on_tool_called=called)


def _transfer_tool(owner: PhoneOwner, targets: list[Transfer], hang_up: Callable[[str], None]) -> Any:
    from livekit.agents import function_tool
    from livekit.agents.llm import ToolError

    by_name = {t.name: t for t in targets}
    listing = "; ".join(f"{t.name}: {t.when}" for t in targets)
    schema = {
        "name": "transfer_call",
        "description": "Transfer the caller to a person or another line. Targets: " + listing,
        "parameters": {"type": "object", "properties": {"target": {"type": "string", "enum": list(by_name)}},
                       "required": ["target"], "additionalProperties": False},
    }

    async def transfer_call(raw_arguments: dict[str, Any]) -> Any:
        target = by_name.get(str(raw_arguments.get("target")))
        if target is None:
            raise ToolError(f"unknown transfer target; one of: {', '.join(by_name)}")
        if target.mode == "warm":
            return await _warm(owner, target, hang_up)
        return await _cold(owner, target, hang_up)

    return function_tool(transfer_call, raw_schema=schema)


async def _cold(owner: PhoneOwner, target: Transfer, hang_up: Callable[[str], None]) -> Any:
    from livekit.agents.llm import ToolError, ToolResult

    line = owner.line
    identity = line.caller_identity() if line is not None else None
    if line is None or identity is None:
        why = "no phone line in this call" if line is None else "no SIP caller in the room"
        tell(owner, "transfer", kind="cold", target=target.name, to=target.to, outcome="failed", reason=why)
        raise ToolError(f"the transfer is not possible: {why}")
    if target.say:
        handle = _say(owner, target.say)
        # the tool's own speech is done when the tool returns; the line plays after it,
        # so the REFER waits for it in the background
        task = asyncio.ensure_future(_refer_after(owner, target, line, identity, handle, hang_up))
        _PENDING.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_PENDING.discard)
        return ToolResult(f"Transferring the caller to {target.name}.", reply_required=False)
    outcome = await _refer(owner, target, line, identity, hang_up)
    if outcome != "transferred":
        raise ToolError(f"the transfer to {target.name} failed ({outcome}); tell the caller")
    return ToolResult(f"The caller was transferred to {target.name}.", reply_required=False)


async def _refer_after(owner: PhoneOwner, target: Transfer, line: PhoneLine, identity: str, handle: Any,
                       hang_up: Callable[[str], None]) -> None:
    with contextlib.suppress(Exception):
        await handle.wait_for_playout()
    outcome = await _refer(owner, target, line, identity, hang_up)
    if outcome != "transferred" and owner.session is not None:
        owner.session.generate_reply(
            instructions=f"The transfer to {target.name} failed ({outcome}). Tell the caller and offer help.")


async def _refer(owner: PhoneOwner, target: Transfer, line: PhoneLine, identity: str,
                 hang_up: Callable[[str], None]) -> str:
    """The cold transfer itself; returns its outcome (transferred, failed: ...)."""
    from livekit import api

    request = api.TransferSIPParticipantRequest(room_name=line.room_name, participant_identity=identity,
                                                transfer_to=transfer_to_uri(target.to), play_dialtone=False)
    try:
        response = await line.api().sip.transfer_sip_participant(request)
    except Exception as exc:  # noqa: BLE001 - told to the model and recorded
        outcome, reason = "failed", f"{type(exc).__name__}: {exc}"
    else:
        done = response.status in (api.SIPTransferStatus.STS_TRANSFER_SUCCESSFUL,
                                    api.SIPTransferStatus.STS_TRANSFER_ONGOING)
        # an empty response (an older server) counts as done: no error was raised
        outcome = "transferred" if done or not response.transfer_id else "failed"
        reason = "" if outcome == "transferred" else api.SIPTransferReason.Name(response.reason)
    tell(owner, "transfer", kind="cold", target=target.name, to=target.to, participant=identity,
         outcome=outcome, **({"reason": reason} if reason else {}))
    if outcome == "transferred":
        hang_up("transferred")  # the caller's leg went elsewhere: this session is over
        if owner.session is not None:
            owner.session.shutdown()
    return outcome if outcome == "transferred" else f"failed: {reason}"


async def _warm(owner: PhoneOwner, target: Transfer, hang_up: Callable[[str], None]) -> Any:
    from livekit.agents.llm import ToolError

    line = owner.line
    if line is None or not line.in_job:
        # WarmTransferTask joins a side room of the job's LiveKit server and dials the human there
        why = "a warm transfer needs a LiveKit room"
        tell(owner, "transfer", kind="warm", target=target.name, to=target.to, outcome="failed", reason=why)
        raise ToolError(f"the transfer is not possible: {why}")
    if target.say:
        _say(owner, target.say)
    try:
        result = await warm_transfer_task(owner, target)
    except Exception as exc:  # noqa: BLE001 - ToolError("could not dial human agent", "declined ...")
        tell(owner, "transfer", kind="warm", target=target.name, to=target.to, outcome="failed", reason=str(exc))
        raise ToolError(f"the warm transfer to {target.name} failed: {exc}; tell the caller") from None
    tell(owner, "transfer", kind="warm", target=target.name, to=target.to, outcome="transferred",
         participant=getattr(result, "human_agent_identity", ""))
    # the human is with the caller now, in this room: the agent leaves the conversation,
    # but the room stays and so does the job (WarmTransferTask deletes the room once one
    # of them leaves)
    hang_up("warm_transferred")
    owner.session.shutdown()
    return None


def warm_transfer_task(owner: PhoneOwner, target: Transfer) -> Any:
    """livekit's WarmTransferTask for ``target``, briefed with the call so far: its
    instructions (livekit's, the conversation, ``briefing``) are what the agent that
    talks to the human is given; it dials ``to`` through ``sip_trunk_id``."""
    from livekit.agents.beta.workflows import WarmTransferTask

    # the session has no models of its own (each agent brings its own): the task and
    # the human's side session use the current agent's
    kwargs: dict[str, Any] = {"chat_ctx": owner.session.history, **_agent_models(owner.session)}
    if target.sip_trunk_id is not None:
        kwargs["sip_trunk_id"] = target.sip_trunk_id
    if target.ringing_timeout is not None:
        kwargs["ringing_timeout"] = target.ringing_timeout
    if target.briefing is not None:
        kwargs["extra_instructions"] = target.briefing
    return WarmTransferTask(target.to, **kwargs)


def _agent_models(session: Any) -> dict[str, Any]:
    """The current agent's models, for livekit's tasks that would take the session's."""
    agent = session.current_agent
    return {key: getattr(agent, key) for key in ("llm", "stt", "tts", "vad")}


def _send_dtmf_tool(owner: PhoneOwner) -> Any:
    from livekit.agents import function_tool
    from livekit.agents.beta.workflows.utils import DtmfEvent, dtmf_event_to_code
    from livekit.agents.llm import ToolError

    async def send_dtmf(digits: str) -> str:
        """Press keys on the phone keypad, e.g. to pick an option of an automated menu.

        Args:
            digits: The keys, in order: 0-9, * and #; w waits half a second.
        """
        line = owner.line
        if not DTMF_DIGITS.fullmatch(digits):
            raise ToolError("digits may hold only 0-9, *, # and w")
        if line is None or line.publish_dtmf is None:
            tell(owner, "dtmf", direction="sent", count=0, outcome="failed", reason="no phone line in this call")
            raise ToolError("there is no phone line to send keys on")
        sent = 0
        for n, digit in enumerate(digits):
            if digit == "w":
                await asyncio.sleep(PAUSE_S)
                continue
            if n:
                await asyncio.sleep(DTMF_GAP_S)
            await line.publish_dtmf(code=dtmf_event_to_code(DtmfEvent(digit)), digit=digit)
            sent += 1
        tell(owner, "dtmf", direction="sent", count=sent, outcome="ok")
        return f"Pressed {sent} keys."

    return function_tool(send_dtmf)


def _collect_tool(owner: PhoneOwner, telephony: Telephony) -> Any:
    from livekit.agents import function_tool
    from livekit.agents.beta.workflows.utils import DtmfEvent
    from livekit.agents.llm import ToolError

    from ..core.livekit_compat import dtmf_task_class

    collect = telephony.dtmf.collect  # type: ignore[union-attr]
    assert collect is not None

    async def collect_digits() -> str:
        """Ask the caller to key digits in on their phone keypad and wait for them."""
        line = owner.line
        if line is None or line.dtmf_events is None:
            tell(owner, "dtmf", direction="collected", count=0, outcome="failed", reason="no phone line in this call")
            raise ToolError("there is no phone line to read keys from")
        task = dtmf_task_class()(line.dtmf_events, _agent_models(owner.session), num_digits=collect.digits, dtmf_input_timeout=collect.timeout,
                                 dtmf_stop_event=DtmfEvent(collect.stop))
        try:
            result = await task
        except ToolError as exc:
            tell(owner, "dtmf", direction="collected", count=0, outcome="incomplete", reason=str(exc))
            raise
        digits = "".join(ch for ch in result.user_input if ch.isdigit() or ch in "*#")
        tell(owner, "dtmf", direction="collected", count=len(digits), outcome="ok")
        return f"The caller keyed: {digits}"

    return function_tool(collect_digits)


def end_job(line: PhoneLine | None, reason: str, *, delete_room: bool) -> None:
    """After our hang-up closed the session: in a LiveKit job, the room goes (which
    disconnects a SIP caller) and the job ends, as livekit's EndCallTool does. After a
    cold transfer the room is left to LiveKit (the caller's leg was referred away);
    after a warm one the caller and the human are talking in it: nothing is ended."""
    if line is None or not line.in_job or reason == "warm_transferred":
        return
    delete_room = delete_room and reason != "transferred"
    from livekit.agents.job import get_job_context

    try:
        job = get_job_context()
    except RuntimeError:
        return
    if delete_room:
        async def delete() -> None:
            await job.delete_room()

        job.add_shutdown_callback(delete)
    job.shutdown(reason=reason)


@dataclass
class CallGuards:
    """The call's limits and its answering-machine check, running beside the session:
    ``max_call_seconds``, ``silence_timeout`` and ``voicemail``."""

    owner: PhoneOwner
    telephony: Telephony
    hang_up: Callable[[str], None]
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _ending = False
    started: float = field(default_factory=time.perf_counter)  # the call's start, which limits count from
    _limit_task: asyncio.Task[Any] | None = None

    def session_options(self) -> dict[str, Any]:
        """livekit's AgentSession options these need."""
        options: dict[str, Any] = {}
        if self.telephony.silence_timeout is not None:
            options["user_away_timeout"] = self.telephony.silence_timeout.seconds
        if self.telephony.ivr_detection and self.telephony.voicemail is None:
            options["ivr_detection"] = True  # with voicemail, AMD manages IVR detection itself
        return options

    def attach(self, session: Any, *, audio: bool) -> None:
        telephony = self.telephony
        if telephony.max_call_seconds is not None:
            self.limit(telephony.max_call_seconds)
        if not audio:
            return
        if telephony.silence_timeout is not None:
            session.on("user_state_changed", self._on_user_state)
        if telephony.voicemail is not None:
            self._spawn(self._detect_machine(session))

    def limit(self, seconds: float) -> None:
        """End the call ``seconds`` after its start (a later limit replaces an earlier one)."""
        if self._limit_task is not None:
            self._limit_task.cancel()
        self._limit_task = self._spawn(self._limit(max(0.0, seconds - (time.perf_counter() - self.started))))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_user_state(self, event: Any) -> None:
        if getattr(event, "new_state", None) == "away" and not self._ending:
            timeout = self.telephony.silence_timeout
            assert timeout is not None
            self._spawn(self.end("silence_timeout", timeout.say))

    async def _limit(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.end("max_call_seconds", None)

    async def end(self, reason: str, say: str | None) -> None:
        """Hang up for ``reason``, after saying ``say`` if given."""
        if self._ending:
            return
        self._ending = True
        self.hang_up(reason)
        session = self.owner.session
        if session is None:
            return
        if say:
            with contextlib.suppress(Exception):
                session.interrupt(force=True)
                handle = _say(self.owner, say)
                if handle is not None:
                    await handle.wait_for_playout()
        session.shutdown()

    async def _detect_machine(self, session: Any) -> None:
        from livekit.agents.voice.amd import AMD, AMDCategory

        voicemail = self.telephony.voicemail
        assert voicemail is not None
        identity = self.owner.line.caller_identity() if self.owner.line is not None else None
        try:
            # stt=None: the session's own transcripts; the classifier is the agent's LLM
            # (the session has none of its own)
            async with AMD(session, llm=_agent_models(session)["llm"], stt=None, ivr_detection=self.telephony.ivr_detection,
                           suppress_compatibility_warning=True,
                           detection_options={"timeout": voicemail.timeout},
                           **({"participant_identity": identity} if identity else {})) as detector:
                verdict = await detector.execute()
        except Exception as exc:  # noqa: BLE001 - the call goes on as with a person
            log.warning("agent %s: answering-machine detection failed: %s", self.owner.name, exc)
            tell(self.owner, "voicemail", category="error", action="none", reason=str(exc))
            return
        category = verdict.category
        if category == AMDCategory.MACHINE_VM:
            action = voicemail.action
        elif category == AMDCategory.MACHINE_UNAVAILABLE:
            action = "hang_up"  # no message can be left
        else:
            tell(self.owner, "voicemail", category=category.value, action="none")
            return
        tell(self.owner, "voicemail", category=category.value, action=action)
        await self.end("voicemail", voicemail.message if action == "leave_message" else None)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
