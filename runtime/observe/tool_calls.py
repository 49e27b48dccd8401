"""Proof of execution: one record per tool call, to the log and to the sinks its
builder passes in (Prometheus, the ``voice_runtime_tool_called`` hook), and the call
as it happens to anyone watching the session (``chat``, a simulated call's report)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

log = logging.getLogger("voice_runtime.tools")
_INFO = logging.INFO
# Every tool call pays for what happens here (see benchmarks/tool_call_overhead.py):
# the record is a flat dict copy, not dataclasses.asdict's recursive deep copy; the
# log record is built only when INFO is on, without logging's per-call stack walk
# (findCaller) for a call site that never moves; the sinks are bound once, by the builder.


@dataclass(frozen=True)
class ToolCallRecord:
    agent: str
    session_id: str
    server: str  # MCP server name, or "plugin:<name>" for plugin tools
    tool: str  # the name the MCP server / plugin knows
    exposed_name: str  # the name the model saw (with prefix)
    args_digest: str  # sha256 of the canonical JSON arguments, first 16 hex digits
    started_at: float
    latency_ms: float
    outcome: str  # ok, error, timeout, unavailable, cancelled
    result_chars: int
    # a short description of our own making (``tool error``, ``server down``,
    # ``JSON-RPC error -32602``), never text a server or tool supplied: a failed
    # call's text may echo its arguments, and the record goes to logs, /status,
    # the journal and spans (the model alone is told the server's words)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        # every field is a str, a number or None: a flat copy equals dataclasses.asdict
        return dict(self.__dict__)


# json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str), without
# building a new encoder for every call
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def args_digest(arguments: Any) -> str:
    return hashlib.sha256(_CANONICAL.encode(arguments).encode()).hexdigest()[:16]


# JSON-RPC reserves -32768..-32000 (its own errors and "server error"s); any other
# code is the server's to choose, and a number can carry an argument (a code of
# 4000056655665556 is a card number, a 4-digit one a PIN)
RPC_RESERVED = range(-32768, -31999)


def rpc_error(code: Any) -> str:
    """A JSON-RPC error's fixed description: its code if JSON-RPC reserves it."""
    if isinstance(code, int) and code in RPC_RESERVED:
        return f"JSON-RPC error {code}"
    return "JSON-RPC error (a code of the server's own)"


@dataclass
class CallOutcome:
    """Filled in by the code making a call inside ``CallRecorder.call``."""

    outcome: str = "ok"
    text: str = ""
    error: str | None = None
    said: str | None = None  # what the model is told instead of ``text`` when the call failed

    def fail(self, outcome: str, error: str, said: str | None = None) -> None:
        """``error``: a fixed description for the record (see ``ToolCallRecord.error``);
        ``said``: the sentence the model receives, which may quote the server."""
        self.outcome, self.error, self.said = outcome, error, said


class _RecordedCall:
    """``CallRecorder.call``'s context manager (a class: cheaper than a generator)."""

    __slots__ = ("_recorder", "_server", "_tool", "_exposed", "_arguments", "_started", "_state", "_span")

    def __init__(self, recorder: CallRecorder, server: str, tool: str, exposed_name: str, arguments: Any) -> None:
        self._recorder, self._server, self._tool = recorder, server, tool
        self._exposed, self._arguments = exposed_name, arguments

    def __enter__(self) -> CallOutcome:
        recorder = self._recorder
        self._span = None if recorder.tracer is None else recorder.tracer.start_span(
            "plugin.tool_call" if self._server.startswith("plugin:") else "mcp.tool_call",
            attributes={"voice_runtime.agent": recorder.agent, "voice_runtime.session_id": recorder.session_id,
                        "mcp.server": self._server, "mcp.transport": recorder.transports.get(self._server, "plugin"),
                        "mcp.tool": self._tool, "gen_ai.tool.name": self._exposed})
        if self._span is not None and self._server in recorder.traced_arguments:
            self._span.set_attribute("voice_runtime.tool.arguments", _CANONICAL.encode(self._arguments)[:4096])
        self._started = recorder.started(self._exposed, self._arguments, self._server)
        self._state = CallOutcome()
        return self._state

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        state = self._state
        if exc_type is not None:
            if issubclass(exc_type, asyncio.CancelledError):
                state.outcome = "cancelled"
            elif state.outcome == "ok":  # the exception's text may quote the arguments: its type only
                state.fail("error", f"raised {exc_type.__name__}", said=state.said)
        record = self._recorder.finished(server=self._server, tool=self._tool, exposed_name=self._exposed,
                                         arguments=self._arguments, started=self._started, outcome=state.outcome,
                                         result=state.text, error=state.error, said=state.said)
        if self._span is not None:
            _end_span(self._span, record)
        # None: the body's exception (if any) propagates


# What receives each finished call's record: Prometheus, the plugins'
# ``voice_runtime_tool_called`` hook. Passed in by whoever builds the recorder, so
# this module depends on nothing of the package (it sits below metrics and plugins).
Sink = Callable[[ToolCallRecord], None]
# What a session's event listeners receive: ("tool_call", ...) when a call starts and
# ("tool_result", ...) when it ends, with the argument values and result text a
# record deliberately leaves out (chat shows them; a simulated call reports them).
Listener = Callable[[str, dict[str, Any]], None]


@dataclass
class CallRecorder:
    """Per session: who to tell about each tool call."""

    agent: str
    session_id: str
    sinks: Sequence[Sink] = ()
    listeners: list[Listener] = field(default_factory=list)
    records: list[ToolCallRecord] = field(default_factory=list)
    # an OpenTelemetry tracer when tracing is on: each call is a span (see tracing.py)
    tracer: Any = None
    transports: Mapping[str, str] = field(default_factory=dict)  # MCP server -> transport, for the span
    traced_arguments: frozenset[str] = frozenset()  # servers whose spec opts in to arguments on spans

    def call(self, *, server: str, tool: str, exposed_name: str, arguments: Any) -> _RecordedCall:
        """Record one call around its body (``with recorder.call(...) as outcome:``):
        an exception the body did not classify counts as an error, a cancellation
        (the user interrupted) as cancelled."""
        return _RecordedCall(self, server, tool, exposed_name, arguments)

    def started(self, exposed_name: str, arguments: Any, server: str) -> float:
        for listener in self.listeners:
            listener("tool_call", {"tool": exposed_name, "server": server, "arguments": arguments})
        return time.perf_counter()

    def finished(
        self, *, server: str, tool: str, exposed_name: str, arguments: Any, started: float,
        outcome: str, result: str, error: str | None = None, said: str | None = None,
    ) -> ToolCallRecord:
        """``said``: what the model was told instead of ``result`` (a failure's sentence);
        listeners get that, as the model did."""
        record = ToolCallRecord(
            agent=self.agent, session_id=self.session_id, server=server, tool=tool, exposed_name=exposed_name,
            args_digest=args_digest(arguments), started_at=time.time(),
            latency_ms=round((time.perf_counter() - started) * 1000, 2), outcome=outcome,
            result_chars=len(result), error=error,
        )
        self.records.append(record)
        if log.isEnabledFor(_INFO):
            _log_soon(record)
        for sink in self.sinks:
            sink(record)
        for listener in self.listeners:
            listener("tool_result", {"tool": exposed_name, "outcome": outcome,
                                     "result": result if said is None else said,
                                     "latency_ms": record.latency_ms, "server": server})
        return record


def _end_span(span: Any, record: ToolCallRecord) -> None:
    """What the call came to, on its span: the result's size and the arguments'
    digest, never the result (nor the arguments, unless the server opted in)."""
    span.set_attribute("voice_runtime.tool.outcome", record.outcome)
    span.set_attribute("voice_runtime.tool.latency_ms", record.latency_ms)
    span.set_attribute("voice_runtime.tool.result_chars", record.result_chars)
    span.set_attribute("voice_runtime.tool.args_digest", record.args_digest)
    if record.error:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, record.error))
    span.end()


def _log_soon(record: ToolCallRecord) -> None:
    """The call's log line, written right after the result has gone back to the
    model: in the loop's next turn, while the session waits on the network, so
    formatting and writing it (20-50 us, half of what the record path costs a call)
    are off the caller's time. Outside a loop it is written at once."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _log_call(record)
        return
    loop.call_soon(_log_call, record)


def _log_call(record: ToolCallRecord) -> None:
    """``log.info("tool call ...", extra={"tool_call": ...})``, with the caller fixed
    to this function instead of found by walking the stack on every call."""
    rec = log.makeRecord(
        log.name, _INFO, __file__, _log_call.__code__.co_firstlineno, "tool call %s/%s %s in %.1f ms",
        (record.server, record.tool, record.outcome, record.latency_ms), None, "_log_call",
        {"tool_call": record.as_dict()},
    )
    log.handle(rec)
