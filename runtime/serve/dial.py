"""Outbound calls: an agent dispatched into a new room, then the number dialled into
it through an outbound trunk, waiting for the answer (``voice-runtime dial`` and
``POST /calls``). The SIP outcome is what the callee's side said: answered, busy,
no_answer, or failed. Whether a person or a voicemail box answered is for the agent
to find out once it hears the line; a call LiveKit reports as answered is "answered".
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .sip_lines import OUTBOUND, livekit_api, ownership, remote_error

if TYPE_CHECKING:
    from ..spec.telephony import Lines

RING_SECONDS = 45
# SIP final responses by what they mean for the caller (RFC 3261 §21)
_BUSY = {486, 600, 603}  # Busy Here, Busy Everywhere, Decline
_NO_ANSWER = {408, 480, 487}  # Request Timeout, Temporarily Unavailable, Request Terminated (ring timeout)
_CONTEXT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_CONTEXT_VALUE = 1024


class Refused(Exception):
    """The call is not placed; ``status`` is the HTTP status POST /calls answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CallResult:
    call_id: str  # the room the call is in
    agent: str
    to: str
    trunk: str
    outcome: str  # answered, busy, no_answer, failed
    sip_status_code: int | None = None
    sip_status: str = ""
    participant_identity: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_request(lines: Lines, agent: str, to: str, context: dict[str, Any], declared: Mapping[str, Any],
                  trunk: str | None = None, agents: Any = None) -> str:
    """The outbound trunk's name, or ``Refused`` naming why the call may not be placed.
    ``declared`` (the agent's ``context:``) checks the context before anything rings: a
    call the agent's job would refuse is never dialled (the message never holds a value)."""
    from ..spec.call_context import ContextRefused, dispatch_values
    from ..spec.telephony import is_e164

    if agents is not None and agent not in agents:
        raise Refused(404, f"no agent named {agent[:80]!r} is served")
    if not is_e164(to):
        raise Refused(400, "`to` must be a phone number in E.164 form, such as +14155550100")
    for key, value in context.items():
        if not isinstance(key, str) or _CONTEXT_KEY.fullmatch(key) is None or key == "agent":
            raise Refused(400, f"context key {str(key)[:80]!r} is not a name (letters, digits, _; not 'agent')")
        if not isinstance(value, str) or len(value) > MAX_CONTEXT_VALUE:
            raise Refused(400, f"context value {key} must be text of at most {MAX_CONTEXT_VALUE} characters")
    try:
        dispatch_values(declared, context)
    except ContextRefused as exc:
        raise Refused(400, str(exc)) from None
    chosen = lines.outbound_for(to, trunk)
    if isinstance(chosen, str):
        raise Refused(403, chosen)
    return chosen[0]


async def place_call(lines: Lines, agent: str, to: str, context: dict[str, str], trunk_name: str,
                     url: str, api_key: str, api_secret: str, owner: str = "default") -> CallResult:
    """Dispatch ``agent`` into a new room with ``context`` as its dispatch metadata, dial
    ``to`` into it and wait for the answer. A call that is not answered takes its
    room (and so the agent's job) with it."""
    from livekit import api

    trunk = lines.outbound[trunk_name]
    room = f"call-{agent}-{secrets.token_hex(6)}"
    async with livekit_api(url, api_key, api_secret, room=room) as lk:
        listed = await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
        trunk_id = next((t.sip_trunk_id for t in listed.items
                         if (mark := ownership(t.metadata)) and mark.get("kind") == OUTBOUND
                         and mark.get("name") == trunk_name and mark.get("owner") == owner), None)
        if trunk_id is None:
            raise Refused(409, f"outbound trunk {trunk_name!r} is not in LiveKit yet; run `voice-runtime sip apply`")
        await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
            agent_name=agent, room=room, metadata=json.dumps({**context, "agent": agent})))
        identity = f"phone-{to.lstrip('+')}"
        request = api.CreateSIPParticipantRequest(
            sip_trunk_id=trunk_id, sip_call_to=to, sip_number=trunk.numbers[0], room_name=room,
            participant_identity=identity, participant_name=to, wait_until_answered=True)
        request.ringing_timeout.seconds = RING_SECONDS
        base = dict(call_id=room, agent=agent, to=to, trunk=trunk_name, participant_identity=identity)
        try:
            await lk.sip.create_sip_participant(request)
        except Exception as exc:  # noqa: BLE001 - a SIP refusal, or no answer from LiveKit within the ring window
            code = getattr(exc, "sip_status_code", None)
            outcome = "busy" if code in _BUSY else "no_answer" if code in _NO_ANSWER else "failed"
            try:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            except Exception:  # noqa: BLE001 - the room may never have been made; an empty room closes by itself
                pass
            return CallResult(**base, outcome=outcome, sip_status_code=code,
                              sip_status=(getattr(exc, "sip_status", None) or remote_error(exc))[:200])
        return CallResult(**base, outcome="answered", sip_status_code=200, sip_status="OK")
