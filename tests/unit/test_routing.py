"""Which agent a LiveKit job is for (serve/routing.py), on the real livekit Job protobuf."""

from __future__ import annotations

import json

import pytest
from livekit.protocol import agent, models

from voice_runtime.serve.options import Dispatch
from voice_runtime.serve.routing import Route, Unroutable, agent_of

BY_NAME, BY_METADATA = Route(Dispatch.NAME), Route(Dispatch.METADATA)


def job(*, name: str = "", metadata: str = "", room_metadata: str = "", attributes: dict[str, str] | None = None
        ) -> agent.Job:
    j = agent.Job(id="AJ_1", agent_name=name, metadata=metadata, room=models.Room(name="r", metadata=room_metadata))
    if attributes is not None:
        j.participant.CopyFrom(models.ParticipantInfo(identity="caller", attributes=attributes))
    return j


def test_by_name_the_job_runs_as_the_name_it_was_dispatched_to() -> None:
    assert agent_of(job(name="billing", metadata='{"agent": "front"}'), BY_NAME) == "billing"
    with pytest.raises(Unroutable, match="without an agent name"):
        agent_of(job(), BY_NAME)


def test_by_metadata_the_trusted_sources_win_over_a_participant_attribute() -> None:
    """The dispatch metadata (the backend's) first, then the room's; a caller's own
    attribute never outranks either, even with --route-from-attributes."""
    with_attributes = Route(Dispatch.METADATA, from_attributes=True)
    all_three = job(metadata='{"agent": "billing"}', attributes={"agent": "admin"}, room_metadata='{"agent": "x"}')
    room_and_attribute = job(attributes={"agent": "admin"}, room_metadata='{"agent": "lobby"}')
    for route in (BY_METADATA, with_attributes):
        assert agent_of(all_three, route) == "billing"
        assert agent_of(room_and_attribute, route) == "lobby"


def test_a_participant_attribute_routes_only_with_route_from_attributes() -> None:
    attribute_only = job(attributes={"agent": "front"})
    with pytest.raises(Unroutable, match="names no agent"):
        agent_of(attribute_only, BY_METADATA)
    assert agent_of(attribute_only, Route(Dispatch.METADATA, from_attributes=True)) == "front"


def test_route_allow_globs_bound_every_route_and_a_job_outside_them_is_refused_as_not_allowed() -> None:
    route = Route(Dispatch.METADATA, from_attributes=True, allow=("tenant-*", "lobby"))
    assert agent_of(job(metadata='{"agent": "tenant-7"}'), route) == "tenant-7"
    assert agent_of(job(attributes={"agent": "lobby"}), route) == "lobby"
    for refused in (job(metadata='{"agent": "admin"}'), job(attributes={"agent": "Tenant-7"}),
                    job(room_metadata='{"agent": "lobby2"}')):
        with pytest.raises(Unroutable, match="no --route-allow pattern allows") as caught:
            agent_of(refused, route)
        assert caught.value.reason == "not_allowed"
    # the first source that names an agent decides: a refused one is not passed over for the next
    with pytest.raises(Unroutable, match="dispatch metadata names agent"):
        agent_of(job(metadata='{"agent": "admin"}', room_metadata='{"agent": "lobby"}'), route)


@pytest.mark.parametrize("metadata", ['{"agent": 3}', '{"agent": ""}', '{"agent": ["a"]}', json.dumps({"agent": "x" * 200_000})])
def test_a_name_that_is_not_one_is_refused_with_a_short_reason(metadata: str) -> None:
    with pytest.raises(Unroutable) as refused:
        agent_of(job(metadata=metadata), BY_METADATA)
    assert "not an agent name" in str(refused.value) and len(str(refused.value)) < 200


@pytest.mark.parametrize("metadata", ["", "not json", "[" * 100_000, '"a string"', "null"])
def test_metadata_naming_no_agent_is_refused_never_raised(metadata: str) -> None:
    with pytest.raises(Unroutable, match="names no agent"):
        agent_of(job(metadata=metadata), BY_METADATA)
