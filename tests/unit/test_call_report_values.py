"""The pure parts of call reports: end reasons and the analysis answer's validation."""

from __future__ import annotations

import pytest

from voice_runtime.session.call_report import end_reason_of, latency_of
from voice_runtime.spec.analysis import validate_answer

SCHEMA = {"type": "object", "required": ["resolved"], "properties": {"resolved": {"type": "boolean"}}}


@pytest.mark.parametrize(("detail", "draining", "reason"), [
    ("participant_disconnected", False, "hang_up"),
    ("simulated call finished", False, "hang_up"),
    ("error", False, "error"),
    ("timeout", False, "timeout"),
    ("job_shutdown", True, "serve_draining"),
    ("parent process shutdown", False, "shutdown"),
    ("refused: required call context caller is missing", False, "refused"),
    ("job_killed", False, "job_killed"),
])
def test_what_ended_a_call_becomes_one_end_reason(detail: str, draining: bool, reason: str) -> None:
    assert end_reason_of(detail, draining=draining) == reason


def test_an_answer_in_a_code_fence_is_accepted_and_a_wrong_one_says_where() -> None:
    assert validate_answer(SCHEMA, '```json\n{"resolved": true}\n```') == {"resolved": True}
    with pytest.raises(ValueError, match=r"^invalid JSON: Expecting value at character 0$"):
        validate_answer(SCHEMA, "yes")
    with pytest.raises(ValueError, match=r"^does not match the schema at \(top level\): 'resolved' is a required"):
        validate_answer(SCHEMA, "{}")


def test_a_schema_pattern_that_backtracks_is_cut_at_its_bound_and_the_error_says_which_and_where() -> None:
    import time

    schema = {"type": "object", "properties": {"topic": {"type": "string", "pattern": "^([a-z]|a)+$"}}}
    assert validate_answer(schema, '{"topic": "weather"}') == {"topic": "weather"}
    with pytest.raises(ValueError, match=r"^does not match the schema at topic: 'Weather' does not match"):
        validate_answer(schema, '{"topic": "Weather"}')
    with pytest.raises(ValueError, match=r"^schema validation took too long: pattern '\^\(\[a-z\]\|a\)\+\$' at topic$"):
        validate_answer(schema, '{"topic": "' + "a" * 40 + '!"}', deadline=time.monotonic() + 5)


def test_a_schema_that_check_would_refuse_fails_as_the_schema_never_fetching_or_looping() -> None:
    remote = {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/evil.json"}}}
    looping = {"type": "object", "$defs": {"x": {"$ref": "#/$defs/x"}}, "properties": {"a": {"$ref": "#/$defs/x"}}}
    for schema in (remote, looping):
        with pytest.raises(ValueError, match=r"^the analysis schema cannot be applied \((Unresolvable|"
                                             r"_WrappedReferencingError|RecursionError)\)"):
            validate_answer(schema, '{"a": 1}')
    with pytest.raises(ValueError, match=r"^invalid JSON: nested too deep$"):
        validate_answer(remote, "[" * 100_000 + "]" * 100_000)


def test_latency_summary_is_in_call_order_with_p50_and_max() -> None:
    turns = [{"role": "agent", "latency_s": v, "latency_of": "speech"} for v in (0.9, 0.5, 1.4)]
    assert latency_of(turns) == {"turns": [0.9, 0.5, 1.4], "p50_s": 0.9, "max_s": 1.4, "measured": ["speech"]}
    assert latency_of([]) == {"turns": [], "p50_s": None, "max_s": None, "measured": []}
