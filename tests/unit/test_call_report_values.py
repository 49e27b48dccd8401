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


def test_latency_summary_is_in_call_order_with_p50_and_max() -> None:
    turns = [{"role": "agent", "latency_s": v, "latency_of": "speech"} for v in (0.9, 0.5, 1.4)]
    assert latency_of(turns) == {"turns": [0.9, 0.5, 1.4], "p50_s": 0.9, "max_s": 1.4, "measured": ["speech"]}
    assert latency_of([]) == {"turns": [], "p50_s": None, "max_s": None, "measured": []}
