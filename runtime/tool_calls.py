"""Proof of execution: one record per tool call, to the log, to Prometheus, to the
``voice_runtime_tool_called`` hook and to anyone watching the session (``chat``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plugins import Plugins

log = logging.getLogger("voice_runtime.tools")


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
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def args_digest(arguments: Any) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class CallOutcome:
    """Filled in by the code making a call inside ``CallRecorder.call``."""

    outcome: str = "ok"
    text: str = ""
    error: str | None = None

    def fail(self, outcome: str, error: str) -> None:
        self.outcome, self.error = outcome, error


@dataclass
class CallRecorder:
    """Per session: who to tell about each tool call."""

    agent: str
    session_id: str
    plugins: Plugins | None = None
    listeners: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    records: list[ToolCallRecord] = field(default_factory=list)

    @contextlib.contextmanager
    def call(self, *, server: str, tool: str, exposed_name: str, arguments: Any) -> Iterator[CallOutcome]:
        """Record one call around its body: an exception the body did not classify
        counts as an error, a cancellation (the user interrupted) as cancelled."""
        started = self.started(exposed_name, arguments, server)
        state = CallOutcome()
        try:
            yield state
        except asyncio.CancelledError:
            state.outcome = "cancelled"
            raise
        except BaseException as exc:
            if state.outcome == "ok":
                state.fail("error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.finished(server=server, tool=tool, exposed_name=exposed_name, arguments=arguments,
                          started=started, outcome=state.outcome, result=state.text, error=state.error)

    def started(self, exposed_name: str, arguments: Any, server: str) -> float:
        for listener in self.listeners:
            listener("tool_call", {"tool": exposed_name, "server": server, "arguments": arguments})
        return time.perf_counter()

    def finished(
        self, *, server: str, tool: str, exposed_name: str, arguments: Any, started: float,
        outcome: str, result: str, error: str | None = None,
    ) -> ToolCallRecord:
        record = ToolCallRecord(
            agent=self.agent, session_id=self.session_id, server=server, tool=tool, exposed_name=exposed_name,
            args_digest=args_digest(arguments), started_at=time.time(),
            latency_ms=round((time.perf_counter() - started) * 1000, 2), outcome=outcome,
            result_chars=len(result), error=error,
        )
        self.records.append(record)
        log.info(
            "tool call %s/%s %s in %.1f ms", server, tool, outcome, record.latency_ms,
            extra={"tool_call": record.as_dict()},
        )
        from .metrics import observe_tool_call

        observe_tool_call(record)
        if self.plugins is not None:  # an exporter's bug must not fail the call
            from .plugins import notify

            notify(self.plugins, "voice_runtime_tool_called", record=record)
        for listener in self.listeners:
            listener("tool_result", {"tool": exposed_name, "outcome": outcome, "result": result,
                                     "latency_ms": record.latency_ms, "server": server})
        return record
