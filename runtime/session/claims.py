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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..core import user_regex

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

# past tense / participle of what an agent does through tools
_ACTIONS = (
    r"sent|e-?mailed|texted|messaged|booked|re-?scheduled|scheduled|reserved|cancell?ed|searched|"
    r"looked\s+(?:it\s+|that\s+|this\s+)?(?:up|into|at|for)|checked|double-checked|verified|confirmed|updated|"
    r"changed|created|submitted|placed|ordered|processed|refunded|transferred|forwarded|added|removed|deleted|"
    r"saved|registered|filed|opened|escalated|called|notified|contacted|reached\s+out|found|located|"
    r"pulled\s+up|retrieved|fetched|ran|reset|set\s+up|logged|recorded|issued|applied|charged|paid|moved|"
    r"completed|shared|uploaded|activated|deactivated|blocked|renewed|extended|upgraded|downgraded|"
    r"arranged|dispatched|shipped|replaced|credited|queried|consulted|reviewed|(?:went|gone)\s+through|"
    r"signed\s+you\s+up|put\s+(?:in|through)|made\s+(?:a|the|your)\s+(?:booking|reservation|appointment|change)"
)
_SUBJECT = r"\b(?:i|we)(?:\s+have|\s+had|'ve|’ve|'d|’d)?"
_ADVERBS = (r"(?:\s+(?:just|already|now|also|successfully|quickly|personally|gone\s+ahead\s+and|"
            r"went\s+ahead\s+and|been\s+able\s+to))*")
BUILTIN_PATTERNS = (
    # I've sent / we just booked / I went ahead and cancelled
    _SUBJECT + _ADVERBS + r"\s+(?:" + _ACTIONS + r")\b",
    # it has been sent / your order has been cancelled
    r"(?:\b(?:has|have|had)|'s|’s)\s+(?:now\s+|just\s+|already\s+)?been\s+(?:successfully\s+)?(?:" + _ACTIONS + r")\b",
    # your table is now booked / you're all set
    r"\b(?:is|are)\s+now\s+(?:booked|confirmed|cancell?ed|scheduled|reserved|updated|active|set\s+up)\b",
    r"\byou(?:'re|’re|\s+are)\s+(?:all\s+)?(?:booked|set|confirmed|registered|scheduled)\b",
    # a lookup that came back empty is still a lookup
    r"\b(?:i|we)\s+(?:couldn't|couldn’t|could\s+not|was\s+unable\s+to|were\s+unable\s+to|wasn't\s+able\s+to|"
    r"didn't|didn’t|did\s+not)\s+(?:find|locate)\b",
    # lookups stated as what the records say
    r"\baccording\s+to\s+(?:our|my|the|your)\s+(?:records|system|database|search|calendar|files|account)\b",
    r"\bi\s+(?:can\s+)?see\s+(?:that\s+|in\s+|on\s+)?(?:your|the)\s+(?:account|order|booking|reservation|records?|"
    r"file|calendar|history)\b",
    r"\b(?:my|the)\s+search\s+(?:shows|showed|found|returned|turned\s+up)\b",
)
# "once I've checked, ...", "if we booked ...": a condition, not a claim
_CONDITION = re.compile(r"\b(?:once|after|when|as\s+soon\s+as|if|before|until|whether|unless)\s*(?:\w+\s+){0,1}$",
                        re.IGNORECASE)
# a condition is the few words just before the claim: reading only this much of what
# precedes each match keeps a sentence of many matches linear (the whole prefix was
# read for each: 40 k characters took seconds)
_CONDITION_REACH = 80
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_BUILTIN = tuple(user_regex.compiled(p, ignore_case=True) for p in BUILTIN_PATTERNS)
CHECK_BUDGET_S = 1.0  # one reply, all patterns; 40 k characters take a few ms

RETRY_NOTE = ("Your last reply said that you did something or looked something up, but no tool ran in that "
              "turn. Do not claim actions you have not taken: call the tool now if you can, or tell the caller "
              "honestly what you did not do.")


def compile_patterns(extra: Iterable[str] = ()) -> tuple[Any, ...]:
    """The built-in patterns and ``extra`` (a spec's, validated by ``user_regex.problem``)."""
    return _BUILTIN + tuple(user_regex.compiled(p, ignore_case=True) for p in extra)


def find_claim(text: str, patterns: tuple[Any, ...] = _BUILTIN, budget_s: float = CHECK_BUDGET_S) -> str | None:
    """The first sentence of ``text`` that claims an action or a lookup, or None.
    Questions are not claims ("Have I sent it?"), nor are conditions ("once I've
    checked"). ``user_regex.TimedOut`` when the patterns take more than ``budget_s``."""
    deadline = time.monotonic() + budget_s
    for sentence in _SENTENCES.split(text or ""):
        sentence = sentence.strip()
        if not sentence or sentence.rstrip("\"'”’)").endswith("?"):
            continue
        for pattern in patterns:
            for match in user_regex.finditer(pattern, sentence, deadline - time.monotonic()):
                start = match.start()
                if not _CONDITION.search(sentence, max(0, start - _CONDITION_REACH), start):
                    return sentence
            if time.monotonic() > deadline:  # many short sentences: each search was quick
                raise user_regex.TimedOut(pattern.pattern, budget_s, len(text))
    return None


@dataclass
class ClaimWatch:
    """Follows one session's conversation: which turn it is in, whether a tool ran
    in it, and what each assistant message says. Events come from livekit's
    ``conversation_item_added`` and ``function_tools_executed``, so voice calls
    and text turns are watched the same way."""

    runner: ClaimOwner
    tool_ran: bool = False
    retried: bool = False
    turn: int = 0
    _checks: set[asyncio.Task[None]] = field(default_factory=set)

    def attach(self, session: Any) -> None:
        session.on("conversation_item_added", self._on_item)
        session.on("function_tools_executed", self._on_tools)

    def _on_tools(self, event: Any) -> None:
        self.tool_ran = True

    def _on_item(self, event: Any) -> None:
        from ..core.livekit_compat import hold_run_open

        item = getattr(event, "item", None)
        if getattr(item, "type", "") != "message":
            return
        if item.role == "user":  # a new turn
            self.turn += 1
            self.tool_ran = self.retried = False
            return
        if item.role != "assistant" or self.tool_ran or not item.text_content:
            return
        # off the event loop (the call's audio goes on); the turn's run waits for it, so a
        # claim and a retry's reply belong to the turn they are about
        check = asyncio.ensure_future(self._check(item.text_content, self.runner.loaded, self.turn))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)
        if self.runner.session is not None:
            hold_run_open(self.runner.session, check)

    async def _check(self, text: str, loaded: Any, turn: int) -> None:
        claims = loaded.spec.claims
        try:
            # compiling a spec's patterns is part of the work kept off the loop (tens of ms each)
            sentence = await asyncio.to_thread(lambda: find_claim(text, compile_patterns(claims.patterns)))
        except user_regex.TimedOut as exc:
            timed_out(self.runner, loaded, exc)
            return
        if sentence is None:
            return
        report(self.runner, text, sentence, claims.action)
        session = self.runner.session
        if claims.action == "retry" and not self.retried and turn == self.turn and session is not None:
            self.retried = True
            session.generate_reply(instructions=RETRY_NOTE)

    async def settle(self) -> None:
        """Every check under way has reported (each is bounded by ``CHECK_BUDGET_S``)."""
        await asyncio.gather(*self._checks, return_exceptions=True)


def timed_out(runner: ClaimOwner, loaded: Any, exc: user_regex.TimedOut) -> None:
    """A check that ran out of time: the reply is not known to be honest, and the
    pattern to blame (a spec's, at file:line:col) is named."""
    patterns = list(loaded.spec.claims.patterns)
    if exc.pattern in patterns:
        where = str(loaded.error_at(("claims", "patterns", patterns.index(exc.pattern)), f"claims check {exc}"))
    else:
        where = f"{loaded.path}: claims check (built-in patterns) {exc}; the rest of the reply was not checked"
    log.warning("agent %s session %s: %s", runner.name, runner.session_id, where,
                extra={"agent": runner.name, "session_id": runner.session_id, "session_event": True})
    runner.emit("claims_check_timed_out", {"agent": runner.name, "message": where})


def report(runner: ClaimOwner, text: str, sentence: str, action: str) -> None:
    """One unbacked claim: the log line, the metric, the hook, the session event."""
    from ..observe.metrics import observe_unbacked_claim
    from ..plugins.manager import notify

    log.warning("agent %s session %s: unbacked claim: the reply claims an action but no tool ran: %r",
                runner.name, runner.session_id, sentence,
                extra={"agent": runner.name, "session_id": runner.session_id, "unbacked_claim": sentence,
                       "session_event": True})
    observe_unbacked_claim(runner.name)
    notify(runner.plugins, "voice_runtime_unbacked_claim", agent=runner.name, session_id=runner.session_id,
           text=text, claim=sentence, action=action)
    runner.emit("unbacked_claim", {"text": text, "claim": sentence, "agent": runner.name, "action": action})
