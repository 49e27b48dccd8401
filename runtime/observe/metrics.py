"""Prometheus metrics of voice-runtime (served on /metrics by `serve`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# the *_created series double every counter for no use in dashboards
disable_created_metrics()

if TYPE_CHECKING:
    from .tool_calls import ToolCallRecord

TOOL_CALLS = Counter(
    "voice_runtime_tool_calls",
    "Tool calls by agent, server, tool and outcome (ok, error, timeout, unavailable, cancelled).",
    ["agent", "server", "tool", "outcome"],
)
TOOL_CALL_SECONDS = Histogram(
    "voice_runtime_tool_call_seconds",
    "Tool call latency, from the model's request to the result.",
    ["agent", "server", "tool"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


# labels() validates and looks the child up under a lock on every call; the children
# of a label set never change, so each is looked up once (a tool call pays for this)
_counters: dict[tuple[str, str, str, str], Any] = {}
_histograms: dict[tuple[str, str, str], Any] = {}


def observe_tool_call(record: ToolCallRecord) -> None:
    key = (record.agent, record.server, record.tool)
    counter_key = (*key, record.outcome)
    counter = _counters.get(counter_key)
    if counter is None:
        counter = _counters[counter_key] = TOOL_CALLS.labels(*counter_key)
    histogram = _histograms.get(key)
    if histogram is None:
        histogram = _histograms[key] = TOOL_CALL_SECONDS.labels(*key)
    counter.inc()
    histogram.observe(record.latency_ms / 1000)


SESSIONS = Counter(
    "voice_runtime_sessions",
    "Sessions by agent and how their start ended (started, refused: a required MCP server is down, failed).",
    ["agent", "outcome"],
)
SESSION_FALLBACKS = Counter(
    "voice_runtime_session_fallbacks",
    "Sessions that switched from their realtime model to their pipeline.",
    ["agent"],
)


def observe_session(agent: str, outcome: str) -> None:
    SESSIONS.labels(agent, outcome).inc()


CALLS_REFUSED = Counter(
    "voice_runtime_calls_refused",
    "Calls refused before their session started because of their call context, by agent and reason "
    "(missing: a required value, too_long, pattern, invalid).",
    ["agent", "reason"],
)


def observe_call_refused(agent: str, reason: str) -> None:
    CALLS_REFUSED.labels(agent, reason).inc()


REPORTS = Counter(
    "voice_runtime_reports",
    "Call report deliveries by outcome (delivered; retried: an attempt failed and is retried later; dead: "
    "refused for good or too old, kept in the spool's dead/ folder).",
    ["outcome"],
)
REPORTS_PENDING = Gauge(
    "voice_runtime_reports_pending",
    "Call report deliveries waiting in the spool (serve's view).",
    multiprocess_mode="livemax",
)


REPORTS_DEAD = Gauge(
    "voice_runtime_reports_dead",
    "Call report deliveries kept in the spool's dead/ folder (refused for good, or too old); a counter "
    "restarts with serve, this counts what is on disk.",
    multiprocess_mode="livemax",
)


REPORTS_DEAD_REMOVED = Counter(
    "voice_runtime_reports_dead_removed",
    "Dead call reports removed from the spool's dead/ folder by its retention, by reason (age: dead longer "
    "than --report-dead-max-days; count: the oldest beyond --report-dead-max; size: beyond --report-dead-max-mb).",
    ["reason"],
)


def observe_dead_removed(reason: str, count: int) -> None:
    REPORTS_DEAD_REMOVED.labels(reason).inc(count)


def observe_report(outcome: str) -> None:
    REPORTS.labels(outcome).inc()


def set_reports_pending(count: int, dead: int | None = None) -> None:
    REPORTS_PENDING.set(count)
    if dead is not None:
        REPORTS_DEAD.set(dead)


def observe_fallback(agent: str) -> None:
    SESSION_FALLBACKS.labels(agent).inc()


UNBACKED_CLAIMS = Counter(
    "voice_runtime_unbacked_claims",
    "Replies that claimed an action or a lookup in a turn where no tool ran, by agent.",
    ["agent"],
)
HANDOFFS = Counter(
    "voice_runtime_handoffs",
    "Sessions handed from one agent to another (the target's transfer_to_<agent> tool).",
    ["from", "to"],
)

HANDOFFS_REFUSED = Counter(
    "voice_runtime_handoffs_refused",
    "Transfers an agent's model asked for but was refused (limit: max_handoffs_per_turn reached in the caller's "
    "turn); the agent answered itself.",
    ["agent", "reason"],
)


# in job processes (multiprocess mode): each session counts under the agent it is now,
# so /status can say how many calls each agent holds after handoffs
SESSIONS_CURRENT = Gauge(
    "voice_runtime_sessions_current",
    "Sessions by the agent they are talking as now (after handoffs).",
    ["agent"],
    multiprocess_mode="livesum",
)


def count_session(agent: str, delta: int) -> None:
    SESSIONS_CURRENT.labels(agent).inc(delta)


CLAIM_FINDINGS = Counter(
    "voice_runtime_claim_findings",
    "Claims no tool call backs, by the rule that found them: pattern, tool_aware, ungrounded_specific, judge.",
    ["agent", "rule"],
)
CLAIMS_VERDICTS = Counter(
    "voice_runtime_claims_judge_verdicts",
    "Verdicts of the claims judge model (claims.judge): supported, unsupported, failed.",
    ["agent", "verdict"],
)


def observe_unbacked_claim(agent: str, rule: str = "pattern") -> None:
    UNBACKED_CLAIMS.labels(agent).inc()
    CLAIM_FINDINGS.labels(agent, rule).inc()


def observe_claims_verdict(agent: str, verdict: str) -> None:
    CLAIMS_VERDICTS.labels(agent, verdict).inc()


def observe_handoff(from_agent: str, to_agent: str) -> None:
    HANDOFFS.labels(from_agent, to_agent).inc()


def observe_handoff_refused(agent: str, reason: str) -> None:
    HANDOFFS_REFUSED.labels(agent, reason).inc()


TOOL_FILLERS = Counter(
    "voice_runtime_tool_fillers",
    "Filler lines said while a slow tool call ran, by agent, server and tool.",
    ["agent", "server", "tool"],
)


def count_filler(agent: str, server: str, tool: str) -> None:
    TOOL_FILLERS.labels(agent, server, tool).inc()


SERVER_REQUESTS = Counter(
    "voice_runtime_mcp_server_requests",
    "Requests an MCP server made of us during calls, by server, kind (elicitation, sampling) and outcome "
    "(accept, decline, cancel, refused, answered, denied, error).",
    ["server", "kind", "outcome"],
)


def observe_server_request(server: str, kind: str, outcome: str) -> None:
    SERVER_REQUESTS.labels(server, kind, outcome).inc()


CALL_ENDS = Counter(
    "voice_runtime_call_ends",
    "Calls ended, by agent and reason: end_call (the model hung up), transferred, warm_transferred, voicemail, "
    "silence_timeout, max_call_seconds, or livekit's close reason (user_initiated, participant_disconnected, error, ...).",
    ["agent", "reason"],
)
TRANSFERS = Counter(
    "voice_runtime_transfers",
    "Phone transfers by agent, kind (cold, warm) and outcome (transferred, failed).",
    ["agent", "kind", "outcome"],
)
DTMF = Counter(
    "voice_runtime_dtmf",
    "Keypad input by agent, direction (sent, collected) and outcome (ok, incomplete, failed).",
    ["agent", "direction", "outcome"],
)
VOICEMAIL = Counter(
    "voice_runtime_voicemail",
    "Answering-machine detection verdicts by agent, category (human, machine-vm, machine-ivr, "
    "machine-unavailable, uncertain, error) and what was done (leave_message, hang_up, none).",
    ["agent", "category", "action"],
)


def observe_call_end(agent: str, reason: str) -> None:
    CALL_ENDS.labels(agent, reason).inc()


def observe_phone(agent: str, kind: str, data: dict[str, Any]) -> None:
    """One phone outcome (session/phone.py), counted by its kind."""
    if kind == "transfer":
        TRANSFERS.labels(agent, data["kind"], data["outcome"]).inc()
    elif kind == "dtmf":
        DTMF.labels(agent, data["direction"], data["outcome"]).inc()
    elif kind == "voicemail":
        VOICEMAIL.labels(agent, data["category"], data["action"]).inc()
