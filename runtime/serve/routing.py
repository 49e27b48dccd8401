"""Which agent a LiveKit job is for.

``--dispatch name`` (default): serve registers every agent name with LiveKit, and
a job carries the name it was dispatched to (``job.agent_name``).
``--dispatch metadata``: serve registers one name (``--agent-name``) and each job
names its agent, as multi-tenant LiveKit deployments route. The trusted sources
come first: the dispatch metadata ``{"agent": "<name>"}`` (set by whoever creates
the dispatch: your backend), then ``{"agent": ...}`` in the room's metadata (set by
whoever administers the room). The ``agent`` attribute of the participant the job
is for is read only with ``--route-from-attributes`` and only when neither names
an agent: a caller allowed to set its own attributes must not pick an agent over
what the backend said. ``--route-allow`` globs bound what any route may reach.

The same function decides in the serve process (accept or refuse the job) and in
the job process (which spec to run), so the two never disagree.
"""

from __future__ import annotations

import json
from typing import Any

from .options import Dispatch, Route

__all__ = ["Route", "Unroutable", "agent_of"]

ROUTE_KEY = "agent"
MAX_NAME = 63  # an agent name's longest (spec/models.py AGENT_NAME_PATTERN)


class Unroutable(Exception):
    """The job names no agent this serve can run; the message says why, for the log.
    ``reason`` is its label in ``voice_runtime_jobs_refused_total``."""

    def __init__(self, message: str, reason: str = "no_agent") -> None:
        super().__init__(message)
        self.reason = reason


def agent_of(job: Any, route: Route) -> str:
    """The agent a livekit ``Job`` (protobuf) is for; raises Unroutable."""
    if route.dispatch is Dispatch.NAME:
        if job.agent_name:
            return str(job.agent_name)
        raise Unroutable("the job was dispatched without an agent name (serve registers each agent by its name)")
    for where, name in _candidates(job, route.from_attributes):
        if name is not None:
            if not isinstance(name, str) or not name or len(name) > MAX_NAME:
                raise Unroutable(f'{where} has "{ROUTE_KEY}": {_shown(name)}, not an agent name')
            if not route.allows(name):
                raise Unroutable(f"{where} names agent {_shown(name)}, which no --route-allow pattern allows",
                                 "not_allowed")
            return name
    sources = "the room metadata" + (" or a participant attribute" if route.from_attributes else "")
    raise Unroutable(f'the job names no agent: give the dispatch metadata {{"{ROUTE_KEY}": "<name>"}} '
                     f"(or {sources} key \"{ROUTE_KEY}\")")


def _candidates(job: Any, from_attributes: bool) -> list[tuple[str, Any]]:
    found = [("the dispatch metadata", _json_key(job.metadata)), ("the room metadata", _json_key(job.room.metadata))]
    if from_attributes and job.HasField("participant"):
        found.append(("the participant's attributes", job.participant.attributes.get(ROUTE_KEY)))
    return found


def _shown(value: Any) -> str:
    """At most 60 characters of it, for a log line (a name may be 200 KB)."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_key(text: str) -> Any:
    if not text:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # [[[[... 100,000 deep is not metadata either
        return None
    return value.get(ROUTE_KEY) if isinstance(value, dict) else None
