"""Playing test cases: one fresh text session per case, the turns in order, each
turn's events checked against its expectations.

The session is the one `chat` and `serve` run (``SessionRunner``): the spec's
tools, MCP servers and handoffs. A case's ``script`` replaces the LLM with
``scripted_llm``; its ``mocks`` go through livekit's ``mock_tools`` (the model
still sees the real tool, the call never reaches the server). Tool calls are
checked with livekit's ``RunResult.expect`` (a subset match on arguments);
``judge`` is livekit's LLM judge on the spec's own model.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...core.error_text import error_text

if TYPE_CHECKING:
    from ...plugins.manager import Plugins
    from ...spec.loader import LoadedSpec
    from .cases import Case, Expectation, LoadedTests

CASE_TIMEOUT_S = 120.0


class Verdict(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # could not run here (no key for a real model); never counted as passed


@dataclass
class CaseResult:
    file: str
    where: str  # file:line:col of the case
    agent: str
    name: str
    verdict: Verdict = Verdict.PASSED
    failures: list[str] = field(default_factory=list)
    reason: str = ""  # why it was skipped
    seconds: float = 0.0
    # the call's report, as `chat --json` prints it (None: the session never started)
    call_report: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "where": self.where, "agent": self.agent, "name": self.name,
                "outcome": self.verdict.value, "failures": self.failures, "skip_reason": self.reason or None,
                "seconds": round(self.seconds, 3), "call_report": self.call_report}


@dataclass
class _Turn:
    """What one turn showed: events of livekit's RunResult plus ours."""

    result: Any
    handoffs: list[str] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the session's own (a claims check that timed out)

    @property
    def tool_calls(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for event in getattr(self.result, "events", []):
            if getattr(event, "type", "") == "function_call":
                try:
                    args = json.loads(event.item.arguments or "{}")
                except ValueError:
                    args = {"<unparsed>": event.item.arguments}
                out.append((event.item.name, args))
        return out

    @property
    def reply(self) -> str:
        from ..chat import reply_texts

        return " ".join(reply_texts(getattr(self.result, "events", [])))

    def actual(self) -> str:
        calls = ", ".join(f"{n} {json.dumps(a, sort_keys=True)}" for n, a in self.tool_calls) or "none"
        text = f"actual: reply {self.reply!r}; tool calls: {calls}"
        if self.handoffs:
            text += f"; handoffs: {', '.join(self.handoffs)}"
        return text


def _check(expectation: Expectation, turn: _Turn) -> str | None:
    """None when the turn meets the expectation; otherwise what was wrong."""
    if expectation.tool_call is not None:
        try:
            kwargs: dict[str, Any] = {"name": expectation.tool_call}
            if expectation.arguments is not None:
                kwargs["arguments"] = expectation.arguments
            turn.result.expect.contains_function_call(**kwargs)  # livekit's subset match
        except AssertionError:
            return f"expected tool_call {expectation.tool_call}" + (
                f" with arguments {json.dumps(expectation.arguments, sort_keys=True)}" if expectation.arguments else "")
        return None
    if expectation.no_tool_call:
        return "expected no tool call" if turn.tool_calls else None
    if expectation.reply_contains is not None:
        ok = expectation.reply_contains.lower() in turn.reply.lower()
        return None if ok else f"expected the reply to contain {expectation.reply_contains!r}"
    if expectation.reply_matches is not None:
        from ...core import user_regex

        # user_regex.TimedOut goes to the caller, which knows where the pattern is written
        ok = user_regex.search(user_regex.compiled(expectation.reply_matches), turn.reply) is not None
        return None if ok else f"expected the reply to match {expectation.reply_matches!r}"
    if expectation.handoff_to is not None:
        ok = expectation.handoff_to in turn.handoffs
        return None if ok else f"expected a handoff to {expectation.handoff_to}"
    return None  # judge: run by _judge, which needs the model


def _checks(expect: list[Expectation], turn: _Turn, where: Callable[[int, str], str]) -> list[str]:
    """What is wrong with the turn. A pattern that times out fails the turn and
    the turn's other patterns are not run (each could take as long)."""
    from ...core.user_regex import TimedOut

    problems: list[str] = []
    for k, expectation in enumerate(expect):
        try:
            problem = _check(expectation, turn)
        except TimedOut as exc:
            return [*problems, f"reply_matches {exc.pattern!r} at {where(k, 'reply_matches')} {exc}"]
        if problem:
            problems.append(problem)
    return problems


async def _judge(expectation: Expectation, turn: _Turn, judge_llm: Any) -> str | None:
    events = getattr(turn.result, "events", [])
    last = next((i for i in range(len(events) - 1, -1, -1) if getattr(events[i], "type", "") == "message"
                 and getattr(events[i].item, "role", "") == "assistant"), None)
    if last is None:
        return f"expected a reply the judge could read for {expectation.judge!r}"
    try:
        await turn.result.expect[last].is_message(role="assistant").judge(judge_llm, intent=expectation.judge)
    except AssertionError as exc:
        return f"the judge found the reply does not fulfil {expectation.judge!r}: {exc}"
    return None


def skip_reason(case: Case, loaded: LoadedSpec, plugins: Plugins, *, offline_only: bool) -> str | None:
    """Why a case cannot run here: a real model without its key, or (``serve
    --require-tests``) anything that needs the network."""
    from ...plugins.registry import missing_api_keys

    if offline_only and not case.offline:
        return ("needs a real model or server (no script, a judge, or a tool the script calls unmocked); "
                "serve --require-tests runs scripted, mocked cases only")
    judged = any(e.judge for t in case.turns for e in t.expect)
    if judged and getattr(loaded.spec, "pipeline", None) is None:
        return "a judge runs on the spec's pipeline LLM, and this agent has no pipeline"
    analyzed = case.checks_analysis and getattr(loaded.spec, "analysis", None) is not None
    if case.script is None or judged or analyzed:
        missing = missing_api_keys(loaded, plugins.registry, text_only=True)
        if missing:
            what = ("without a script the case needs" if case.script is None else
                    "a judge needs" if judged else "the report's analysis needs")
            return f"{what} the spec's real model: {missing[0]}"
    return None


async def run_case(tests: LoadedTests, index: int, specs: dict[str, LoadedSpec], plugins: Plugins, *,
                   offline_only: bool = False, pool: Any = None) -> CaseResult:
    from .cases import Case

    case: Case = tests.tests.cases[index]
    loaded = specs[tests.tests.agent]
    result = CaseResult(str(tests.path), tests.where(("cases", index, "name")), loaded.name, case.name)
    started = time.perf_counter()
    reason = skip_reason(case, loaded, plugins, offline_only=offline_only)
    if reason is not None:
        result.verdict, result.reason = Verdict.SKIPPED, reason
        return result
    try:
        async with asyncio.timeout(CASE_TIMEOUT_S):
            await _play(case, loaded, specs, plugins, result, pool,
                        lambda *key: tests.where(("cases", index, *key)), analyze=not offline_only)
    except TimeoutError:
        result.failures.append(f"the case took longer than {CASE_TIMEOUT_S:g}s")
    except Exception as exc:  # noqa: BLE001 - a session that fails is a failed case, not a crash
        result.failures.append(f"the session failed: {error_text(exc)}")
    result.seconds = time.perf_counter() - started
    if result.failures:
        result.verdict = Verdict.FAILED
    return result


async def _play(case: Case, loaded: LoadedSpec, specs: dict[str, LoadedSpec], plugins: Plugins,
                result: CaseResult, pool: Any, where: Callable[..., str], *, analyze: bool = True) -> None:
    from ..analysis import finished_report
    from ..call_report import CallReport, redactor
    from ..runner import SessionRunner
    from ...spec.handoffs import reachable
    from .scripted import scripted_llm

    from ...spec.call_context import local_values

    scripted = scripted_llm(case.script) if case.script is not None else None
    # a refused context (missing, invalid) fails the case with the reason, as a call is refused
    values = local_values(loaded.spec.context, case.context)
    runner = SessionRunner(loaded, plugins, text_only=True, pool=pool, llm_override=scripted,
                           specs=reachable(loaded, specs.get), stand_ins=_stand_ins(case.mocks),
                           call_context=values)
    current: _Turn | None = None

    def on_event(event: str, data: dict[str, Any]) -> None:
        if current is None:
            return
        if event == "handoff":
            current.handoffs.append(data["to"])
        elif event == "unbacked_claim":
            from ..claims import describe

            current.claims.append(describe(data))
        elif event == "claims_check_timed_out":
            current.problems.append(data["message"])

    runner.listeners.append(on_event)
    # the report `chat --json` prints, so a case's report (and analysis) is testable offline
    secrets = redactor(loaded, values)
    report = CallReport(runner, generation=None, call_id=runner.session_id, redact=secrets.redact_data)
    runner.call_report = report  # an agent's hang-up is the report's end_reason
    judge_llm = None
    try:
        await runner.start()
        _mock(runner, case.mocks)
        for n, turn in enumerate(case.turns, 1):
            current = _Turn(None)
            current.result = await runner.run_turn(turn.user)
            await runner.claims_settled()  # a judge's verdict comes after the reply; the turn is judged with it
            problems = _checks(turn.expect, current, lambda k, key, t=n - 1: where("turns", t, "expect", k, key))
            problems += current.problems
            for expectation in (e for e in turn.expect if e.judge):
                if judge_llm is None:
                    from ..providers import make_chain

                    judge_llm = make_chain(plugins, "llm", loaded.spec.pipeline.llm)
                problem = await _judge(expectation, current, judge_llm)
                if problem:
                    problems.append(problem)
            if current.claims and not case.allow_unbacked_claims:
                problems.append(f"{current.claims[0]} (allow_unbacked_claims: true to accept it)")
            if scripted is not None and scripted.exhausted:
                problems.append(f"the model was asked more often than the script has entries ({len(case.script or [])})")
            if problems:
                result.failures += [f"turn {n} {turn.user!r}: {p}" for p in problems]
                result.failures.append(f"turn {n}: {current.actual()}")
                break  # later turns build on this one
        current = None
        result.call_report = await finished_report(plugins, report, "test case ended", analyze=analyze)
        if case.expect is not None and not result.failures:
            from .report_match import mismatch

            problem = mismatch(case.expect.report, result.call_report)
            if problem:
                result.failures.append(f"expect.report at {where('expect', 'report')}: {problem}")
    finally:
        # a failure quotes the reply: the case's secret context values are redacted there too
        result.failures[:] = secrets.redact_data(result.failures)
        if judge_llm is not None:
            await judge_llm.aclose()
        await runner.aclose()


def _stand_ins(mocks: dict[str, str]) -> list[Any]:
    """A tool per mocked name, used only where no server lists it (a server that is
    down must not fail a case whose calls are all mocked); the mock answers it."""
    from livekit.agents.llm import function_tool

    async def unreachable(raw_arguments: dict[str, Any]) -> str:
        return "this tool is mocked in the test"

    schema = {"type": "object", "properties": {}, "additionalProperties": True}
    return [function_tool(unreachable, raw_schema={"name": name, "description": f"{name} (mocked)",
                                                   "parameters": schema}) for name in mocks]


def _mock(runner: Any, mocks: dict[str, str]) -> None:
    """livekit's ``mock_tools`` for the session, for the first agent and every
    handoff target (mocks are keyed by Agent class)."""
    if not mocks:
        return
    from livekit.agents import mock_tools

    from ..handoffs import handoff_agent_class, runtime_agent_class

    def answer(text: str) -> Any:
        async def mocked(*_: Any, **__: Any) -> str:
            return text

        return mocked

    table = {name: answer(text) for name, text in mocks.items()}
    for cls in (runtime_agent_class(), handoff_agent_class()):
        mock_tools(cls, table, session=runner.session)
