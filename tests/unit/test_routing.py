"""Which agent a LiveKit job is for (serve/routing.py), on the real livekit Job protobuf."""

from __future__ import annotations

import json

import pytest
from livekit.protocol import agent, models

from voice_runtime.serve.options import Dispatch
from voice_runtime.serve.routing import Unroutable, agent_of


def job(*, name: str = "", metadata: str = "", room_metadata: str = "", attributes: dict[str, str] | None = None
        ) -> agent.Job:
    j = agent.Job(id="AJ_1", agent_name=name, metadata=metadata, room=models.Room(name="r", metadata=room_metadata))
    if attributes is not None:
        j.participant.CopyFrom(models.ParticipantInfo(identity="caller", attributes=attributes))
    return j


def test_by_name_the_job_runs_as_the_name_it_was_dispatched_to() -> None:
    assert agent_of(job(name="billing", metadata='{"agent": "front"}'), Dispatch.NAME) == "billing"
    with pytest.raises(Unroutable, match="without an agent name"):
        agent_of(job(), Dispatch.NAME)


def test_by_metadata_the_dispatch_metadata_wins_then_the_participant_then_the_room() -> None:
    both = job(metadata='{"agent": "billing"}', attributes={"agent": "front"}, room_metadata='{"agent": "x"}')
    assert agent_of(both, Dispatch.METADATA) == "billing"
    assert agent_of(job(attributes={"agent": "front"}, room_metadata='{"agent": "x"}'), Dispatch.METADATA) == "front"
    assert agent_of(job(room_metadata='{"agent": "lobby"}'), Dispatch.METADATA) == "lobby"


@pytest.mark.parametrize("metadata", ['{"agent": 3}', '{"agent": ""}', '{"agent": ["a"]}', json.dumps({"agent": "x" * 200_000})])
def test_a_name_that_is_not_one_is_refused_with_a_short_reason(metadata: str) -> None:
    with pytest.raises(Unroutable) as refused:
        agent_of(job(metadata=metadata), Dispatch.METADATA)
    assert "not an agent name" in str(refused.value) and len(str(refused.value)) < 200


@pytest.mark.parametrize("metadata", ["", "not json", "[" * 100_000, '"a string"', "null"])
def test_metadata_naming_no_agent_is_refused_never_raised(metadata: str) -> None:
    with pytest.raises(Unroutable, match="names no agent"):
        agent_of(job(metadata=metadata), Dispatch.METADATA)
