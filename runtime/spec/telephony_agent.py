"""An agent's phone behaviour (the ``telephony:`` block of a spec): hanging up,
transfers, DTMF, voicemail, IVR detection and the call's limits. What they become
at run time is in ``session/phone.py``; the lines themselves (trunks, dispatch
rules) are ``spec/telephony.py``."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

# E.164: a plus, a country code that does not start with 0, at most 15 digits in all
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# a SIP or SIPS URI, [user@]host[:port][;params], no whitespace; LiveKit passes it to the
# SIP REFER (cold) or INVITE (warm) as it is. No password in the user part (user:pw@):
# the target is shown in reports, `chat` and logs, which must not carry one
SIP_URI = re.compile(r"sips?:([^\s@<>\":]+@)?[^\s@<>\"]+")
TRANSFER_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
DTMF_DIGITS = re.compile(r"[0-9*#w]{1,64}")  # w: half a second of pause, as livekit's dtmf option


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def phone_target(value: str) -> str:
    """A transfer target: an E.164 number or a sip:/sips: URI."""
    if E164.fullmatch(value) or SIP_URI.fullmatch(value):
        return value
    # the value is not repeated: a sip: URI with a password in it must not reach the output
    raise PydanticCustomError(
        "phone_target", "must be an E.164 number (+ and 7-15 digits, e.g. +15105550123) or a sip: URI without "
        "a password (e.g. sip:desk@pbx.example.com)")


class EndCall(_Strict):
    """The model may end the call (livekit's EndCallTool: an ``end_call`` tool)."""

    say: str | None = Field(
        None, min_length=1, max_length=1000,
        description="Said before hanging up. Default: the model says goodbye in its own words.")
    delete_room: bool = Field(
        True, description="Delete the LiveKit room on hang-up, which disconnects a SIP caller too.")


class Transfer(_Strict):
    """One place a call may be transferred to; the model gets a ``transfer_call`` tool
    naming them."""

    name: str = Field(pattern=TRANSFER_NAME_PATTERN, description="What the model calls this target, e.g. billing.")
    to: Annotated[str, Field(max_length=256), AfterValidator(phone_target)] = Field(
        description="+E.164 number or sip:/sips: URI.")
    mode: Literal["cold", "warm"] = Field(
        "cold", description="cold: the caller's SIP leg is referred to `to` (SIP REFER). warm: the agent first "
        "calls `to` and briefs the human (livekit's WarmTransferTask), then joins the caller to them.")
    when: str = Field(min_length=1, max_length=1000, description="Told to the model: when to transfer here.")
    say: str | None = Field(None, min_length=1, max_length=1000, description="Said to the caller before the transfer.")
    briefing: str | None = Field(
        None, min_length=1, max_length=4000,
        description="warm only: extra instructions for briefing the human (the conversation is given too).")
    sip_trunk_id: str | None = Field(
        None, min_length=1, max_length=128,
        description="warm only: the outbound trunk to call the human through. Default: $LIVEKIT_SIP_OUTBOUND_TRUNK.")
    ringing_timeout: float | None = Field(
        None, gt=0, le=120, description="warm only: seconds the human's phone may ring.")

    @model_validator(mode="after")
    def _warm_keys(self) -> Transfer:
        if self.mode == "cold":
            given = [k for k in ("briefing", "sip_trunk_id", "ringing_timeout") if getattr(self, k) is not None]
            if given:
                raise PydanticCustomError("transfer", "{keys}: for a warm transfer only (mode: warm)",
                                          {"keys": ", ".join(given)})
        return self


class DtmfCollect(_Strict):
    """The model may ask the caller to key digits in (livekit's GetDtmfTask)."""

    digits: int = Field(ge=1, le=32, description="How many digits to collect.")
    timeout: float = Field(4.0, gt=0, le=60, description="Seconds to wait for each digit.")
    stop: Literal["#", "*"] = Field("#", description="The key that ends the input early.")


class Dtmf(_Strict):
    send: bool = Field(False, description="The model may key digits (a `send_dtmf` tool), e.g. through an IVR menu.")
    collect: DtmfCollect | None = Field(None, description="The model may collect keyed digits (a `collect_digits` tool).")


class Voicemail(_Strict):
    """Answering-machine detection (livekit's AMD) on the call's first words, and what
    to do on a machine."""

    action: Literal["leave_message", "hang_up"] = Field(
        description="leave_message: say `message`, then hang up. hang_up: hang up at once.")
    message: str | None = Field(None, min_length=1, max_length=2000, description="The message to leave.")
    timeout: float = Field(20.0, ge=2, le=120, description="Seconds AMD may listen before it settles as uncertain.")

    @model_validator(mode="after")
    def _message_for_action(self) -> Voicemail:
        if self.action == "leave_message" and self.message is None:
            raise PydanticCustomError("voicemail", "action leave_message needs a `message`")
        if self.action == "hang_up" and self.message is not None:
            raise PydanticCustomError("voicemail", "a `message` is never said with action hang_up")
        return self


class SilenceTimeout(_Strict):
    seconds: float = Field(ge=3, le=3600, description="Seconds of silence on both sides before the line is said.")
    say: str | None = Field(None, min_length=1, max_length=1000, description="Said before hanging up.")


class Telephony(_Strict):
    """How the agent behaves on a phone line."""

    end_call: EndCall | None = Field(None, description="The model may hang up (an `end_call` tool).")
    transfer: list[Transfer] = Field(default_factory=list, max_length=32,
                                     description="Where the model may transfer the call (a `transfer_call` tool).")
    dtmf: Dtmf | None = Field(None, description="Keypad digits: send, collect.")
    voicemail: Voicemail | None = Field(None, description="Detect an answering machine and leave a message or hang up.")
    ivr_detection: bool = Field(False, description="Detect an IVR menu and let the model navigate it (livekit's).")
    max_call_seconds: int | None = Field(None, ge=10, le=86_400, description="The call is ended after this long.")
    silence_timeout: SilenceTimeout | None = Field(None, description="Hang up after this much silence.")

    @field_validator("transfer")
    @classmethod
    def _unique_names(cls, value: list[Transfer]) -> list[Transfer]:
        names = [t.name for t in value]
        if len(set(names)) != len(names):
            raise PydanticCustomError("duplicate_transfer", "two transfer targets have the same name")
        return value
