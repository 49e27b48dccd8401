"""An agent's phone behaviour (the spec's ``telephony:``, ``turn_handling:`` and
``background_audio:``) in voice calls: espeak-ng speech into the real livekit
AgentSession through SessionRunner, real silero VAD and the real deepgram, openai
and cartesia plugins against the fakes. The phone line's server API is a fake of
LiveKit's server API (``fakes/livekit_api.py``) reached by the real
livekit-api client; keypad tones travel in a LiveKit room's data channel, which a
call without a room does not have, so they go to and come from the line's
``publish_dtmf`` / ``sip_dtmf_received`` stand-ins (the room's in a LiveKit job).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.livekit_api import FakeLiveKitAPI
from fakes.openai_chat import TextReply, text, tool_call
from mcp_servers.harness import stdio_command
from prometheus_client import REGISTRY
from voice_harness import Fakes, VoiceCall, pipeline_spec

from voice_runtime.session.phone import PhoneLine

pytestmark = [
    pytest.mark.needs_tool("espeak-ng", "apt-get install espeak-ng"),
    pytest.mark.timeout(90),
]

CALLER = "sip_+15550100"
ROOM = "call-7"


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    started = await Fakes().start()
    yield started
    await started.stop()


@pytest.fixture
async def sip_api() -> AsyncIterator[FakeLiveKitAPI]:
    fake = FakeLiveKitAPI()
    await fake.start()
    yield fake
    await fake.stop()


class Keypad:
    """The line's keypad: what the agent keyed (publish_dtmf) and the caller's keys
    (``sip_dtmf_received``, as a room emits them)."""

    def __init__(self) -> None:
        from livekit.agents.utils import EventEmitter

        self.sent: list[tuple[int, str]] = []
        self.events: Any = EventEmitter()

    async def publish_dtmf(self, *, code: int, digit: str) -> None:
        self.sent.append((code, digit))

    def press(self, digits: str) -> None:
        from livekit import rtc

        for digit in digits:
            code = 10 if digit == "*" else 11 if digit == "#" else int(digit)
            self.events.emit("sip_dtmf_received", rtc.SipDTMF(code=code, digit=digit))


@pytest.fixture
async def line(sip_api: FakeLiveKitAPI) -> AsyncIterator[tuple[PhoneLine, Keypad]]:
    from livekit import api

    client = api.LiveKitAPI(url=sip_api.url, api_key="lk-key", api_secret="lk-secret-0123456789-0123456789-0123")
    keypad = Keypad()
    yield PhoneLine(room_name=ROOM, api=lambda: client, caller_identity=lambda: CALLER,
                    publish_dtmf=keypad.publish_dtmf, dtmf_events=keypad.events), keypad
    await client.aclose()


def telephony(block: dict[str, Any]) -> str:
    return "telephony: " + json.dumps(block) + "\n"


def phone_events(call: VoiceCall) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "agent"} for _, d in call.event_times("phone")]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def ended(call: VoiceCall) -> str:
    await call.wait_for(lambda: call.runner.end_reason is not None, 30, "the session to close")
    return str(call.runner.end_reason)


async def test_end_call_says_the_closing_line_ends_the_session_and_hides_a_server_tool_of_its_name(tmp_path: Path, fakes: Fakes) -> None:
    before = metric("voice_runtime_call_ends_total", agent="desk", reason="end_call")
    fakes.deepgram.say("That is all, bye.")
    fakes.chat.enqueue(tool_call("end_call", {}))
    # an MCP server with a tool of the same name: livekit would refuse the session; ours wins
    (tmp_path / "extra.json").write_text(json.dumps({"end_call": "A server's own end_call."}))
    command, args = stdio_command(record=tmp_path / "calls.jsonl", extra_tools=tmp_path / "extra.json")
    spec = pipeline_spec(fakes, extra=telephony({"end_call": {"say": "Goodbye from the desk."}})
                         + f"mcp_servers:\n  desk: {json.dumps({'command': command, 'args': args})}\n")
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        await call.say("That is all, bye.")
        assert await ended(call) == "end_call"
        assert fakes.cartesia.spoken == ["Goodbye from the desk."]
        [heard] = call.speaker.played
        assert not heard.interrupted  # the line played to its end before the hang-up
        assert phone_events(call) == [{"event": "hang_up", "reason": "end_call"}]
        # livekit's EndCallTool is what the model was offered, once; the server's is hidden, with a warning
        offered = [t["function"] for t in fakes.chat.chat_requests[0]["tools"]]
        [end_call] = [t for t in offered if t["name"] == "end_call"]
        assert "Ends the current call" in end_call["description"]
        assert [d["message"] for _, d in call.event_times("warning")] == [
            "tool end_call is hidden by the telephony tool of the same name"]
        # the model was asked nothing after the tool: the line is ours, word for word
        assert len(fakes.chat.chat_requests) == 1
        assert metric("voice_runtime_call_ends_total", agent="desk", reason="end_call") == before + 1
    finally:
        await call.aclose()


TRANSFERS = [{"name": "billing", "to": "+15105550123", "when": "billing questions",
              "say": "Putting you through to billing."},
             {"name": "pbx", "to": "sip:desk@pbx.example.com", "when": "the front desk"},
             {"name": "manager", "to": "+15105550999", "when": "a complaint", "mode": "warm"}]


async def test_a_cold_transfer_refers_the_sip_caller_to_the_target_after_the_line_is_said(
    tmp_path: Path, fakes: Fakes, sip_api: FakeLiveKitAPI, line: tuple[PhoneLine, Keypad]
) -> None:
    before = metric("voice_runtime_transfers_total", agent="desk", kind="cold", outcome="transferred")
    fakes.deepgram.say("I have a question about my bill.")
    fakes.chat.enqueue(tool_call("transfer_call", {"target": "billing"}))
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, extra=telephony({"transfer": TRANSFERS})),
                                 line=line[0])
    try:
        await call.say("I have a question about my bill.")
        assert await ended(call) == "transferred"
        [refer] = sip_api.of("TransferSIPParticipant")
        assert (refer.request.room_name, refer.request.participant_identity, refer.request.transfer_to) == (
            ROOM, CALLER, "tel:+15105550123")
        # livekit-api's token: admin of this room, allowed to place SIP calls
        assert refer.grants["video"]["roomAdmin"] and refer.grants["video"]["room"] == ROOM
        assert refer.grants["sip"]["call"]
        assert fakes.cartesia.spoken == ["Putting you through to billing."]
        assert phone_events(call) == [
            {"event": "transfer", "kind": "cold", "target": "billing", "to": "+15105550123", "participant": CALLER,
             "outcome": "transferred"},
            {"event": "hang_up", "reason": "transferred"}]
        assert metric("voice_runtime_transfers_total", agent="desk", kind="cold", outcome="transferred") == before + 1
    finally:
        await call.aclose()


async def test_a_refused_cold_transfer_is_told_to_the_model_and_the_call_goes_on(
    tmp_path: Path, fakes: Fakes, sip_api: FakeLiveKitAPI, line: tuple[PhoneLine, Keypad]
) -> None:
    sip_api.transfer_outcome = "failed"
    fakes.deepgram.say("Put me through to the front desk.")
    fakes.chat.enqueue(tool_call("transfer_call", {"target": "pbx"}), text("Sorry, the desk is not answering."))
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, extra=telephony({"transfer": TRANSFERS})),
                                 line=line[0])
    try:
        await call.say("Put me through to the front desk.")
        await call.wait_heard(1)
        [refer] = sip_api.of("TransferSIPParticipant")
        assert refer.request.transfer_to == "sip:desk@pbx.example.com"
        assert phone_events(call) == [
            {"event": "transfer", "kind": "cold", "target": "pbx", "to": "sip:desk@pbx.example.com",
             "participant": CALLER, "outcome": "failed", "reason": "STR_REJECTED"}]
        tool_output = [m for m in fakes.chat.chat_requests[-1]["messages"] if m["role"] == "tool"]
        assert "failed" in tool_output[-1]["content"]
        assert fakes.cartesia.spoken == ["Sorry, the desk is not answering."]
        assert call.runner.end_reason is None
    finally:
        await call.aclose()


async def test_a_warm_transfer_without_a_livekit_room_fails_and_says_why(
    tmp_path: Path, fakes: Fakes, sip_api: FakeLiveKitAPI, line: tuple[PhoneLine, Keypad]
) -> None:
    # livekit's WarmTransferTask joins a side room of the job's LiveKit server to dial the
    # human: a call without a room reports the transfer as failed, and nothing is dialled
    fakes.deepgram.say("I want to complain.")
    fakes.chat.enqueue(tool_call("transfer_call", {"target": "manager"}), text("I cannot reach the manager now."))
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, extra=telephony({"transfer": TRANSFERS})),
                                 line=line[0])
    try:
        await call.say("I want to complain.")
        await call.wait_heard(1)
        assert phone_events(call) == [
            {"event": "transfer", "kind": "warm", "target": "manager", "to": "+15105550999", "outcome": "failed",
             "reason": "a warm transfer needs a LiveKit room"}]
        assert sip_api.requests == []
    finally:
        await call.aclose()


async def test_a_warm_transfer_briefs_the_human_with_the_call_and_dials_them_into_a_consult_room_through_the_trunk(
    tmp_path: Path, fakes: Fakes, sip_api: FakeLiveKitAPI, line: tuple[PhoneLine, Keypad], monkeypatch: pytest.MonkeyPatch
) -> None:
    # livekit's WarmTransferTask as our spec builds it from a live call. Its room parts
    # (hold music into the caller's room, joining the consult room, the human's side
    # session, which speaks the briefing) need a LiveKit media server, which tests do not
    # have; its two server API calls are made here by livekit's own code, against the fake
    from livekit import rtc
    from livekit.agents.testing import fake_job_context
    from livekit.agents.utils import http_context

    from voice_runtime.session.phone import tool_names, warm_transfer_task

    trunk = sip_api.add_outbound(name="carrier", numbers=["+14155550100"])
    manager = {**TRANSFERS[2], "briefing": "Say what broke and that a refund was offered.", "sip_trunk_id": trunk,
               "ringing_timeout": 25}
    fakes.deepgram.say("My order seven arrived broken.")
    fakes.chat.enqueue(text("I am sorry. I can offer a refund."))
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, extra=telephony({"transfer": [manager]})),
                                 line=line[0])
    try:
        await call.say("My order seven arrived broken.")
        await call.wait_heard(1)
        task = warm_transfer_task(call.runner, call.runner.loaded.spec.telephony.transfer[0])
        # what the agent that talks to the human is told: the call so far and the briefing
        briefing = str(task.instructions)
        assert "Caller: My order seven arrived broken.\nAssistant: I am sorry. I can offer a refund.\n" in briefing
        assert "Say what broke and that a refund was offered." in briefing
        # ...and the tools it answers the human with: put them through, or not
        assert {"connect_to_caller", "decline_transfer", "voicemail_detected"} <= tool_names(task.tools)

        # livekit dials the human into the consult room with the job's server API (LIVEKIT_* env)
        for key, value in {"LIVEKIT_URL": sip_api.url, "LIVEKIT_API_KEY": "lk-key",
                           "LIVEKIT_API_SECRET": "lk-secret-0123456789-0123456789-0123"}.items():
            monkeypatch.setenv(key, value)
        async with http_context.open():
            with fake_job_context(room=rtc.Room()):
                await task._originate_human_agent(room_name=f"{ROOM}-human-agent", identity="human-agent-sip",
                                                  room=rtc.Room())
        [dial] = sip_api.of("CreateSIPParticipant")
        request = dial.request
        assert (request.sip_call_to, request.sip_trunk_id, request.room_name, request.participant_identity) == (
            "+15105550999", trunk, f"{ROOM}-human-agent", "human-agent-sip")
        assert request.wait_until_answered and request.ringing_timeout.seconds == 25
        assert dial.grants["sip"]["call"]
        assert sip_api.participants == [request]  # the fake answered: the human picked up
        assert phone_events(call) == []  # nothing was transferred by building the task
    finally:
        await call.aclose()


async def test_keys_are_sent_on_the_line_and_keyed_digits_are_collected_as_input(
    tmp_path: Path, fakes: Fakes, line: tuple[PhoneLine, Keypad]
) -> None:
    phone_line, keypad = line
    fakes.deepgram.say("Press one two and pound.", "Let me key in my account number.")
    fakes.chat.enqueue(tool_call("send_dtmf", {"digits": "12#"}), text("Done."),
                       tool_call("collect_digits", {}), text("Please key in your account number."))
    spec = pipeline_spec(fakes, extra=telephony({"dtmf": {"send": True, "collect": {"digits": 4, "timeout": 5}}}))
    call = await VoiceCall.start(tmp_path / "agents", spec, line=phone_line)
    try:
        await call.say("Press one two and pound.")
        await call.wait_heard(1)
        assert keypad.sent == [(1, "1"), (2, "2"), (11, "#")]

        fakes.chat.enqueue(text("Thank you, I have your account."))
        await call.say("Let me key in my account number.")
        await call.wait_heard(2)  # livekit's GetDtmfTask asked for the digits
        keypad.press("4321#")
        await call.wait_heard(3)
        assert fakes.cartesia.spoken[-1] == "Thank you, I have your account."
        outputs = [m["content"] for m in fakes.chat.chat_requests[-1]["messages"] if m["role"] == "tool"]
        assert "The caller keyed: 4321" in outputs
        assert phone_events(call) == [{"event": "dtmf", "direction": "sent", "count": 3, "outcome": "ok"},
                                      {"event": "dtmf", "direction": "collected", "count": 4, "outcome": "ok"}]
    finally:
        await call.aclose()


VOICEMAIL_GREETING = "You have reached the voicemail of Sam, leave a message after the tone."
MESSAGE = "Hello Sam, this is the front desk. Please call us back."


def amd_by_the_model(request: dict[str, Any]) -> Any:
    """The session's model as livekit's AMD classifier uses it (llm=None): offered
    save_prediction, it says machine-vm; any other turn gets a plain answer."""
    names = [(t.get("function") or {}).get("name") for t in request.get("tools") or []]
    if "save_prediction" in names:
        return tool_call("save_prediction", {"label": "machine-vm"})
    return TextReply("Hello?")


async def test_a_voicemail_greeting_is_detected_the_message_left_and_the_call_ended(
    tmp_path: Path, fakes: Fakes
) -> None:
    fakes.deepgram.say(VOICEMAIL_GREETING)
    fakes.chat.script = amd_by_the_model
    spec = pipeline_spec(fakes, extra=telephony({"voicemail": {"action": "leave_message", "message": MESSAGE}}))
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        await call.say(VOICEMAIL_GREETING)
        assert await ended(call) == "voicemail"
        classify = [r for r in fakes.chat.chat_requests
                    if any((t.get("function") or {}).get("name") == "save_prediction" for t in r.get("tools") or [])]
        # the classifier got what the fake Deepgram heard in the espeak-ng greeting
        assert classify and VOICEMAIL_GREETING.rstrip(".") in json.dumps(classify[-1]["messages"])
        # the message, sentence by sentence, played to its end before the hang-up
        assert " ".join(fakes.cartesia.spoken).endswith(MESSAGE)
        assert not call.speaker.played[-1].interrupted
        assert phone_events(call) == [{"event": "voicemail", "category": "machine-vm", "action": "leave_message"},
                                      {"event": "hang_up", "reason": "voicemail"}]
    finally:
        await call.aclose()


async def test_silence_hangs_up_after_the_timeout_line(tmp_path: Path, fakes: Fakes) -> None:
    line = "Are you still there? Goodbye."
    spec = pipeline_spec(fakes, extra=telephony({"silence_timeout": {"seconds": 3, "say": line}}))
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        assert await ended(call) == "silence_timeout"
        assert " ".join(fakes.cartesia.spoken) == line  # said sentence by sentence
        assert not call.speaker.played[-1].interrupted
        assert phone_events(call) == [{"event": "hang_up", "reason": "silence_timeout"}]
        assert fakes.chat.chat_requests == []
    finally:
        await call.aclose()


async def test_a_call_is_ended_after_max_call_seconds_and_ivr_detection_is_livekits(
    tmp_path: Path, fakes: Fakes
) -> None:
    before = metric("voice_runtime_call_ends_total", agent="desk", reason="max_call_seconds")
    spec = pipeline_spec(fakes, extra=telephony({"max_call_seconds": 10, "ivr_detection": True}))
    call = await VoiceCall.start(tmp_path / "agents", spec)
    try:
        assert call.runner.session.options.ivr_detection is True
        assert await ended(call) == "max_call_seconds"
        assert phone_events(call) == [{"event": "hang_up", "reason": "max_call_seconds"}]
        assert metric("voice_runtime_call_ends_total", agent="desk", reason="max_call_seconds") == before + 1
    finally:
        await call.aclose()


async def test_turn_handling_reaches_livekits_session_and_the_thinking_sound_plays_during_a_slow_tool(
    tmp_path: Path, fakes: Fakes
) -> None:
    frames: list[tuple[float, bytes]] = []
    fakes.deepgram.say("Please wait for it.")
    fakes.chat.use_tool_then_answer("sleep", {"seconds": 3})
    command, args = stdio_command(record=tmp_path / "calls.jsonl")
    extra = (
        "turn_handling:\n"
        "  endpointing: {mode: dynamic, min_delay: 0.4, max_delay: 2.5}\n"
        "  interruption: {mode: vad, min_duration: 0.3, false_interruption_timeout: 1.5}\n"
        "  preemptive_generation: false\n"
        "background_audio:\n"
        "  thinking: {clip: keyboard-typing, volume: 0.9}\n"
        f"mcp_servers:\n  desk: {json.dumps({'command': command, 'args': args, 'timeout': 10})}\n")
    call = await VoiceCall.start(tmp_path / "agents", pipeline_spec(fakes, extra=extra),
                                 background_sink=lambda f: frames.append((time.monotonic(), bytes(f.data))))
    try:
        options = call.runner.session.options.turn_handling
        assert {k: options["endpointing"][k] for k in ("mode", "min_delay", "max_delay")} == {
            "mode": "dynamic", "min_delay": 0.4, "max_delay": 2.5}
        assert {k: options["interruption"][k] for k in ("mode", "min_duration", "false_interruption_timeout")} == {
            "mode": "vad", "min_duration": 0.3, "false_interruption_timeout": 1.5}
        assert options["preemptive_generation"]["enabled"] is False

        await call.say("Please wait for it.")
        await call.wait_heard(1)
        [(called_at, _)] = call.event_times("tool_call")
        [(returned_at, _)] = call.event_times("tool_result")
        during = [data for at, data in frames if called_at + 0.5 < at < returned_at]
        loud = [np.sqrt(np.mean(np.frombuffer(d, dtype="<i2").astype(np.float32) ** 2)) for d in during]
        # keyboard typing in the background track while the tool ran, and none once the agent spoke
        assert sum(1 for rms in loud if rms > 100) > len(loud) // 4
        spoke_at = call.speaker.played[0].started
        after = [np.abs(np.frombuffer(d, dtype="<i2")).max() for at, d in frames if at > spoke_at + 1.0]
        assert not after or max(after) < 100
    finally:
        await call.aclose()


async def test_a_handoff_target_takes_turns_its_own_way_and_its_call_limit_ends_the_call(
    tmp_path: Path, fakes: Fakes
) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "sales.yaml").write_text(pipeline_spec(fakes, extra=(
        "turn_handling:\n  endpointing: {min_delay: 1.2, max_delay: 4}\n  interruption: {mode: vad, min_duration: 0.9}\n"
        + telephony({"max_call_seconds": 10}))))
    fakes.deepgram.say("I want to buy a boat.")
    fakes.chat.enqueue(tool_call("transfer_to_sales", {}), text("Sales here."))
    call = await VoiceCall.start(folder, pipeline_spec(fakes, extra="handoffs: [{agent: sales, when: buying}]\n"))
    try:
        desk = call.runner.session.current_agent
        await call.say("I want to buy a boat.")
        await call.wait_for(lambda: call.runner.session.current_agent is not desk, 20, "the handoff")
        sales = call.runner.session.current_agent
        # livekit reads endpointing and the barge-in mode from the Agent; the session's stay the desk's
        assert (sales.min_endpointing_delay, sales.max_endpointing_delay, sales.interruption_detection) == (
            1.2, 4, "vad")
        assert call.runner.session.options.turn_handling["interruption"]["min_duration"] != 0.9
        # the desk had no limit; sales' counts from the call's start
        assert await ended(call) == "max_call_seconds"
        assert phone_events(call) == [{"event": "hang_up", "reason": "max_call_seconds"}]
    finally:
        await call.aclose()
