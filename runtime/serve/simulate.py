"""``POST /simulate``: a text-only call with no LiveKit server, for smoke tests.

The request body is checked here (every bad field is a 400 that says what is
valid); the limits keep one request from occupying the machine: each simulated
call is a job process (several hundred MB), so their number, their turns and how
long they may last are bounded. With ``wait`` the job reports back through a file
in serve's private state folder (0700; the file is 0600), named after the room:
serve and its job processes already share that folder, and nothing else does.
Every simulated call also leaves a mark there, named after its job, once it has
ended: from then on it no longer counts against ``MAX_CONCURRENT``, although its
process still takes a while to shut down (those seconds made /simulate answer 429
to 16 of 20 calls sent three at a time).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.filesystem import write_private_json

MAX_TURNS = 20
MAX_TURN_CHARS = 4000
MAX_GAP_S = 60.0
# a simulated call is cut after this, turns and gaps together (checked up front
# from turns x gap_s, and enforced in the job)
MAX_CALL_S = 300.0
MAX_CONCURRENT = 4  # simulated calls running at once, over all agents
# how long ``wait`` waits on top of MAX_CALL_S: a job process being spawned and warmed
WAIT_STARTUP_S = 60.0
MAX_BODY_BYTES = 64 * 1024
ROOM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")  # livekit's "mock-job-<shortuuid>"
ENDED = ".ended"
FIELDS = ("agent", "turns", "gap_s", "room", "wait", "speech", "context", "max_call_s")
MAX_CONTEXT_KEYS = 64
MAX_CONTEXT_CHARS = 16 * 1024  # of one value: the spec's max_length refuses longer ones in the job
RESULT_CHARS = 2000  # of a tool result, in the report


class BadRequest(ValueError):
    """The body is not a valid simulation request; the message says why."""


@dataclass(frozen=True)
class Simulation:
    agent: str
    turns: list[str]
    gap_s: float
    room: str | None
    wait: bool
    speech: bool = False  # each turn also through the pipeline's own STT and TTS (see loopback)
    # the call context by name, as a LiveKit call would carry it (spec `context:`)
    context: dict[str, str] | None = None
    # the call is cut after this (its report's end_reason: timeout); at most MAX_CALL_S
    max_call_s: float = MAX_CALL_S

    def script(self) -> str:
        """What the job reads from its (fake) room's metadata."""
        return json.dumps({"turns": self.turns, "gap_s": self.gap_s, "report": self.wait, "speech": self.speech,
                           "context": self.context or {}, "max_call_s": self.max_call_s})


def parse(body: Any, *, wait: bool = False) -> Simulation:
    """The request from a decoded JSON body; ``wait`` from the query string."""
    if not isinstance(body, dict):
        raise BadRequest('body must be a JSON object: {"agent": "<name>", "turns": ["..."], "gap_s": 0}')
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; valid: {', '.join(FIELDS)}")
    agent = body.get("agent")
    if not isinstance(agent, str) or not agent:
        raise BadRequest(f'"agent" must be a non-empty string (an agent name), not {_kind(agent)}')
    turns = body.get("turns", [])
    if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
        raise BadRequest(f'"turns" must be a list of strings (what the caller says), not {_kind(turns)}')
    if len(turns) > MAX_TURNS:
        raise BadRequest(f'"turns" has {len(turns)} entries; at most {MAX_TURNS}')
    for i, turn in enumerate(turns):
        if not turn.strip() or len(turn) > MAX_TURN_CHARS:
            raise BadRequest(f'"turns"[{i}] must be non-blank text of at most {MAX_TURN_CHARS} characters')
    gap = body.get("gap_s", 0)
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not math.isfinite(gap) \
            or not 0 <= gap <= MAX_GAP_S:
        raise BadRequest(f'"gap_s" must be a number of seconds from 0 to {MAX_GAP_S:g}, not {_kind(gap)}')
    if gap * max(len(turns) - 1, 0) > MAX_CALL_S:
        raise BadRequest(f"{len(turns)} turns {gap:g}s apart would last over {MAX_CALL_S:g}s, "
                         f"the longest simulated call")
    room = body.get("room")
    if room is not None and (not isinstance(room, str) or not ROOM.fullmatch(room)):
        raise BadRequest('"room" must be 1-64 letters, digits, "_" or "-" (starting with a letter or digit)')
    body_wait = body.get("wait", False)
    if not isinstance(body_wait, bool):
        raise BadRequest(f'"wait" must be true or false, not {_kind(body_wait)}')
    speech = body.get("speech", False)
    if not isinstance(speech, bool):
        raise BadRequest(f'"speech" must be true or false, not {_kind(speech)}')
    context = body.get("context", {})
    if not isinstance(context, dict) or len(context) > MAX_CONTEXT_KEYS or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_CONTEXT_CHARS for k, v in context.items()):
        raise BadRequest(f'"context" must be an object of at most {MAX_CONTEXT_KEYS} names to text values '
                         f'(each at most {MAX_CONTEXT_CHARS} characters)')
    limit = body.get("max_call_s", MAX_CALL_S)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) \
            or not 0 < limit <= MAX_CALL_S:
        raise BadRequest(f'"max_call_s" must be a number of seconds above 0, at most {MAX_CALL_S:g}, not {_kind(limit)}')
    return Simulation(agent, list(turns), float(gap), room, wait or body_wait, speech, dict(context), float(limit))


def _kind(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def wait_flag(value: str | None) -> bool:
    """``?wait=1`` (also ``true``, ``yes``, or a bare ``?wait``)."""
    if value is None:
        return False
    if value.lower() in ("", "1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise BadRequest(f"wait={value!r}: use wait=1 or wait=0")


def _result_path(state_dir: Path, room: str) -> Path:
    return state_dir / "simulations" / f"{room}.json"


def write_result(state_dir: Path, room: str, result: dict[str, Any]) -> None:
    """The job's report, written whole (rename) so serve never reads half of it."""
    if not ROOM.fullmatch(room):
        return
    folder = state_dir / "simulations"
    folder.mkdir(mode=0o700, exist_ok=True)
    write_private_json(_result_path(state_dir, room), result, default=str)


def take_result(state_dir: Path, room: str) -> dict[str, Any] | None:
    """The job's report once it is there; the file is removed as it is read."""
    path = _result_path(state_dir, room)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    return json.loads(text)


def mark_ended(state_dir: Path, job_id: str) -> None:
    """The simulated call of job ``job_id`` has ended (its report, if any, is written)."""
    if JOB_ID.fullmatch(job_id):
        folder = state_dir / "simulations"
        folder.mkdir(mode=0o700, exist_ok=True)
        (folder / f"{job_id}{ENDED}").touch(mode=0o600)


def ended_jobs(state_dir: Path) -> set[str]:
    """The jobs whose simulated call has ended, while their mark is there."""
    try:
        names = [entry.name for entry in (state_dir / "simulations").iterdir()]
    except FileNotFoundError:
        return set()
    return {name[: -len(ENDED)] for name in names if name.endswith(ENDED)}


def forget_ended(state_dir: Path, job_id: str) -> None:
    """The job's process is gone: its mark is no longer needed."""
    if JOB_ID.fullmatch(job_id):
        (state_dir / "simulations" / f"{job_id}{ENDED}").unlink(missing_ok=True)
