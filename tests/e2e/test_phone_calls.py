"""Phone lines and outbound calls through the real CLI and a real `serve`, against the
fake LiveKit server API (tests/fakes/livekit_api.py): `sip plan`/`sip apply`, `dial`,
`serve --manage-sip` and POST /calls."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.livekit_api import FakeLiveKitAPI
from helpers import REPO, run_cli, write
from serve_harness import Serve, spec

TOKEN = "calls-token-5f0c2a9e7d"
SECRET = "devsecret-0123456789-0123456789-devsecret"
PASSWORDS = {"SIP_PASSWORD": "inbound-pass-7a1f", "TRUNK_PASSWORD": "outbound-pass-9c3e"}
LINES = """\
apiVersion: voice-runtime/v1
inbound_trunks:
  main:
    numbers: ["+14155550100"]
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
"""
PER_MINUTE = 6
# what the support agent's calls carry: a call the agent would refuse is never dialled
CONTEXT = ('context:\n  customer: {from: "dispatch:customer", required: true, max_length: 8, pattern: "[0-9]+"}\n'
           '  caller: {from: "participant:sip.phoneNumber"}\n')


def env_for(fake: FakeLiveKitAPI) -> dict[str, str]:
    return {"LIVEKIT_URL": fake.url, "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": SECRET,
            "CALLS_TOKEN": TOKEN, **PASSWORDS}


def folder(root: Path) -> Path:
    agents = root / "agents.d"
    write(agents / "support.yaml", spec("You are support.", "http://127.0.0.1:9/v1", extra=CONTEXT))
    write(agents / "telephony" / "lines.yaml", LINES)
    return agents


@pytest.fixture
def fake() -> Iterator[FakeLiveKitAPI]:
    api = FakeLiveKitAPI()
    api.start_in_thread()
    yield api
    api.stop_thread()


# -- the CLI --------------------------------------------------------------------------

def test_sip_plan_shows_the_changes_without_passwords_and_sip_apply_makes_them(tmp_path: Path,
                                                                                fake: FakeLiveKitAPI) -> None:
    agents = folder(tmp_path)
    planned = run_cli("sip", "plan", agents, env=env_for(fake))
    assert planned.rc == 0, planned.stderr
    assert "+ create inbound trunk main" in planned.stdout and "auth_password: (set, not shown)" in planned.stdout
    assert planned.stdout.splitlines()[-1].startswith("plan: 3 to create, 0 to update, 0 to delete, 0 unchanged")
    assert fake.writes == []  # a plan changes nothing
    applied = run_cli("sip", "apply", agents, env=env_for(fake))
    assert applied.rc == 0, applied.stderr
    assert applied.stdout.splitlines()[-1] == "apply complete: 3 change(s)"
    for value in (*PASSWORDS.values(), SECRET):
        assert value not in planned.stdout + planned.stderr + applied.stdout + applied.stderr
    assert sorted(t.name for t in fake.inbound.values()) == ["main"]


def test_sip_apply_with_a_conflicting_foreign_number_changes_nothing_and_exits_1(tmp_path: Path,
                                                                                  fake: FakeLiveKitAPI) -> None:
    fake.add_rule(name="legacy", numbers=["+14155550100"])
    result = run_cli("sip", "apply", folder(tmp_path), env=env_for(fake))
    assert result.rc == 1
    assert "conflict: dispatch rule support-line: +14155550100 is already taken by dispatch rule 'legacy'" in result.stdout
    assert "nothing was changed" in result.stderr
    assert fake.writes == []


def test_dial_prints_the_call_and_its_outcome_and_refuses_a_number_outside_the_allowed_ones(
        tmp_path: Path, fake: FakeLiveKitAPI) -> None:
    agents = folder(tmp_path)
    assert run_cli("sip", "apply", agents, env=env_for(fake)).rc == 0
    busy = run_cli("dial", agents, "--agent", "support", "--to", "+14155550486", "--context", "customer=42",
                   "--format", "json", env=env_for(fake))
    assert busy.rc == 1, busy.stderr
    result = json.loads(busy.stdout)
    assert (result["outcome"], result["sip_status_code"], result["trunk"]) == ("busy", 486, "carrier")
    assert json.loads(fake.dispatches[-1].metadata) == {"customer": "42", "agent": "support"}
    refused = run_cli("dial", agents, "--agent", "support", "--to", "+33142681234", "--context", "customer=42",
                      env=env_for(fake))
    assert refused.rc == 2
    assert "call refused: +33142681234 is not in the allowed_destinations of any outbound trunk" in refused.stderr


def test_sip_plan_without_line_files_and_dial_to_a_non_e164_number_are_usage_errors_saying_what_to_do(
        tmp_path: Path) -> None:
    agents = tmp_path / "agents.d"
    write(agents / "support.yaml", spec("You are support.", "http://127.0.0.1:9/v1", extra=CONTEXT))
    plan = run_cli("sip", "plan", agents)  # a fresh clone: no telephony/ folder, no LiveKit either
    assert plan.rc == 2, plan.stderr
    assert f"error: no phone lines: {agents / 'telephony'} is missing; put the *.yaml line files there (an " \
           "example: deploy/examples/telephony/twilio.yaml) or name their folder with --telephony DIR" in plan.stderr
    assert ":1:1" not in plan.stderr
    dial = run_cli("dial", agents, "--agent", "support", "--to", "555")  # the number is checked first
    assert dial.rc == 2
    assert "--to '555' is not a phone number in E.164 form" in dial.stderr and "phone lines" not in dial.stderr


@pytest.mark.parametrize(("context", "error"), [
    (["--context", "plan=gold"], "no context value is read from dispatch:plan"),
    (["--context", "customer=123456789"], "call context customer has 9 characters; at most 8"),
    (["--context", "customer=4x2"], "call context customer does not match its pattern"),
    ([], "required call context customer is missing"),
    (["--context", "customer=1", "--context", "customer=2"], "--context 'customer' is given twice")])
def test_dial_refuses_a_context_the_agent_would_refuse_before_anything_rings(
        tmp_path: Path, fake: FakeLiveKitAPI, context: list[str], error: str) -> None:
    agents = folder(tmp_path)
    refused = run_cli("dial", agents, "--agent", "support", "--to", "+14155550123", *context, env=env_for(fake))
    assert refused.rc == 2 and error in refused.stderr, refused.stderr
    assert "123456789" not in refused.stderr and "4x2" not in refused.stderr  # the reason, never the value
    assert fake.dispatches == [] and not [m for m, _ in fake.requests if m == "CreateSIPParticipant"]


def test_sip_plan_and_dial_never_print_the_livekit_token_a_server_echoes_in_its_error(
        tmp_path: Path, fake: FakeLiveKitAPI) -> None:
    agents = folder(tmp_path)
    fake.echo_authorization = True  # every answer is a 500 quoting the request's Authorization header
    planned = run_cli("sip", "plan", agents, env=env_for(fake))
    dialled = run_cli("dial", agents, "--agent", "support", "--to", "+14155550123", "--context", "customer=42",
                      env=env_for(fake))
    for result in (planned, dialled):
        assert result.rc == 1
        assert "cannot serve Bearer **********" in result.stderr, result.stderr
        assert "eyJ" not in result.output and SECRET not in result.output


def test_the_shipped_twilio_example_is_valid_with_the_shipped_agents() -> None:
    result = run_cli("check", "agents.d", "--offline", "--telephony", "deploy/examples/telephony", cwd=REPO,
                     env={"TWILIO_SIP_PASSWORD": "example-pass-1234", "VOICE_RUNTIME_DISABLE_PLUGINS": None})
    assert result.rc == 0, result.output
    assert "phone lines: 1 inbound trunk(s), 1 outbound trunk(s), 2 dispatch rule(s): +14155550100 -> support, " \
           "+14155550101 -> concierge" in result.stdout
    assert "example-pass-1234" not in result.output


def test_serve_refuses_a_literal_calls_token_and_calls_without_livekit_s_api(tmp_path: Path,
                                                                              fake: FakeLiveKitAPI) -> None:
    agents = folder(tmp_path)
    literal = run_cli("serve", agents, "--unregistered", "--calls-token", TOKEN, env=env_for(fake))
    assert literal.rc == 2
    assert "--calls-token takes a ${VAR}" in literal.stderr and TOKEN not in literal.stderr
    no_api = run_cli("serve", agents, "--unregistered", "--manage-sip", "--calls-token", "${CALLS_TOKEN}",
                     env={**env_for(fake), "LIVEKIT_API_SECRET": None})
    assert no_api.rc == 2
    assert "--manage-sip and --calls-token need LiveKit's API: LIVEKIT_API_SECRET not set" in no_api.stderr


# -- serve --manage-sip and POST /calls (one serve for the module) ----------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, FakeLiveKitAPI, Path]]:
    api = FakeLiveKitAPI()
    api.start_in_thread()
    agents = folder(tmp_path_factory.mktemp("phones"))
    with Serve(agents, "--manage-sip", "--calls-token", "${CALLS_TOKEN}", "--calls-per-minute", str(PER_MINUTE),
               "--scan-interval", "0.5", env=env_for(api)) as serve:
        serve.wait_ready()
        serve.wait_for(lambda: len(api.rules) == 1, message="the lines applied at start")
        yield serve, api, agents
        serve.stop()
    api.stop_thread()


def call(serve: Serve, body: dict[str, Any] | bytes, token: str | None = TOKEN, scheme: str = "Bearer "
         ) -> tuple[int, dict[str, Any], Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"{scheme}{token}"} if token else {})}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(serve.url("/calls"), data=data, method="POST",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def test_manage_sip_applies_a_changed_file_and_logs_a_broken_one_or_a_conflict_while_serving_goes_on(served) -> None:  # type: ignore[no-untyped-def]
    serve, api, agents = served
    lines = agents / "telephony" / "lines.yaml"
    write(lines, LINES.replace('numbers: ["+14155550100"]\n    auth: {username: acme, password: "${SIP',
                               'numbers: ["+14155550100", "+14155550199"]\n    auth: {username: acme, password: "${SIP'))
    serve.wait_for(lambda: any("+14155550199" in t.numbers for t in api.inbound.values()), message="the update")
    write(lines, LINES.replace("agent: support", "agent: nobody"))
    serve.wait_for(lambda: "dispatch_rules.support-line.agent: no valid agent named 'nobody'" in serve.output(),
                   message="the problem logged")
    assert f"{lines}:15:12:" in serve.output()
    assert serve.get("/readyz")[0] == 200
    assert [r.room_config.agents[0].agent_name for r in api.rules.values()] == ["support"]  # last good lines kept
    # a number an object of someone else's holds: logged once, nothing changed, serving goes on
    api.add_rule(name="ops-line", numbers=["+14155550177"])
    before = list(api.writes)
    write(lines, LINES.replace('numbers: ["+14155550100"]\n    auth: {username: acme, password: "${SIP',
                               'numbers: ["+14155550100", "+14155550177"]\n    auth: {username: acme, password: "${SIP')
          + '  other-line:\n    numbers: ["+14155550177"]\n    agent: support\n')
    serve.wait_for(lambda: "--manage-sip: dispatch rule other-line: +14155550177 is already taken by dispatch rule "
                           "'ops-line'" in serve.output(), message="the conflict logged")
    assert "--manage-sip: the plan has conflicts; nothing was changed" in serve.output()
    assert api.writes == before and serve.get("/readyz")[0] == 200
    for value in (*PASSWORDS.values(), SECRET, TOKEN):
        assert value not in serve.output()
    write(lines, LINES)


def test_manage_sip_and_post_calls_never_show_the_livekit_token_a_server_echoes(served) -> None:  # type: ignore[no-untyped-def]
    serve, api, agents = served
    lines = agents / "telephony" / "lines.yaml"
    api.echo_authorization = True
    try:
        write(lines, LINES.replace('"+1415*"', '"+1415*", "+1212*"'))
        serve.wait_for(lambda: "--manage-sip: cannot read LiveKit's SIP objects: " in serve.output(),
                       message="the failure logged")
        status, body, _ = call(serve, {"agent": "support", "to": "+14155550123", "context": {"customer": "42"}})
    finally:
        api.echo_authorization = False
        write(lines, LINES)
    assert status == 502 and "cannot serve Bearer **********" in body["error"], body
    assert "eyJ" not in serve.output() and "eyJ" not in json.dumps(body)


@pytest.mark.parametrize(("number", "outcome"), [("+14155550123", "answered"), ("+14155550486", "busy"),
                                                 ("+14155550408", "no_answer")])
def test_post_calls_places_the_call_and_answers_its_id_and_sip_outcome(served, number: str, outcome: str) -> None:  # type: ignore[no-untyped-def]
    serve, api, _ = served
    status, body, _ = call(serve, {"agent": "support", "to": number, "context": {"customer": "42"}})
    assert status == 200, body
    assert (body["outcome"], body["to"], body["trunk"]) == (outcome, number, "carrier")
    assert body["call_id"].startswith("call-support-")
    assert any(d.room == body["call_id"] and json.loads(d.metadata)["customer"] == "42" for d in api.dispatches)


def test_post_calls_refuses_a_destination_outside_the_allowed_patterns(served) -> None:  # type: ignore[no-untyped-def]
    status, body, _ = call(served[0], {"agent": "support", "to": "+33142681234", "context": {"customer": "42"}})
    assert (status, body["error"]) == (403, "+33142681234 is not in the allowed_destinations of any outbound trunk")


@pytest.mark.parametrize(("body", "status", "error"), [
    ({"agent": "nobody", "to": "+14155550123"}, 404, "no agent named 'nobody' is served"),
    ({"agent": "support", "to": "4155550123"}, 400, "`to` must be a phone number in E.164 form"),
    ({"agent": "support", "to": "+14155550123", "context": {"agent": "billing"}}, 400, "context key 'agent'"),
    ({"agent": "support"}, 400, "agent and to are required"),
    ({"agent": "support", "to": "+14155550123", "context": {"customer": "42", "plan": "gold"}}, 400,
     "no context value is read from dispatch:plan"),
    ({"agent": "support", "to": "+14155550123", "context": {"customer": "123456789"}}, 400,
     "call context customer has 9 characters; at most 8"),
    ({"agent": "support", "to": "+14155550123", "context": {"customer": "4x2"}}, 400,
     "call context customer does not match its pattern"),
    ({"agent": "support", "to": "+14155550123"}, 400, "required call context customer is missing")])
def test_post_calls_refuses_a_bad_request_saying_why(served, body: dict[str, Any], status: int, error: str) -> None:  # type: ignore[no-untyped-def]
    serve, api, _ = served
    before = len(api.dispatches)
    got, answer, _ = call(serve, body)
    assert got == status and error in answer["error"], answer
    assert "123456789" not in answer["error"] and "4x2" not in answer["error"]  # the reason, never the value
    assert len(api.dispatches) == before  # refused before anything rings


def test_post_calls_with_json_nested_too_deep_is_400_not_a_server_error(served) -> None:  # type: ignore[no-untyped-def]
    serve, api, _ = served
    before = len(api.dispatches)
    status, body, _ = call(serve, b"[" * 8000 + b"]" * 8000)
    assert (status, body["error"]) == (400, "the body is not JSON this endpoint takes (nested too deep)")
    assert len(api.dispatches) == before and "Traceback" not in serve.output()


@pytest.mark.parametrize("token", [None, "wrong-token-0000000000"])
def test_post_calls_without_the_right_token_is_401_and_dials_nothing(served, token: str | None) -> None:  # type: ignore[no-untyped-def]
    serve, api, _ = served
    before = len(api.dispatches)
    status, body, headers = call(serve, {"agent": "support", "to": "+14155550123"}, token)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert "${CALLS_TOKEN}" in body["error"] and TOKEN not in json.dumps(body)
    assert len(api.dispatches) == before


@pytest.mark.parametrize("scheme", ["bearer ", "BEARER ", "Bearer\t", "bEaReR   "])
def test_post_calls_takes_the_bearer_scheme_in_any_case(served, scheme: str) -> None:  # type: ignore[no-untyped-def]
    # RFC 7235: the scheme is case-insensitive; a 400 on the context shows the token was taken
    status, body, _ = call(served[0], {"agent": "support", "to": "+14155550123"}, scheme=scheme)
    assert (status, body["error"]) == (400, "required call context customer is missing (from dispatch:customer)")


def test_post_calls_beyond_the_rate_is_429_with_retry_after(served) -> None:  # type: ignore[no-untyped-def]
    # last in the module: the minute's calls are used up after it
    serve, api, _ = served
    answers = [call(serve, {"agent": "support", "to": "+14155550123", "context": {"customer": "42"}})
               for _ in range(PER_MINUTE + 1)]
    limited = [(s, h) for s, _, h in answers if s == 429]
    assert limited, [s for s, _, _ in answers]
    assert 1 <= int(limited[0][1]["Retry-After"]) <= 60
