"""Phone lines (telephony/*.yaml) checked, planned and applied to LiveKit through the
real livekit-api client, against the fake LiveKit server API (tests/fakes/livekit_api.py)
at the network boundary; outbound calls placed the same way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes.livekit_api import FakeLiveKitAPI
from helpers import write

from voice_runtime.plugins.manager import make_plugin_manager
from voice_runtime.serve.dial import Refused, check_request, place_call
from voice_runtime.serve.sip_lines import plan_and_apply, render_applied
from voice_runtime.spec.models import ContextValue
from voice_runtime.spec.telephony import Lines, load_lines

KEY, SECRET = "devkey", "devsecret-0123456789-0123456789-devsecret"
DECLARED = {"customer": ContextValue(**{"from": "dispatch:customer"})}
ENV = {"SIP_PASSWORD": "inbound-pass-7a1f", "TRUNK_PASSWORD": "outbound-pass-9c3e"}
LINES = """\
apiVersion: voice-runtime/v1
inbound_trunks:
  main:
    numbers: ["+14155550100", "+14155550101"]
    allowed_addresses: ["54.172.60.0/30"]
    auth: {username: acme, password: "${SIP_PASSWORD}"}
outbound_trunks:
  carrier:
    address: acme.pstn.example.com
    numbers: ["+14155550100"]
    auth: {username: acme, password: "${TRUNK_PASSWORD}"}
    allowed_destinations: ["+1415*"]
dispatch_rules:
  support-line:
    numbers: ["+14155550100"]
    agent: support
  sales-line:
    numbers: ["+14155550101"]
    agent: support
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeLiveKitAPI]:
    api = FakeLiveKitAPI()
    await api.start()
    yield api
    await api.stop()


def lines_of(folder: Path, text: str = LINES, env: dict[str, str] | None = None) -> Lines:
    write(folder / "telephony" / "lines.yaml", text)
    return load_lines(folder / "telephony", make_plugin_manager(None, entry_points=False), ["support", "billing"],
                      env=env or ENV)


async def plan(fake: FakeLiveKitAPI, lines: Lines, apply: bool = True):  # type: ignore[no-untyped-def]
    return await plan_and_apply(lines, fake.url, KEY, SECRET, apply=apply)


# -- check ----------------------------------------------------------------------------

def test_bad_lines_are_reported_at_file_line_col_in_one_pass(tmp_path: Path) -> None:
    bad = LINES.replace('password: "${TRUNK_PASSWORD}"', "password: hunter2-in-git") \
        .replace("agent: support\n  sales", "agent: nobody\n  sales").replace('"+14155550101"]\n    agent', '"+14155550100"]\n    agent')
    lines = lines_of(tmp_path, bad)
    shown = [str(e).split(": ", 1)[0].rsplit(":", 2)[1:] + [str(e).split(": ", 2)[1]] for e in lines.errors]
    assert shown == [["11", "38", "outbound_trunks.carrier.auth.password"],
                     ["16", "12", "dispatch_rules.support-line.agent"],
                     ["18", "15", "dispatch_rules.sales-line.numbers[0]"]]
    messages = " ".join(e.message for e in lines.errors)
    assert "no valid agent named 'nobody'" in messages and "one dispatch rule per number" in messages
    assert "hunter2-in-git" not in messages  # the message never quotes a password


def test_a_number_that_is_not_e164_is_refused_with_an_example(tmp_path: Path) -> None:
    lines = lines_of(tmp_path, LINES.replace('["+14155550101"]', '["4155550101"]'))
    assert len(lines.errors) == 1
    assert lines.errors[0].line == 18
    assert "'4155550101' is not a phone number in E.164 form" in lines.errors[0].message


def test_a_password_with_a_default_is_refused_at_file_line_col_even_when_the_variable_is_unset(tmp_path: Path) -> None:
    lines = lines_of(tmp_path, LINES.replace("${TRUNK_PASSWORD}", "${NOPE:-DefaultLiteral}"))
    assert [(e.line, e.col, e.key_path) for e in lines.errors] == [(11, 38, "outbound_trunks.carrier.auth.password")]
    assert "a password takes no default: write ${NOPE} (not ${NOPE:-...})" in lines.errors[0].message
    assert "DefaultLiteral" not in lines.errors[0].message


def test_an_unset_password_variable_is_reported_without_suggesting_a_default_the_file_may_not_have(
        tmp_path: Path) -> None:
    lines = lines_of(tmp_path, LINES.replace("${TRUNK_PASSWORD}", "${NEVER_SET_PASSWORD}"))
    [error] = lines.errors
    assert (error.line, error.col, error.key_path) == (11, 38, "outbound_trunks.carrier.auth.password")
    assert "environment variable NEVER_SET_PASSWORD is not set (set it in the environment; a password takes " \
           "no default)" in error.message and ":-" not in error.message


async def test_a_password_from_a_mounted_secret_file_is_sent_without_its_trailing_newline(
        tmp_path: Path, fake: FakeLiveKitAPI) -> None:
    lines = lines_of(tmp_path, env={**ENV, "SIP_PASSWORD": "inbound-pass-7a1f\n"})
    assert lines.errors == []
    await plan(fake, lines)
    assert next(iter(fake.inbound.values())).auth_password == "inbound-pass-7a1f"
    broken = lines_of(tmp_path, env={**ENV, "SIP_PASSWORD": "inbound\npass-7a1f"})
    assert [(e.line, e.key_path) for e in broken.errors] == [(6, "inbound_trunks.main.auth.password")]
    assert "line break inside" in broken.errors[0].message and "pass-7a1f" not in str(broken.errors[0])


def test_a_dispatch_rule_for_a_number_no_inbound_trunk_holds_is_refused_at_its_position(tmp_path: Path) -> None:
    lines = lines_of(tmp_path, LINES.replace('numbers: ["+14155550101"]', 'numbers: ["+14155550199"]'))
    assert [(e.line, e.col, e.key_path) for e in lines.errors] == [(18, 15, "dispatch_rules.sales-line.numbers[0]")]
    assert "+14155550199 is on no inbound trunk: no call to it reaches LiveKit" in lines.errors[0].message


@pytest.mark.parametrize("address", ["10.0.0.1:99999", "10.0.0.1:0", "[2001:db8::1]:70000"])
def test_an_outbound_address_with_a_port_out_of_range_is_refused(tmp_path: Path, address: str) -> None:
    lines = lines_of(tmp_path, LINES.replace("address: acme.pstn.example.com", f'address: "{address}"'))
    assert [(e.line, e.key_path) for e in lines.errors] == [(9, "outbound_trunks.carrier.address")]
    assert "is out of range (1 to 65535)" in lines.errors[0].message


def test_more_than_1000_numbers_on_a_trunk_are_refused_with_the_bound(tmp_path: Path) -> None:
    many = ", ".join(f'"+1415{i:07d}"' for i in range(1001))
    lines = lines_of(tmp_path, LINES.replace('numbers: ["+14155550100", "+14155550101"]', f"numbers: [{many}]"))
    assert [(e.line, e.key_path) for e in lines.errors] == [(4, "inbound_trunks.main.numbers")]
    assert "1001 numbers; at most 1000 per trunk or rule" in lines.errors[0].message


def test_a_file_listing_19000_numbers_is_refused_with_the_bound_not_the_yaml_guard(tmp_path: Path) -> None:
    many = "".join(f'\n      - "+1415{i:07d}"' for i in range(19000))
    lines = lines_of(tmp_path, LINES.replace('numbers: ["+14155550100", "+14155550101"]', f"numbers:{many}"))
    assert [(e.line, e.col) for e in lines.errors] == [(5005, 10)]
    assert "more than 5000 phone numbers; at most 1000 per trunk or rule" in lines.errors[0].message


# -- plan and apply -------------------------------------------------------------------

async def test_apply_creates_every_object_marked_as_ours_and_a_second_apply_changes_nothing(
        tmp_path: Path, fake: FakeLiveKitAPI) -> None:
    lines = lines_of(tmp_path)
    first, applied = await plan(fake, lines)
    assert applied is not None and applied.ok
    assert sorted(c.action for c in first.changes) == ["create"] * 4
    # trunks first: the rules name their ids
    assert fake.writes == ["CreateSIPOutboundTrunk", "CreateSIPInboundTrunk", "CreateSIPDispatchRule",
                           "CreateSIPDispatchRule"]
    rule = next(r for r in fake.rules.values() if r.name == "support-line")
    assert list(rule.numbers) == ["+14155550100"] and rule.room_config.agents[0].agent_name == "support"
    assert json.loads(rule.metadata)["managed_by"] == "voice-runtime"
    trunk = next(iter(fake.inbound.values()))
    assert trunk.auth_password == ENV["SIP_PASSWORD"] and list(trunk.allowed_addresses) == ["54.172.60.0/30"]

    fake.requests.clear()
    again, applied = await plan(fake, lines)
    assert applied is not None and applied.ok and not applied.done
    assert {c.action for c in again.changes} == {"no-op"}
    assert fake.writes == []


async def test_an_edited_number_is_an_update_and_a_removed_rule_a_delete(tmp_path: Path, fake: FakeLiveKitAPI) -> None:
    await plan(fake, lines_of(tmp_path))
    edited = LINES.replace('"+14155550101"]\n    allowed', '"+14155550102"]\n    allowed') \
        .replace('  sales-line:\n    numbers: ["+14155550101"]\n    agent: support\n', "")
    fake.requests.clear()
    changes, applied = await plan(fake, lines_of(tmp_path, edited))
    assert applied is not None and applied.ok
    by_name = {c.name: c for c in changes.changes}
    assert by_name["sales-line"].action == "delete"
    assert by_name["main"].action == "update"
    assert by_name["main"].details == ['numbers: ["+14155550100", "+14155550101"] -> ["+14155550100", "+14155550102"]']
    assert fake.writes == ["DeleteSIPDispatchRule", "UpdateSIPInboundTrunk"]
    assert [r.name for r in fake.rules.values()] == ["support-line"]
    # the plan reads in the order apply works: deletions, then the trunks, then the rules naming them
    heads = [line.split(" (")[0] for line in changes.render().splitlines() if line[:1] in "+~-="]
    assert heads == ["- delete dispatch rule sales-line", "= no-op outbound trunk carrier",
                     "~ update inbound trunk main", "= no-op dispatch rule support-line"]


async def test_a_changed_password_is_an_update_whose_plan_never_shows_a_password(
        tmp_path: Path, fake: FakeLiveKitAPI) -> None:
    created, _ = await plan(fake, lines_of(tmp_path))
    rotated = {**ENV, "TRUNK_PASSWORD": "rotated-pass-55d0"}
    changes, _ = await plan(fake, lines_of(tmp_path, env=rotated), apply=False)
    text = created.render() + "\n" + changes.render()
    assert "auth_password: (set, not shown)" in text
    assert "~ update outbound trunk carrier" in text and "auth_password: changed" in text
    for value in (*ENV.values(), "rotated-pass-55d0"):
        assert value not in text


async def test_objects_voice_runtime_does_not_manage_are_never_touched(tmp_path: Path, fake: FakeLiveKitAPI) -> None:
    theirs = fake.add_inbound(name="legacy", numbers=["+14155550999"], metadata='{"team": "ops"}')
    their_rule = fake.add_rule(name="legacy-rule", numbers=["+14155550999"])
    changes, applied = await plan(fake, lines_of(tmp_path))
    assert applied is not None and applied.ok and changes.foreign == 2
    assert not any(c.object_id in (theirs, their_rule) for c in changes.changes)
    await plan(fake, lines_of(tmp_path, "apiVersion: voice-runtime/v1\n"))  # ours all deleted
    assert list(fake.inbound) == [theirs] and list(fake.rules) == [their_rule]


async def test_a_number_held_by_a_foreign_trunk_is_reported_before_anything_changes(
        tmp_path: Path, fake: FakeLiveKitAPI) -> None:
    fake.add_inbound(name="legacy", numbers=["+14155550101"])
    changes, applied = await plan(fake, lines_of(tmp_path))
    assert changes.conflicts == ["inbound trunk main: +14155550101 is already taken by inbound trunk 'legacy' (ST_1), "
                                 "which voice-runtime does not manage; remove the number there or here"]
    assert applied is not None and not applied.done
    assert fake.writes == []


async def test_a_failure_midway_stops_and_reports_what_was_applied(tmp_path: Path, fake: FakeLiveKitAPI) -> None:
    fake.fail_request = 3 + 3  # three lists, two trunks created, the first rule fails
    _, applied = await plan(fake, lines_of(tmp_path))
    assert applied is not None and not applied.ok
    report = render_applied(applied)
    assert report.splitlines()[:3] == ["applied: create outbound trunk carrier (ST_1)",
                                       "applied: create inbound trunk main (ST_2)",
                                       "error: create dispatch rule sales-line failed: ServerError: "
                                       "the fake was told to fail this request"]
    assert "stopped after 2 change(s)" in report
    assert len(fake.rules) == 0  # nothing after the failure was sent
    fake.requests.clear()
    _, applied = await plan(fake, lines_of(tmp_path))  # the next apply finishes the job
    assert applied is not None and applied.ok and fake.writes == ["CreateSIPDispatchRule", "CreateSIPDispatchRule"]


# -- outbound calls -------------------------------------------------------------------

@pytest.mark.parametrize(("number", "outcome", "code"), [
    ("+14155550123", "answered", 200), ("+14155550486", "busy", 486), ("+14155550408", "no_answer", 408),
    ("+14155550503", "failed", 503)])
async def test_a_call_dispatches_the_agent_with_its_context_then_dials_and_returns_the_sip_outcome(
        tmp_path: Path, fake: FakeLiveKitAPI, number: str, outcome: str, code: int) -> None:
    lines = lines_of(tmp_path)
    await plan(fake, lines)
    trunk = check_request(lines, "support", number, {"customer": "42"}, DECLARED)
    result = await place_call(lines, "support", number, {"customer": "42"}, trunk, fake.url, KEY, SECRET)
    assert (result.outcome, result.sip_status_code, result.trunk) == (outcome, code, "carrier")
    dispatch = fake.dispatches[-1]
    assert (dispatch.agent_name, dispatch.room) == ("support", result.call_id)
    assert json.loads(dispatch.metadata) == {"customer": "42", "agent": "support"}
    dialled = [r for m, r in fake.requests if m == "CreateSIPParticipant"][-1]
    assert dialled["sip_call_to"] == number and dialled["wait_until_answered"] is True
    assert dialled["sip_number"] == "+14155550100" and dialled["room_name"] == result.call_id
    # a call nobody took ends its room, and with it the agent's job
    assert (result.call_id in fake.deleted_rooms) == (outcome != "answered")


def test_a_number_outside_allowed_destinations_is_refused_with_the_reason(tmp_path: Path) -> None:
    lines = lines_of(tmp_path)
    with pytest.raises(Refused) as refused:
        check_request(lines, "support", "+442071838750", {}, DECLARED)
    assert refused.value.status == 403
    assert str(refused.value) == "+442071838750 is not in the allowed_destinations of any outbound trunk"


def test_a_phone_call_s_sip_attributes_and_a_dial_s_context_are_call_context() -> None:
    """Inbound: LiveKit gives the phone participant `sip.*` attributes; outbound: `dial`
    and POST /calls put the context in the dispatch metadata. Both reach `${call.*}`."""
    from voice_runtime.spec.call_context import gather, resolve
    from voice_runtime.spec.models import ContextValue

    declared = {"caller": ContextValue(**{"from": "participant:sip.phoneNumber"}),
                "customer": ContextValue(**{"from": "dispatch:customer"})}
    raw = gather(declared, dispatch=json.dumps({"customer": "42", "agent": "support"}),
                 attributes={"sip.phoneNumber": "+14155550123", "sip.trunkPhoneNumber": "+14155550100"})
    assert resolve(declared, raw) == {"caller": "+14155550123", "customer": "42"}
