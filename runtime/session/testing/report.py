"""Test results for people (text), scripts (JSON) and CI systems (JUnit XML)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from ...core.terminal import printable
from .run import Verdict

if TYPE_CHECKING:
    from .run import CaseResult


def counts(results: list[CaseResult]) -> dict[str, int]:
    return {v.value: sum(r.verdict is v for r in results) for v in Verdict}


def summary_line(results: list[CaseResult]) -> str:
    c = counts(results)
    n = len(results)
    return f"{n} case{'s' if n != 1 else ''}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"


def render_text(results: list[CaseResult]) -> str:
    lines: list[str] = []
    file = None
    for r in results:
        if r.file != file:
            file = r.file
            lines.append(f"{r.file} ({r.agent})")
        label = {Verdict.PASSED: "PASS", Verdict.FAILED: "FAIL", Verdict.SKIPPED: "SKIP"}[r.verdict]
        tail = f": {r.reason}" if r.verdict is Verdict.SKIPPED else f" ({r.seconds:.1f} s)"
        lines.append(f"  {label} {r.name}{tail}")
        lines += [f"       {f}" for f in r.failures]
    lines.append(summary_line(results))
    return "\n".join(printable(line) for line in lines)


def render_json(results: list[CaseResult]) -> str:
    return json.dumps({"ok": not any(r.verdict is Verdict.FAILED for r in results), "summary": counts(results),
                       "cases": [r.as_dict() for r in results]}, indent=2)


def write_junit(results: list[CaseResult], path: Path) -> None:
    """One <testsuite> per test file, one <testcase> per case (classname: the agent), its
    call report as JSON in <system-out>."""
    root = ET.Element("testsuites", name="voice-runtime test", tests=str(len(results)),
                      failures=str(counts(results)["failed"]), skipped=str(counts(results)["skipped"]))
    by_file: dict[str, list[CaseResult]] = {}
    for r in results:
        by_file.setdefault(r.file, []).append(r)
    for file, group in by_file.items():
        c = counts(group)
        suite = ET.SubElement(root, "testsuite", name=file, tests=str(len(group)), failures=str(c["failed"]),
                              errors="0", skipped=str(c["skipped"]), time=f"{sum(r.seconds for r in group):.3f}")
        for r in group:
            case = ET.SubElement(suite, "testcase", name=r.name, classname=r.agent, file=r.file, time=f"{r.seconds:.3f}")
            if r.verdict is Verdict.FAILED:
                failure = ET.SubElement(case, "failure", message=r.failures[0] if r.failures else "failed")
                failure.text = "\n".join(r.failures)
            elif r.verdict is Verdict.SKIPPED:
                ET.SubElement(case, "skipped", message=r.reason)
            if r.call_report is not None:  # the call's report, as `test --json` has it (CI keeps it as output)
                ET.SubElement(case, "system-out").text = json.dumps({"call_report": r.call_report})
    # XML 1.0 has no escape for most control characters: one raw \x01 or ESC in a reply,
    # a case name or an expectation made the whole file unreadable to CI's parsers
    for element in root.iter():
        element.text = printable(element.text, lines=True) if element.text else element.text
        element.attrib.update({k: printable(v, lines=True) for k, v in element.attrib.items()})
    ET.indent(root)
    path.write_text(ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n", encoding="utf-8")
