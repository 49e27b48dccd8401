"""A test case's ``expect: {report: ...}``: a subset match on the call report's JSON.

A mapping matches when each of its keys is in the report and its value matches; a
list matches a list of the same length item by item; anything else matches an equal
value (``true`` is not ``1``). The first difference is named by its path in the
report (``report.analysis.result.resolved``, ``report.tool_calls[0].outcome``)."""

from __future__ import annotations

import json
from typing import Any


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _same(expected: Any, actual: Any) -> bool:
    # JSON has no bool/int overlap: 1 == true in Python, not in a report
    return isinstance(expected, bool) is isinstance(actual, bool) and expected == actual


def mismatch(expected: Any, actual: Any, path: str = "report") -> str | None:
    """None when ``actual`` holds ``expected``; otherwise where and how it differs."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {_show(actual)}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing (there: {', '.join(sorted(actual)) or 'nothing'})"
            problem = mismatch(value, actual[key], f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected a list, got {_show(actual)}"
        if len(expected) != len(actual):
            return f"{path}: expected {len(expected)} item(s), got {len(actual)}: {_show(actual)}"
        for n, (want, got) in enumerate(zip(expected, actual)):
            problem = mismatch(want, got, f"{path}[{n}]")
            if problem:
                return problem
        return None
    if not _same(expected, actual):
        return f"{path}: expected {_show(expected)}, got {_show(actual)}"
    return None
