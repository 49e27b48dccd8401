"""Replies that claim a tool ran when none did ("I've emailed it to you").

The reason this project exists: a model that says it searched, booked or sent
something while nothing ran on any server, and nobody can tell. After each agent
turn the reply is read sentence by sentence; a claim of a past action or lookup in
a turn where no tool ran is an ``unbacked_claim``: a WARNING log line, the metric
``voice_runtime_unbacked_claims_total{agent}``, the hook
``voice_runtime_unbacked_claim``, and an event for whoever watches the session
(``chat`` prints it). With ``claims: {action: retry}`` the model is asked once more,
told that no tool ran.

The built-in patterns are English and deliberately narrow: a first-person subject
(I, we) with a past-tense action or lookup verb, or a passive "has been sent";
future tense ("I'll send"), offers ("let me check"), questions, negations ("I
haven't sent") and conditions ("once I've checked") are not claims. Their precision
and recall are measured on ``tests/data/claims_corpus.yaml``.

The check is linear in the reply's length and bounded: every pattern (a spec's own
ones are written by users) runs through ``user_regex`` with at most
``CHECK_BUDGET_S`` for the whole reply, in a worker thread, so a long reply or a
pattern that backtracks never stalls the session's event loop (the call's audio).
A check that runs out of time is a WARNING naming the pattern at ``file:line:col``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..core import user_regex
from ..core.error_text import error_text
from ..mcp.results import without_markers
from . import claim_rules

if TYPE_CHECKING:
    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec


class ClaimOwner(Protocol):
    """What the claim watch needs of the call it watches (``session.runner.SessionRunner``,
    which imports this module): the agent's spec, livekit's session, whom to tell."""

    session_id: str
    loaded: LoadedSpec
    plugins: Plugins
    session: Any

    @property
    def name(self) -> str: ...

    def emit(self, event: str, data: dict[str, Any]) -> None: ...


log = logging.getLogger("voice_runtime.claims")

_CONDITION = re.compile(r"\b(?:once|after|when|as\s+soon\s+as|if|before|until|whether|unless)\s*(?:\w+\s+){0,1}$",
                        re.IGNORECASE)
# a condition is the few words just before the claim: reading only this much of what
# precedes each match keeps a sentence of many matches linear
_CONDITION_REACH = 80
CHECK_BUDGET_S = 1.0  # one reply, all rules; 40 k characters take a few ms
RULES = ("pattern", "tool_aware", "ungrounded_specific", "judge")
RESULT_CHARS = 4000  # of one tool call, as a source of specifics and to the judge
# of the arguments the model gave a tool this turn: they are the model's own words, which
# its reply may repeat (a 15,000-character echo argument), bounded for 1 MB of them
ARGUMENT_CHARS = 16_384
MAX_EARLIER_RESULTS = 200
JUDGE_REPLY_CHARS = 8000  # of the reply, to the judge
RUNTIME_LINES = 32
MAX_FINDINGS = 5  # per reply: the first few say enough, and a log is not flooded by one long reply

RETRY_NOTE = ("Your last reply said that you did something or looked something up, but no tool ran in that "
              "turn. Do not claim actions you have not taken: call the tool now if you can, or tell the caller "
              "honestly what you did not do.")


def compile_patterns(extra: Iterable[str] = ()) -> tuple[Any, ...]:
    """A spec's own ``claims.patterns`` (validated by ``user_regex.problem``)."""
    return tuple(user_regex.compiled(p, ignore_case=True) for p in extra)


def find_claim(text: str, patterns: tuple[Any, ...], budget_s: float = CHECK_BUDGET_S) -> str | None:
    """The first sentence of ``text`` a spec pattern matches (rule ``pattern``), or None.
    Questions are not claims, nor are conditions ("once I've checked").
    ``user_regex.TimedOut`` when the patterns take more than ``budget_s``."""
    deadline = time.monotonic() + budget_s
    for sentence in claim_rules.sentences(text):
        if claim_rules.question(sentence):
            continue
        for pattern in patterns:
            for match in user_regex.finditer(pattern, sentence, deadline - time.monotonic()):
                start = match.start()
                if not _CONDITION.search(sentence, max(0, start - _CONDITION_REACH), start):
                    return sentence
            if time.monotonic() > deadline:  # many short sentences: each search was quick
                raise user_regex.TimedOut(pattern.pattern, budget_s, len(text))
    return None


def find_claims(text: str, turn: claim_rules.Turn, patterns: tuple[Any, ...] = (),
                budget_s: float = CHECK_BUDGET_S) -> list[claim_rules.Finding]:
    """Everything of ``text`` no tool call backs: the built-in reading (``claim_rules``)
    and, in a turn where no tool ran, the spec's own patterns."""
    started = time.monotonic()
    text = without_markers(text)  # the runtime's own words ("showing the first 16384") claim nothing
    try:
        findings = claim_rules.read(text, turn, started + budget_s, time.monotonic)
    except TimeoutError:
        raise user_regex.TimedOut("(built-in)", budget_s, len(text)) from None
    if patterns and not turn.calls and not any(f.rule == "tool_aware" for f in findings):
        sentence = find_claim(text, patterns, budget_s - (time.monotonic() - started))
        if sentence is not None:
            findings.insert(0, claim_rules.Finding("pattern", "action", sentence, why="a claims pattern of the spec"))
    return findings[:MAX_FINDINGS]


def _said(text: str) -> str:
    """A line as it is compared with the history's text: spacing and case aside."""
    return " ".join(text.split()).casefold()


def _tool_of(tool: Any) -> claim_rules.Tool:
    info = getattr(tool, "info", None)
    name = str(getattr(info, "name", "") or "")
    description = getattr(info, "description", None) or (getattr(info, "raw_schema", None) or {}).get("description")
    return claim_rules.Tool(name, str(description or ""))


@dataclass
class ClaimWatch:
    """Follows one session's conversation: which turn it is in, the tool calls of
    the turn and of the call before it, what the caller said, and what each
    assistant message says. Events come from livekit's ``conversation_item_added``
    and ``function_tools_executed``, so voice calls and text turns are watched the
    same way."""

    runner: ClaimOwner
    retried: bool = False
    turn: int = 0
    calls: list[claim_rules.ToolRun] = field(default_factory=list)  # this turn's
    earlier: list[str] = field(default_factory=list)  # the call's tool calls before this turn
    caller: list[str] = field(default_factory=list)
    _checks: set[asyncio.Task[None]] = field(default_factory=set)
    _judges: set[asyncio.Task[None]] = field(default_factory=set)
    # lines the runtime says as the agent (fillers, progress) and whose history item has
    # not come yet; bounded: a line said while the session closes never gets one
    _runtime_lines: deque[str] = field(default_factory=lambda: deque(maxlen=RUNTIME_LINES))

    def not_a_reply(self, line: str) -> None:
        self._runtime_lines.append(_said(line))

    def attach(self, session: Any) -> None:
        session.on("conversation_item_added", self._on_item)
        session.on("function_tools_executed", self._on_tools)

    def _on_tools(self, event: Any) -> None:
        for call, output in event.zipped():
            # the model writes the arguments: bounded (1 MB of them took 1.1 s a check)
            arguments = call.arguments[:ARGUMENT_CHARS] if isinstance(call.arguments, str) else call.arguments
            self.calls.append(claim_rules.ToolRun(
                call.name, arguments, str(getattr(output, "output", "") or "")[:RESULT_CHARS],
                "error" if getattr(output, "is_error", False) else "ok"))

    def _on_item(self, event: Any) -> None:
        from ..core.livekit_compat import hold_run_open

        item = getattr(event, "item", None)
        if getattr(item, "type", "") != "message":
            return
        if item.role == "user":  # a new turn
            self.turn += 1
            self.retried = False
            # what a long call's tools returned stays a bounded source: each check reads it all
            self.earlier = (self.earlier + [f"{c.arguments} {c.result}"[:RESULT_CHARS] for c in self.calls]
                            )[-MAX_EARLIER_RESULTS:]
            self.calls = []
            self.caller.append(item.text_content or "")
            return
        if item.role != "assistant" or not item.text_content:
            return
        said = _said(item.text_content)
        if said in self._runtime_lines:  # a filler or progress line: not the model's reply
            self._runtime_lines.remove(said)
            return
        turn = self.snapshot()
        # off the event loop (the call's audio goes on); the turn's run waits for it, so a
        # claim and a retry's reply belong to the turn they are about
        check = asyncio.ensure_future(self._check(item.text_content, self.runner.loaded, self.turn, turn))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)
        if self.runner.session is not None:
            hold_run_open(self.runner.session, check)

    def snapshot(self) -> claim_rules.Turn:
        """What this turn knows, copied: the check runs in a thread while the call goes on."""
        loaded = self.runner.loaded
        tools = [_tool_of(t) for t in getattr(self.runner, "tools", None) or []]
        return claim_rules.Turn(tools=tools, calls=list(self.calls), earlier_results=list(self.earlier),
                                caller="\n".join(self.caller), instructions=str(getattr(loaded, "instructions", "")),
                                greeting=str(getattr(loaded.spec, "greeting", None) or ""))

    async def _check(self, text: str, loaded: Any, turn_number: int, turn: claim_rules.Turn) -> None:
        claims = loaded.spec.claims
        try:
            # compiling a spec's patterns is part of the work kept off the loop (tens of ms each)
            findings = await asyncio.to_thread(lambda: find_claims(text, turn, compile_patterns(claims.patterns)))
        except user_regex.TimedOut as exc:
            timed_out(self.runner, loaded, exc)
            findings = []
        except Exception:  # noqa: BLE001 - a detector bug must be seen, not end the task unretrieved
            log.exception("the claims check of a %d-character reply failed; nothing is reported for it", len(text))
            findings = []
        judge = getattr(claims, "judge", None)
        if judge is not None:  # after the turn, never held: the caller does not wait for a verdict
            task = asyncio.ensure_future(judge_reply(self.runner, judge, text, turn))
            self._judges.add(task)
            task.add_done_callback(self._judges.discard)
        for finding in findings:
            report(self.runner, text, finding, claims.action)
        session = self.runner.session
        if findings and claims.action == "retry" and not self.retried and turn_number == self.turn \
                and session is not None:
            self.retried = True
            session.generate_reply(instructions=RETRY_NOTE)

    async def settle(self) -> None:
        """Every check and verdict under way has reported (each is bounded in time)."""
        await asyncio.gather(*self._checks, return_exceptions=True)
        await asyncio.gather(*self._judges, return_exceptions=True)


def timed_out(runner: ClaimOwner, loaded: Any, exc: user_regex.TimedOut) -> None:
    """A check that ran out of time: the reply is not known to be honest, and the
    pattern to blame (a spec's, at file:line:col) is named."""
    patterns = list(loaded.spec.claims.patterns)
    if exc.pattern in patterns:
        where = str(loaded.error_at(("claims", "patterns", patterns.index(exc.pattern)), f"claims check {exc}"))
    else:
        where = f"{loaded.path}: claims check (built-in rules) {exc}; the rest of the reply was not checked"
    log.warning("agent %s session %s: %s", runner.name, runner.session_id, where,
                extra={"agent": runner.name, "session_id": runner.session_id, "session_event": True})
    runner.emit("claims_check_timed_out", {"agent": runner.name, "message": where})


# what each kind of finding claims, in the words of every place that shows one (chat, the
# log, a failed `voice-runtime test` turn, the talk page): a state or a looked-up fact is
# not an action, and a user reading "claims an action" of "your order is on its way" is misled
KIND_WORDS = {"action": "an action", "state": "a state", "lookup_fact": "a looked-up fact"}


def claimed(kind: str | None) -> str:
    """"the reply claims a state no tool call backs": what a finding of ``kind`` says."""
    return f"the reply claims {KIND_WORDS.get(kind or 'action', 'an action')} no tool call backs"


def describe(data: dict[str, Any]) -> str:
    """One finding as people read it (chat, a failed test, the talk page): the rule that
    fired first, what kind of claim it is, and why no call backs it."""
    rule = data.get("rule", "pattern")
    if rule == "ungrounded_specific":
        return f"[{rule}] the reply gives {data.get('token')!r}, which no source of the call has: {data['claim']}"
    if rule == "judge":
        return f"[judge] the judge finds a claim no tool call backs: {data['claim']}"
    why = f" ({data['why']})" if data.get("why") else ""
    return f"[{rule}] {claimed(data.get('kind'))}{why}: {data['claim']}"


SHOWN_CHARS = 500  # of a claim's sentence or token in a log line, event or hook call


def _shown(text: str | None) -> str | None:
    if text is None or len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def report(runner: ClaimOwner, text: str, finding: claim_rules.Finding, action: str) -> None:
    """One finding: the log line, the metrics, the hook, the session event."""
    from ..observe.metrics import observe_unbacked_claim
    from ..plugins.manager import notify

    # a model's run-on sentence (or one 1 MB "word") is named, not copied whole, into
    # each log line, event and hook call; the reply itself is in ``text``
    claim, token = _shown(finding.sentence), _shown(finding.token)
    data = {"text": text, "claim": claim, "agent": runner.name, "action": action, "rule": finding.rule,
            "kind": finding.kind, "token": token, "why": finding.why}
    if finding.rule == "ungrounded_specific":
        line = f"ungrounded specific {token!r} (rule ungrounded_specific): {claim!r}"
    else:
        line = f"unbacked claim: {claimed(finding.kind)}: {claim!r} (rule {finding.rule}: {finding.why})"
    data["message"] = describe(data)  # for the talk page, which shows it as chat does
    log.warning("agent %s session %s: %s", runner.name, runner.session_id, line,
                extra={"agent": runner.name, "session_id": runner.session_id, "unbacked_claim": claim,
                       "claim_rule": finding.rule, "session_event": True})
    observe_unbacked_claim(runner.name, finding.rule)
    notify(runner.plugins, "voice_runtime_unbacked_claim", agent=runner.name, session_id=runner.session_id,
           text=text, claim=claim, action=action, rule=finding.rule, token=token)
    runner.emit("unbacked_claim", data)


JUDGE_PROMPT = """You audit one reply of a voice agent. A reply must not tell the caller that something was done
(sent, booked, cancelled, changed, ...) or state a fact only a lookup could give (balances, statuses, times,
counts, reference numbers) unless a tool call of this turn, listed below, supports it. Offers, questions,
future plans, conditions and negations are not claims. Answer with JSON only:
{"unsupported": true or false, "claim": "<the sentence that claims, or empty>"}"""


async def judge_reply(runner: ClaimOwner, judge: Any, text: str, turn: claim_rules.Turn) -> None:
    """Ask the spec's judge model about ``text``; its verdict is logged, counted, an event
    (the call report, ``voice-runtime test``) and, when unsupported, a ``judge`` finding."""
    import json

    from ..observe.metrics import observe_claims_verdict
    from .providers import make_chain

    tools = "\n".join(f"- {t.name}: {t.description}" for t in turn.tools) or "(none)"
    calls = "\n".join(f"- {c.tool}({c.arguments}) -> {c.outcome}: {c.result[:500]}" for c in turn.calls) or "(none)"
    question = (f"Tools of the agent:\n{tools}\n\nTool calls of this turn:\n{calls}\n\n"
                f"The reply:\n{text[:JUDGE_REPLY_CHARS]}")
    verdict, claim, reason = "failed", "", ""
    llm = None
    try:
        from livekit.agents.llm import ChatContext

        llm = make_chain(runner.plugins, "llm", judge.llm)
        ctx = ChatContext.empty()
        ctx.add_message(role="system", content=JUDGE_PROMPT)
        ctx.add_message(role="user", content=question)
        answer = ""
        async with asyncio.timeout(judge.timeout_s):
            async with llm.chat(chat_ctx=ctx) as stream:
                async for chunk in stream:
                    if chunk.delta is not None and chunk.delta.content:
                        answer += chunk.delta.content
        start, end = answer.find("{"), answer.rfind("}")
        said = json.loads(answer[start:end + 1]) if 0 <= start < end else {}
        if not isinstance(said, dict) or not isinstance(said.get("unsupported"), bool):
            reason = f"the judge's answer is not the JSON asked for: {answer[:200]!r}"
        else:
            verdict = "unsupported" if said["unsupported"] else "supported"
            claim = str(said.get("claim") or "")
    except Exception as exc:  # a judge that fails never touches the call: it is logged
        reason = error_text(exc)
    finally:
        if llm is not None:
            await llm.aclose()
    observe_claims_verdict(runner.name, verdict)
    level = logging.WARNING if verdict != "supported" else logging.INFO
    log.log(level, "agent %s session %s: claims judge: %s%s", runner.name, runner.session_id, verdict,
            f": {claim or reason}" if claim or reason else "",
            extra={"agent": runner.name, "session_id": runner.session_id, "claims_verdict": verdict,
                   "session_event": True})
    runner.emit("claims_judged", {"agent": runner.name, "verdict": verdict, "claim": claim, "reason": reason,
                                  "text": text})
    if verdict == "unsupported":
        report(runner, text, claim_rules.Finding("judge", "action", claim or text, why="the judge model"),
               runner.loaded.spec.claims.action)
