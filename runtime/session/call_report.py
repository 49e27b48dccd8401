"""What a call left behind, as one JSON report: built from the events the call emits
while it runs (tool calls from their records, handoffs, fallbacks, unbacked claims)
and the session's history when it ends. ``serve`` spools and delivers it
(``observe/report_spool.py``, ``serve/reports.py``); ``/simulate?wait=1`` returns it.

A tool call's arguments and result are in the report only with ``report_tool_io:
true``; secret context values never are (only the spec's non-secret ones), and every
string passes through the process's secret redaction before it is written."""

from __future__ import annotations

import time
from typing import Any

from ..observe.report_spool import new_id
from ..spec.call_context import public

RESULT_CHARS = 2000


class CallReport:
    def __init__(self, runner: Any, *, generation: int | None, call_id: str, room: str | None = None) -> None:
        self.runner = runner
        self.spec = runner.loaded.spec
        self.id = new_id()
        self.agent = runner.name
        self.generation = generation
        self.call_id = call_id
        self.room = room
        self.started_at = time.time()
        self.tool_calls: list[dict[str, Any]] = []
        self.handoffs: list[dict[str, Any]] = []
        self.fallbacks: list[dict[str, Any]] = []
        self.claims: list[dict[str, Any]] = []
        self.verdicts: list[dict[str, Any]] = []  # the claims judge's, one per reply (claims.judge)
        self.transcript: list[dict[str, Any]] = []
        self.done = False
        self.end_reason: str | None = None  # set by whoever saw the call end first
        self._with_io = bool(getattr(self.spec, "report_tool_io", False))
        runner.listeners.append(self._on_event)

    def _on_event(self, event: str, data: dict[str, Any]) -> None:
        now = time.time()
        if event == "tool_call":
            call = {"server": data["server"], "tool": data["tool"], "at": now}
            if self._with_io:
                call["arguments"] = data["arguments"]
            self.tool_calls.append(call)
        elif event == "tool_result":
            open_call = next((c for c in reversed(self.tool_calls) if c["tool"] == data["tool"] and "outcome" not in c),
                             None)
            if open_call is not None:
                open_call.update(outcome=data["outcome"], latency_ms=data["latency_ms"])
                if self._with_io:
                    open_call["result"] = str(data.get("result"))[:RESULT_CHARS]
        elif event == "handoff":
            self.handoffs.append({"from": data["from"], "to": data["to"], "at": now})
        elif event == "fallback":
            self.fallbacks.append({"from": data["from"], "to": data["to"], "reason": data["reason"], "at": now})
        elif event == "unbacked_claim":
            self.claims.append({"agent": data["agent"], "claim": data["claim"], "action": data["action"],
                                "rule": data.get("rule", "pattern"), "token": data.get("token"), "at": now})
        elif event == "claims_judged":
            self.verdicts.append({"agent": data["agent"], "verdict": data["verdict"], "claim": data["claim"],
                                  "at": now})

    def snapshot_transcript(self) -> None:
        """The history as the caller and the agent said it, with times; call before the
        session closes (it is gone after)."""
        session = getattr(self.runner, "session", None)
        history = getattr(session, "history", None)
        if history is None:
            return
        turns = []
        for item in getattr(history, "items", []):
            if getattr(item, "type", "") != "message" or item.role not in ("user", "assistant"):
                continue
            turns.append({"role": "caller" if item.role == "user" else "agent", "text": item.text_content or "",
                          "at": getattr(item, "created_at", None), "interrupted": bool(getattr(item, "interrupted", False))})
        self.transcript = turns

    def finish(self, end_reason: str, error: str | None = None) -> dict[str, Any]:
        self.done = True
        end_reason = self.end_reason or end_reason
        ended = time.time()
        if not self.transcript:
            self.snapshot_transcript()
        return {
            "id": self.id, "type": "call.ended", "agent": self.agent, "generation": self.generation,
            "call_id": self.call_id, "room": self.room, "started_at": self.started_at, "ended_at": ended,
            "duration_s": round(ended - self.started_at, 3), "end_reason": end_reason, "error": error,
            "context": public(self.spec.context, self.runner.call_context),
            "transcript": self.transcript, "tool_calls": self.tool_calls, "handoffs": self.handoffs,
            "fallbacks": self.fallbacks, "unbacked_claims": self.claims, "claims_verdicts": self.verdicts,
        }


def refused_report(loaded: Any, generation: int | None, call_id: str, room: str | None, reason: str
                   ) -> dict[str, Any]:
    """The report of a call refused before its session existed (its context)."""
    now = time.time()
    return {"id": new_id(), "type": "call.ended", "agent": loaded.name, "generation": generation,
            "call_id": call_id, "room": room, "started_at": now, "ended_at": now, "duration_s": 0.0,
            "end_reason": reason, "error": reason, "context": {}, "transcript": [], "tool_calls": [],
            "handoffs": [], "fallbacks": [], "unbacked_claims": [], "claims_verdicts": []}


def targets(loaded: Any) -> list[dict[str, Any]]:
    """The spec's report targets as plain data for the spool (a file target's folder
    resolved against the spec's folder)."""
    out: list[dict[str, Any]] = []
    for target in loaded.spec.reports:
        if target.webhook is not None:
            out.append({"webhook": target.webhook.model_dump()})
        elif target.file is not None:
            folder = (loaded.path.parent / target.file.dir).resolve()
            out.append({"file": {"dir": str(folder)}})
    return out
