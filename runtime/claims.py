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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# the SessionRunner (build.py imports this module: naming its type here would be a cycle)
SessionRunner = Any

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
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_BUILTIN = tuple(re.compile(p, re.IGNORECASE) for p in BUILTIN_PATTERNS)

RETRY_NOTE = ("Your last reply said that you did something or looked something up, but no tool ran in that "
              "turn. Do not claim actions you have not taken: call the tool now if you can, or tell the caller "
              "honestly what you did not do.")


def compile_patterns(extra: Iterable[str] = ()) -> tuple[re.Pattern[str], ...]:
    return _BUILTIN + tuple(re.compile(p, re.IGNORECASE) for p in extra)


def find_claim(text: str, patterns: tuple[re.Pattern[str], ...] = _BUILTIN) -> str | None:
    """The first sentence of ``text`` that claims an action or a lookup, or None.
    Questions are not claims ("Have I sent it?"), nor are conditions ("once I've
    checked")."""
    for sentence in _SENTENCES.split(text or ""):
        sentence = sentence.strip()
        if not sentence or sentence.rstrip("\"'”’)").endswith("?"):
            continue
        for pattern in patterns:
            for match in pattern.finditer(sentence):
                if not _CONDITION.search(sentence[: match.start()]):
                    return sentence
    return None


@dataclass
class ClaimWatch:
    """Follows one session's conversation: which turn it is in, whether a tool ran
    in it, and what each assistant message says. Events come from livekit's
    ``conversation_item_added`` and ``function_tools_executed``, so voice calls
    and text turns are watched the same way."""

    runner: SessionRunner
    tool_ran: bool = False
    retried: bool = False

    def attach(self, session: Any) -> None:
        session.on("conversation_item_added", self._on_item)
        session.on("function_tools_executed", self._on_tools)

    def _on_tools(self, event: Any) -> None:
        self.tool_ran = True

    def _on_item(self, event: Any) -> None:
        item = getattr(event, "item", None)
        if getattr(item, "type", "") != "message":
            return
        if item.role == "user":  # a new turn
            self.tool_ran = self.retried = False
            return
        if item.role != "assistant" or self.tool_ran:
            return
        spec: Any = self.runner.loaded.spec
        sentence = find_claim(item.text_content or "", compile_patterns(spec.claims.patterns))
        if sentence is None:
            return
        report(self.runner, item.text_content or "", sentence, spec.claims.action)
        if spec.claims.action == "retry" and not self.retried and self.runner.session is not None:
            self.retried = True
            self.runner.session.generate_reply(instructions=RETRY_NOTE)


def report(runner: SessionRunner, text: str, sentence: str, action: str) -> None:
    """One unbacked claim: the log line, the metric, the hook, the session event."""
    from .metrics import observe_unbacked_claim
    from .plugins import notify

    log.warning("agent %s session %s: unbacked claim: the reply claims an action but no tool ran: %r",
                runner.name, runner.session_id, sentence,
                extra={"agent": runner.name, "session_id": runner.session_id, "unbacked_claim": sentence,
                       "session_event": True})
    observe_unbacked_claim(runner.name)
    notify(runner.plugins, "voice_runtime_unbacked_claim", agent=runner.name, session_id=runner.session_id,
           text=text, claim=sentence, action=action)
    runner.emit("unbacked_claim", {"text": text, "claim": sentence, "agent": runner.name, "action": action})
