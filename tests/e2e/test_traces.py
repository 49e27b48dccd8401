"""OpenTelemetry traces from a real serve: set the standard OTLP variables and a
simulated call's trace arrives at a collector (tests/fakes/otlp.py decodes the
protobuf the SDK's exporter sends), rooted at the session, with livekit's spans
and the real tool call inside it, and no secret anywhere."""

from __future__ import annotations

import json
from pathlib import Path

from fakes.openai_chat import FakeOpenAI
from fakes.otlp import FakeOtlp
from helpers import write
from mcp_servers.harness import read_records, stdio_command
from serve_harness import Serve, spec

SECRET = "desk-code-5b1e77a0c3"


def test_a_simulated_calls_trace_reaches_the_collector_rooted_at_the_session_with_the_tool_call_and_no_secret(
    tmp_path: Path, agents: Path, fake_openai: FakeOpenAI
) -> None:
    record = tmp_path / "calls.jsonl"
    command, args = stdio_command(record=record, name="tools")
    write(agents / "desk.yaml", spec("You are the desk. The door code is ${DESK_CODE}.", fake_openai.base_url, extra=(
        f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}}}\n")))
    fake_openai.use_tool_then_answer("echo", {"text": "traced"})
    with FakeOtlp() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_SERVICE_NAME": "frontdesk",
               "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test", "OTEL_BSP_SCHEDULE_DELAY": "200",
               "DESK_CODE": SECRET}
        with Serve(agents, "--log-format", "json", env=env) as serve:
            serve.wait_ready()
            code, report = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["echo it"]}', timeout=120)
            assert code == 200 and report["ok"], report
            assert [r["tool"] for r in read_records(record)] == ["echo"]  # the call really ran
            serve.wait_for(lambda: otlp.named("session") and otlp.named("config.reload"), message="spans exported")
            log = serve.output()

    [session] = otlp.named("session")
    assert session.parent_span_id == ""  # the root of the call's trace
    assert session.attributes["voice_runtime.agent"] == "desk"
    assert session.attributes["voice_runtime.session.outcome"] == "started"
    assert session.resource["service.name"] == "frontdesk"  # OTEL_SERVICE_NAME
    assert session.resource["deployment.environment"] == "test"  # OTEL_RESOURCE_ATTRIBUTES
    trace = [s for s in otlp.spans if s.trace_id == session.trace_id]
    # the tool call, inside the session's trace, with what an operator needs and never the arguments
    [call] = [s for s in trace if s.name == "mcp.tool_call"]
    a = call.attributes
    assert (a["voice_runtime.agent"], a["mcp.server"], a["mcp.transport"], a["mcp.tool"],
            a["voice_runtime.tool.outcome"]) == ("desk", "tools", "stdio", "echo", "ok")
    assert a["voice_runtime.tool.latency_ms"] > 0 and a["voice_runtime.tool.result_chars"] == len("traced")
    assert not any("traced" in str(v) for v in a.values())
    # livekit's own spans (through livekit.agents.telemetry.set_tracer_provider) are in the same trace
    livekit = [s for s in trace if s.scope != "voice_runtime"]
    assert livekit, sorted({s.name for s in trace})
    span_ids = {s.span_id for s in trace}
    assert all(s.parent_span_id in span_ids for s in trace if s is not session)  # one tree
    # serve's spans: the reload that accepted the spec
    reload = otlp.named("config.reload")[0]
    assert reload.attributes["voice_runtime.reload.outcome"] == "applied"
    assert otlp.paths and set(otlp.paths) == {"/v1/traces"}
    # no secret in any attribute, event or resource of any span
    assert SECRET not in repr(otlp.spans)
    assert SECRET not in log
    # the JSON log line of the tool call carries the trace it belongs to
    [line] = [json.loads(x) for x in log.splitlines()
              if x.startswith("{") and '"tool call tools/echo ok' in x]
    assert line["trace_id"] == session.trace_id and line["span_id"] in span_ids
