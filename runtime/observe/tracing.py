"""OpenTelemetry traces over OTLP/HTTP, on when the standard variables ask for them.

``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` turns
tracing on (``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` off); the
SDK reads the rest of the standard variables itself: service name and resource
attributes, the sampler, headers, timeout, compression. Each process that runs
sessions (a job process) or reloads specs (serve) sets up its own provider, and
livekit's spans go to the same one (``livekit.agents.telemetry.set_tracer_provider``).

Our spans: ``session`` (the root of a call's trace), ``mcp.tool_call`` (and
``plugin.tool_call``), ``mcp.connect``, ``config.reload``; a session's switch from
realtime to pipeline is a ``fallback`` event on its span. No attribute carries a
secret: every string of every span leaves through ``SecretSet.redact``, and tool
arguments are never recorded (their digest is).

When tracing is off nothing here imports OpenTelemetry, and ``span`` costs a
function call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..spec.secrets import SecretSet, environment_credentials
from .tool_calls import RPC_RESERVED, rpc_error

if TYPE_CHECKING:
    from ..spec.loader import LoadedSpec

log = logging.getLogger("voice_runtime.tracing")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SERVICE_NAME = "voice-runtime"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one
FLUSH_TIMEOUT_MS = 5000

_lock = threading.Lock()
_state: dict[str, Any] = {"provider": None, "tracer": None, "secrets": SecretSet()}


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(env.get(var, "").strip() for var in ENDPOINT_VARS)


def setup(secrets: SecretSet | None = None) -> bool:
    """Start exporting this process's spans if the environment asks for it (once
    per process; later calls only add ``secrets``). True when tracing is on."""
    with _lock:
        if secrets is not None:
            _state["secrets"] = secrets
        if _state["tracer"] is not None:
            return True
        if not wanted():
            return False
        try:
            _start()
        except Exception as exc:  # noqa: BLE001 - a bad OTEL_* value must not stop serve or a call
            log.error("OpenTelemetry tracing is off: %s: %s", type(exc).__name__, exc)
            return False
        return True


def _start() -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .. import __version__

    resource = Resource.create({"service.version": __version__})  # + OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER(_ARG)
    _state["secrets"].add(environment_credentials())
    provider.add_span_processor(BatchSpanProcessor(_RedactingExporter(OTLPSpanExporter(), lambda: _state["secrets"])))
    trace.set_tracer_provider(provider)
    _state["provider"], _state["tracer"] = provider, provider.get_tracer("voice_runtime", __version__)
    _log_trace_ids()
    import sys

    if "livekit.agents" in sys.modules:  # a process that runs sessions: livekit's spans too
        from livekit.agents.telemetry import set_tracer_provider

        # conversation content stays out of livekit's spans unless livekit's own
        # LIVEKIT_TELEMETRY_ALLOW_PII says otherwise
        allow = None if "LIVEKIT_TELEMETRY_ALLOW_PII" in os.environ else False
        set_tracer_provider(provider, allow_pii=allow)


def add_secrets(loaded: LoadedSpec) -> None:
    """A spec this process runs: its ``${VAR}`` values never leave in a span."""
    if _state["tracer"] is not None:
        _state["secrets"].add_specs([loaded])


def add_secret_values(values: Mapping[str, str]) -> None:
    """A call's secret context values (value -> shown text) never leave in a span."""
    if _state["tracer"] is not None and values:
        _state["secrets"].add(values)


def tracer() -> Any:
    """The tracer, or None when tracing is off."""
    return _state["tracer"]


class _NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        pass

    def end(self) -> None:
        pass


NO_SPAN = _NoSpan()


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
    """A span around a block (the current span's child); the exception that ends
    the block, if any, is recorded on it."""
    t = _state["tracer"]
    if t is None:
        yield NO_SPAN
        return
    with t.start_as_current_span(name, attributes=dict(attributes)) as s:
        yield s


def start_root(name: str, attributes: Mapping[str, Any]) -> Any:
    """A span starting a new trace, made the current span of the calling task
    (and of the tasks it creates from then on); end it with ``end``."""
    t = _state["tracer"]
    if t is None:
        return NO_SPAN
    from opentelemetry import context, trace

    root = t.start_span(name, context=context.Context(), attributes=dict(attributes))
    context.attach(trace.set_span_in_context(root))  # never detached: the task ends with the session
    return root


def record_span(name: str, attributes: Mapping[str, Any], start_ns: int, *, error: str | None = None) -> None:
    """A span for something that already happened (from ``start_ns`` until now)."""
    t = _state["tracer"]
    if t is None:
        return
    from opentelemetry.trace import Status, StatusCode

    s = t.start_span(name, attributes=dict(attributes), start_time=start_ns)
    if error:
        s.set_status(Status(StatusCode.ERROR, error))
    s.end()


async def flush() -> None:
    """Send what is buffered (a job process may be gone soon after its session)."""
    provider = _state["provider"]
    if provider is not None:
        import asyncio

        await asyncio.to_thread(provider.force_flush, FLUSH_TIMEOUT_MS)


def _log_trace_ids() -> None:
    """``trace_id`` and ``span_id`` on every log record made inside a span: the
    JSON log format prints them (a job's records reach serve's formatter pickled,
    attributes and all)."""
    from opentelemetry import trace

    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return record

    logging.setLogRecordFactory(factory)


class _RedactingExporter:
    """The OTLP exporter, given copies of the spans whose strings are redacted."""

    def __init__(self, inner: Any, secrets: Any) -> None:
        self.inner = inner
        self.secrets = secrets  # a callable: the set may be replaced after start

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace import Event, ReadableSpan

        secrets: SecretSet = self.secrets()
        if not secrets and not any(_is_mcp_sdk(s) and s.status.description for s in spans):
            return self.inner.export(spans)

        def clean(attributes: Any) -> dict[str, Any]:
            return {key: _redact_value(secrets, value) for key, value in (attributes or {}).items()}

        def sdk_clean(attributes: Any) -> dict[str, Any]:
            out = clean(attributes)
            for key in _SDK_CODES:  # the server's JSON-RPC code: said only if JSON-RPC reserves it
                if key in out:
                    out[key] = _rpc_code(out[key])
            return out

        copies = [
            ReadableSpan(
                name=secrets.redact(s.name), context=s.context, parent=s.parent, resource=s.resource,
                attributes=sdk_clean(s.attributes) if _is_mcp_sdk(s) else clean(s.attributes),
                events=[Event(e.name, clean(e.attributes), e.timestamp) for e in s.events],
                links=s.links, kind=s.kind, status=_status(secrets, s), start_time=s.start_time,
                end_time=s.end_time, instrumentation_scope=s.instrumentation_scope,
            )
            for s in spans
        ]
        return self.inner.export(copies)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def _redact_value(secrets: SecretSet, value: Any) -> Any:
    if isinstance(value, str):
        return secrets.redact(value)
    if isinstance(value, (list, tuple)):
        return tuple(_redact_value(secrets, v) for v in value)
    return value


# the mcp SDK's own client spans (``MCP send tools/call <tool>``) carry a server's
# JSON-RPC error message as their status, and that message may quote the call's
# arguments: its code (the span's ``error.type``) is said instead, as the
# ``mcp.tool_call`` span and the call's record say it
_MCP_SDK_SCOPE = "mcp-python-sdk"
_SDK_CODES = ("error.type", "rpc.response.status_code")  # its attributes holding the code


def _rpc_code(value: Any) -> Any:
    """The SDK's ``error.type`` (a JSON-RPC code, as text or a number) if JSON-RPC
    reserves it, else ``"server-defined"``."""
    try:
        code = int(value)
    except (TypeError, ValueError):
        return "server-defined"
    return value if code in RPC_RESERVED else "server-defined"


def _is_mcp_sdk(span: Any) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name == _MCP_SDK_SCOPE


def _status(secrets: SecretSet, span: Any) -> Any:
    status = span.status
    if not status.description:
        return status
    from opentelemetry.trace import Status

    if _is_mcp_sdk(span):
        code = (span.attributes or {}).get("error.type")
        if code is None:
            return Status(status.status_code, "error")
        said = _rpc_code(code)
        return Status(status.status_code, rpc_error(None if said == "server-defined" else int(said)))
    return Status(status.status_code, secrets.redact(status.description))
