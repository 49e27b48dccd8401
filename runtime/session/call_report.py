"""What a call left behind, as one JSON report: built from the events the call emits
while it runs (tool calls from their records, handoffs, fallbacks, fillers, unbacked
claims) and the session's history and usage when it ends. ``serve`` spools and
delivers it (``observe/report_spool.py``, ``serve/reports.py``); ``/simulate?wait=1``
returns it, ``chat --json`` prints it.

A tool call's arguments and result are in the report only with ``report_tool_io:
true``; secret context values never are (only the spec's non-secret ones), and every
string passes through the call's secret redaction before it is written.

While the call runs, a job keeps a checkpoint of the report so far (``checkpoint``)
in serve's state folder: a job process killed outright (SIGKILL, the memory limit)
runs none of its own code, so serve writes that call's report from the checkpoint,
marked ``job_killed`` (``serve/reports.py:report_killed_job``)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..observe.report_spool import new_id
from ..spec.call_context import public

RESULT_CHARS = 2000

# the report's end_reason: one of these; the words livekit or serve used are in end_detail
HANG_UP, ERROR, TIMEOUT, JOB_KILLED, SERVE_DRAINING, REFUSED, SHUTDOWN = (
    "hang_up", "error", "timeout", "job_killed", "serve_draining", "refused", "shutdown")
_HANG_UPS = {"participant_disconnected", "room disconnected", "user_initiated", "simulated call finished",
             "chat ended", "chat interrupted", "test case ended", "browser call ended", "task_completed"}
_SHUTDOWNS = {"job_shutdown", "job shutdown", "parent process shutdown", "shutdown"}
# the agent ended the call (session/phone.py): the report names how, as the phone metrics do
AGENT_ENDS = ("end_call", "transferred", "silence_timeout", "max_call_seconds", "voicemail")


# a report's top-level keys (analysis: added after the call, see session/analysis.py)
REPORT_FIELDS = ("id", "type", "agent", "generation", "call_id", "room", "started_at", "ended_at", "duration_s",
                 "end_reason", "end_detail", "error", "context", "transcript", "tool_calls", "handoffs", "fallbacks",
                 "fillers", "unbacked_claims", "claims_verdicts", "phone", "latency", "usage", "analysis")


def end_reason_of(detail: str, *, draining: bool = False) -> str:
    """The report's end_reason for what livekit or our code said ended the call."""
    if detail.startswith("refused"):
        return REFUSED
    if detail in AGENT_ENDS:  # before the timeout test: silence_timeout is the agent's hang-up
        return detail
    if "timeout" in detail or "took longer" in detail:
        return TIMEOUT
    if detail in _HANG_UPS:
        return HANG_UP
    if detail == JOB_KILLED:
        return JOB_KILLED
    if detail in _SHUTDOWNS or detail.startswith("serve"):
        return SERVE_DRAINING if draining else SHUTDOWN
    return ERROR


class CallReport:
    def __init__(self, runner: Any, *, generation: int | None, call_id: str, room: str | None = None,
                 redact: Callable[[Any], Any] | None = None) -> None:
        self.runner = runner
        self.loaded = runner.loaded  # the agent the call came to (a handoff changes the runner's)
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
        self.fillers: list[dict[str, Any]] = []
        self.claims: list[dict[str, Any]] = []
        self.phone: list[dict[str, Any]] = []  # hang-ups, transfers, DTMF, voicemail (session/phone.py)
        self.verdicts: list[dict[str, Any]] = []  # the claims judge's, one per reply (claims.judge)
        self.transcript: list[dict[str, Any]] = []
        self.usage: dict[str, Any] = {}
        self.done = False
        self.end_reason: str | None = None  # set by whoever saw the call end first
        self.redact = redact or (lambda data: data)
        # (file, targets): where the report so far is kept while the call runs (a job under serve)
        self.checkpoint: tuple[Path, list[dict[str, Any]]] | None = None
        self._with_io = bool(getattr(self.spec, "report_tool_io", False))
        runner.listeners.append(self._on_event)

    def attach(self, session: Any) -> None:
        """Keep the checkpoint current as the conversation goes (called by the runner
        once livekit's session exists)."""
        session.on("conversation_item_added", lambda _event: self._save_checkpoint())

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
        elif event == "phone":
            self.phone.append({**data, "at": now})
        elif event == "filler":
            self.fillers.append({"text": data["text"], "kind": data["kind"], "server": data["server"],
                                 "tool": data["tool"], "at": now})
        elif event == "unbacked_claim":
            self.claims.append({"agent": data["agent"], "claim": data["claim"], "action": data["action"],
                                "rule": data.get("rule", "pattern"), "token": data.get("token"), "at": now})
        elif event == "claims_judged":
            self.verdicts.append({"agent": data["agent"], "verdict": data["verdict"], "claim": data["claim"],
                                  "at": now})
        else:
            return
        self._save_checkpoint()

    def snapshot_transcript(self) -> None:
        """The history as the caller and the agent said it, with times and each reply's
        latency, and the session's usage; call before the session closes (both are gone
        after)."""
        session = getattr(self.runner, "session", None)
        history = getattr(session, "history", None)
        if history is None:
            return
        self.transcript = transcript_of(getattr(history, "items", []))
        self.usage = usage_of(session)

    def _save_checkpoint(self) -> None:
        if self.checkpoint is None or self.done:
            return
        path, targets = self.checkpoint
        if not self.transcript or getattr(self.runner, "session", None) is not None:
            self.snapshot_transcript()
        # not fsync'd: it guards against the job dying, not the machine (serve spools durably)
        tmp = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(OSError):
            body = self._body(JOB_KILLED, None)
            # a killed job runs no analysis: the report says so (serve cannot run the spec's model)
            body["analysis"] = {"error": "not run: the call's job process was killed"} \
                if getattr(self.spec, "analysis", None) is not None else None
            data = json.dumps({"targets": targets, "report": self.redact(body)}).encode()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # like the spool's files
            try:
                os.fchmod(fd, 0o600)  # a temporary file left by an older version keeps its mode otherwise
                os.write(fd, data)
            finally:
                os.close(fd)
            tmp.replace(path)

    def drop_checkpoint(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint[0].unlink(missing_ok=True)

    def finish(self, detail: str, error: str | None = None, *, draining: bool = False) -> dict[str, Any]:
        self.done = True
        if not self.transcript:
            self.snapshot_transcript()
        return self._body(self.end_reason or detail, error, draining=draining)

    def _body(self, detail: str, error: str | None, *, draining: bool = False) -> dict[str, Any]:
        ended = time.time()
        reason = end_reason_of(detail, draining=draining)
        if error and reason in (HANG_UP, SHUTDOWN):  # a turn failed: the call went wrong, however it ended
            reason = ERROR
        return {
            "id": self.id, "type": "call.ended", "agent": self.agent, "generation": self.generation,
            "call_id": self.call_id, "room": self.room, "started_at": self.started_at, "ended_at": ended,
            "duration_s": round(ended - self.started_at, 3), "end_reason": reason,
            "end_detail": detail, "error": error, "context": public(self.spec.context, self.runner.call_context),
            "transcript": self.transcript, "tool_calls": self.tool_calls, "handoffs": self.handoffs,
            "fallbacks": self.fallbacks, "fillers": self.fillers, "unbacked_claims": self.claims,
            "claims_verdicts": self.verdicts, "phone": self.phone, "latency": latency_of(self.transcript),
            "usage": self.usage,
        }


def transcript_of(items: list[Any]) -> list[dict[str, Any]]:
    """The caller's and the agent's messages with their times; an agent message has the
    latency livekit measured for it (``latency_s``) and what it measures: ``speech``, from
    the end of the caller's speech to the agent's first audio (livekit's e2e_latency), or
    ``text``, from the caller's text turn to the reply's first text (a text call has no
    audio: the reply's start plus the model's time to its first token; a tool call's
    time is in it, a filler line said meanwhile is not a reply)."""
    turns: list[dict[str, Any]] = []
    last_caller_at: float | None = None
    for item in items:
        if getattr(item, "type", "") != "message" or item.role not in ("user", "assistant"):
            continue
        at = getattr(item, "created_at", None)
        turn: dict[str, Any] = {"role": "caller" if item.role == "user" else "agent", "text": item.text_content or "",
                                "at": at, "interrupted": bool(getattr(item, "interrupted", False))}
        metrics = getattr(item, "metrics", None) or {}
        if item.role == "user":
            last_caller_at = at
        elif metrics.get("e2e_latency") is not None:
            turn.update(latency_s=round(float(metrics["e2e_latency"]), 4), latency_of="speech")
        elif last_caller_at is not None and at is not None and metrics.get("llm_node_ttft") is not None:
            turn.update(latency_s=round(at - last_caller_at + float(metrics["llm_node_ttft"]), 4), latency_of="text")
        if "latency_s" in turn:
            last_caller_at = None  # a second reply answers no caller turn (a filler line before it is no reply)
        turns.append(turn)
    return turns


def latency_of(transcript: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-turn latency in order, with p50 and the worst of the call."""
    values = [t["latency_s"] for t in transcript if "latency_s" in t]
    if not values:
        return {"turns": [], "p50_s": None, "max_s": None, "measured": []}
    ordered = sorted(values)
    return {"turns": values, "p50_s": ordered[len(ordered) // 2], "max_s": ordered[-1],
            "measured": sorted({t["latency_of"] for t in transcript if "latency_of" in t})}


def usage_of(session: Any) -> dict[str, Any]:
    """livekit's usage of the session (its ModelUsageCollector over the metrics events):
    totals for LLM tokens, TTS characters and STT audio seconds, and each model's line."""
    try:
        models = list(session.usage.model_usage)
    except Exception:  # noqa: BLE001 - a session that never started has no usage
        return {}
    total = {"llm_prompt_tokens": 0, "llm_completion_tokens": 0, "tts_characters": 0, "tts_audio_s": 0.0,
             "stt_audio_s": 0.0}
    by_model = []
    for usage in models:
        kind = getattr(usage, "type", "")
        line: dict[str, Any] = {"type": kind, "provider": getattr(usage, "provider", ""),
                                "model": getattr(usage, "model", "")}
        if kind == "llm_usage":
            total["llm_prompt_tokens"] += usage.input_tokens
            total["llm_completion_tokens"] += usage.output_tokens
            line.update(prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens)
        elif kind == "tts_usage":
            total["tts_characters"] += usage.characters_count
            total["tts_audio_s"] += usage.audio_duration
            line.update(characters=usage.characters_count, audio_s=round(usage.audio_duration, 3))
        elif kind == "stt_usage":
            total["stt_audio_s"] += usage.audio_duration
            line.update(audio_s=round(usage.audio_duration, 3))
        else:
            continue
        by_model.append(line)
    total["tts_audio_s"] = round(total["tts_audio_s"], 3)
    total["stt_audio_s"] = round(total["stt_audio_s"], 3)
    return {**total, "models": by_model}


def redactor(loaded: Any, values: dict[str, str]) -> Any:
    """The call's redaction (a SecretSet): the spec's ${VAR} values and its secret
    context values."""
    from ..spec.call_context import secret_values
    from ..spec.secrets import SecretSet

    secrets = SecretSet.of([loaded])
    secrets.add(secret_values(loaded.spec.context, values))
    return secrets


def refused_report(loaded: Any, generation: int | None, call_id: str, room: str | None, reason: str
                   ) -> dict[str, Any]:
    """The report of a call refused before its session existed (its context)."""
    now = time.time()
    return {"id": new_id(), "type": "call.ended", "agent": loaded.name, "generation": generation,
            "call_id": call_id, "room": room, "started_at": now, "ended_at": now, "duration_s": 0.0,
            "end_reason": REFUSED, "end_detail": reason, "error": reason, "context": {}, "transcript": [],
            "tool_calls": [], "handoffs": [], "fallbacks": [], "fillers": [], "unbacked_claims": [],
            "claims_verdicts": [], "phone": [], "latency": latency_of([]), "usage": {}}


def targets(loaded: Any, serve_wide: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The spec's report targets as plain data for the spool (a file target's folder
    resolved against the spec's folder), then serve's own (``serve --reports``)."""
    from ..spec.reports_file import target_data

    out = target_data(loaded.spec.reports, loaded.path.parent)
    return out + [t for t in serve_wide or [] if t not in out]
