"""A tool call's span, made by the recorder every session uses, read back from
the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from voice_runtime.observe.tool_calls import CallRecorder


def _spans(traced_arguments: frozenset[str]) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = CallRecorder("desk", "s1", tracer=provider.get_tracer("test"),
                            transports={"crm": "streamable_http", "clock": "stdio"}, traced_arguments=traced_arguments)
    with recorder.call(server="crm", tool="lookup", exposed_name="lookup", arguments={"customer": "Ada"}) as call:
        call.text = "found"
    with recorder.call(server="clock", tool="now", exposed_name="now", arguments={"tz": "UTC"}) as call:
        call.fail("timeout", "no answer within 5s")
    return {s.attributes["mcp.server"]: s for s in exporter.get_finished_spans()}


def test_a_tool_calls_span_names_agent_server_transport_tool_outcome_latency_and_result_size() -> None:
    spans = _spans(frozenset())
    crm, clock = spans["crm"].attributes, spans["clock"].attributes
    assert spans["crm"].name == "mcp.tool_call"
    assert (crm["voice_runtime.agent"], crm["mcp.transport"], crm["mcp.tool"], crm["voice_runtime.tool.outcome"],
            crm["voice_runtime.tool.result_chars"]) == ("desk", "streamable_http", "lookup", "ok", len("found"))
    assert crm["voice_runtime.tool.latency_ms"] >= 0
    assert clock["voice_runtime.tool.outcome"] == "timeout"
    assert spans["clock"].status.description == "no answer within 5s"
    # by default neither the arguments nor the result are on the span
    assert not any("Ada" in str(v) or "found" == v for v in crm.values())


def test_a_servers_arguments_are_on_its_spans_only_when_its_spec_opts_in() -> None:
    spans = _spans(frozenset({"crm"}))
    assert spans["crm"].attributes["voice_runtime.tool.arguments"] == '{"customer":"Ada"}'
    assert "voice_runtime.tool.arguments" not in spans["clock"].attributes
