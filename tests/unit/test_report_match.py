"""`expect: {report: ...}`'s subset match: what matches and how a difference is named."""

from voice_runtime.session.testing.report_match import mismatch

REPORT = {"end_reason": "hang_up", "tool_calls": [{"tool": "echo", "outcome": "ok", "latency_ms": 3.2}],
          "analysis": {"result": {"resolved": True, "count": 1}}}


def test_a_subset_matches_and_extra_keys_of_the_report_are_ignored() -> None:
    assert mismatch({"end_reason": "hang_up", "tool_calls": [{"tool": "echo"}],
                     "analysis": {"result": {"resolved": True}}}, REPORT) is None


def test_a_difference_is_named_by_its_path_with_both_values() -> None:
    assert mismatch({"tool_calls": [{"outcome": "error"}]}, REPORT) == \
        'report.tool_calls[0].outcome: expected "error", got "ok"'
    assert mismatch({"analysis": {"result": {"topic": "x"}}}, REPORT) == \
        "report.analysis.result.topic: missing (there: count, resolved)"
    assert mismatch({"tool_calls": []}, REPORT) == \
        'report.tool_calls: expected 0 item(s), got 1: [{"latency_ms": 3.2, "outcome": "ok", "tool": "echo"}]'
    assert mismatch({"analysis": {"result": 5}}, REPORT) == \
        'report.analysis.result: expected 5, got {"count": 1, "resolved": true}'


def test_true_is_not_1_as_in_json() -> None:
    assert mismatch({"analysis": {"result": {"count": True}}}, REPORT) == \
        "report.analysis.result.count: expected true, got 1"
    assert mismatch({"analysis": {"result": {"resolved": 1}}}, REPORT) == \
        "report.analysis.result.resolved: expected 1, got true"
