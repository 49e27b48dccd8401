"""What operators scrape, alert on and trace, from one real serve: its live
/metrics is valid Prometheus exposition and holds every metric the alerts and
the Grafana dashboard use; the alerts pass promtool's checks and their unit
tests; with the standard OTLP variables set, a simulated call's trace arrives at
a collector (tests/fakes/otlp.py decodes the protobuf the SDK's exporter sends),
rooted at the session, with livekit's spans and the real tool call inside it,
and no secret anywhere."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fakes.openai_chat import FakeOpenAI
from fakes.otlp import FakeOtlp
from helpers import REPO, require_tool, write
from mcp_servers.harness import free_port, read_records, stdio_command
from serve_harness import Serve

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "voice-runtime.json"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool", "apt-get install prometheus"), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)

# PromQL words that look like metric names
_PROMQL_WORDS = {"sum", "by", "rate", "count", "max", "min", "or", "and", "vector", "histogram_quantile",
                 "le", "on", "without", "avg", "increase", "humanizePercentage", "delta", "min_over_time"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers and strings removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\bby\s*\([^)]*\)", "", expr)
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in _PROMQL_WORDS and "_" in w}


def exported_names(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


SECRET = "desk-code-5b1e77a0c3"


@dataclass(frozen=True)
class Observed:
    metrics: str  # /metrics after the call
    otlp: FakeOtlp  # the spans the collector received
    log: str  # serve's JSON log


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """A real serve exporting traces to a collector, after a simulated call in which
    the realtime model was unreachable (the session fell back to its pipeline) and
    a tool ran on a real MCP server. The spec's instructions hold a ${VAR} secret."""
    tmp = tmp_path_factory.mktemp("observed")
    fake = FakeOpenAI()
    fake.start_in_thread()
    try:
        record = tmp / "calls.jsonl"
        command, args = stdio_command(record=record, name="tools")
        closed = free_port()
        write(tmp / "agents.d" / "desk.yaml", (
            "apiVersion: voice-runtime/v1\ninstructions: You are the desk. The door code is ${DESK_CODE}.\n"
            f"realtime: {{provider: openai, base_url: 'http://127.0.0.1:{closed}/v1', api_key: x,"
            " max_retry: 0, retry_interval: 0.1}\n"
            f"pipeline:\n  llm: {{provider: openai, base_url: '{fake.base_url}', api_key: x}}\n  text_only: true\n"
            f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}, required: true}}\n"))
        fake.use_tool_then_answer("echo", {"text": "traced"})
        with FakeOtlp() as otlp:
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_SERVICE_NAME": "frontdesk",
                   "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test", "OTEL_BSP_SCHEDULE_DELAY": "200",
                   "DESK_CODE": SECRET}
            with Serve(tmp / "agents.d", "--log-format", "json", env=env) as serve:
                serve.wait_ready()
                code, report = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["echo it"]}',
                                          timeout=120)
                assert code == 200 and report["turns"][0]["tool_calls"], report
                assert [r["tool"] for r in read_records(record)] == ["echo"]  # the call really ran
                # the job's counters reach /metrics through the multiprocess folder
                serve.wait_for(lambda: "voice_runtime_session_fallbacks_total{" in serve.get("/metrics")[1],
                               message="the fallback counted")
                serve.wait_for(lambda: otlp.named("session") and otlp.named("config.reload"),
                               message="spans exported")
                yield Observed(serve.get("/metrics")[1], otlp, serve.output())
    finally:
        fake.stop_thread()


# livekit's own gauges end in _count, which promtool's naming lint flags (exit 3);
# named here so a new lint problem (ours or livekit's) still fails the test
LIVEKIT_LINT = {
    'lk_agents_active_job_count non-histogram and non-summary metrics should not have "_count" suffix',
    'lk_agents_child_process_count non-histogram and non-summary metrics should not have "_count" suffix',
}


def test_live_metrics_pass_promtool_check_metrics(observed: Observed) -> None:
    live_metrics = observed.metrics
    proc = promtool("check", "metrics", stdin=live_metrics)
    # exit 1 is a parse error; 3 is lint problems only
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    problems = {line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()}
    assert problems <= LIVEKIT_LINT, problems - LIVEKIT_LINT
    assert "voice_runtime_tool_calls_total{" in live_metrics  # the job's tool call is in what was checked


def test_every_metric_the_alerts_and_the_dashboard_use_is_exported_by_serve(observed: Observed) -> None:
    import yaml

    exported = exported_names(observed.metrics)
    used: dict[str, set[str]] = {}
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            used[f"alert {rule['alert']}"] = promql_metrics(rule["expr"])
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        used[f"panel {panel['title']!r}"] = set().union(*(promql_metrics(t["expr"]) for t in panel["targets"]))
    assert all(used.values()), used  # the extraction found names everywhere: this test can fail
    missing = {where: sorted(names - exported) for where, names in used.items() if names - exported}
    assert missing == {}, f"not exported by serve: {missing}"


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    check = promtool("check", "rules", str(ALERTS))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout
    test = promtool("test", "rules", str(ALERTS.with_name("alerts.test.yaml")))
    assert test.returncode == 0, test.stdout + test.stderr


def test_a_simulated_calls_trace_reaches_the_collector_rooted_at_the_session_with_the_tool_call_and_no_secret(
    observed: Observed,
) -> None:
    [session] = observed.otlp.named("session")
    assert session.parent_span_id == ""  # the root of the call's trace
    assert session.attributes["voice_runtime.agent"] == "desk"
    assert session.attributes["voice_runtime.session.outcome"] == "started"
    assert session.resource["service.name"] == "frontdesk"  # OTEL_SERVICE_NAME
    assert session.resource["deployment.environment"] == "test"  # OTEL_RESOURCE_ATTRIBUTES
    trace = [s for s in observed.otlp.spans if s.trace_id == session.trace_id]
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
    reload = observed.otlp.named("config.reload")[0]
    assert reload.attributes["voice_runtime.reload.outcome"] == "applied"
    assert observed.otlp.paths and set(observed.otlp.paths) == {"/v1/traces"}
    # no secret in any attribute, event or resource of any span
    assert SECRET not in repr(observed.otlp.spans)
    assert SECRET not in observed.log
    # the JSON log line of the tool call carries the trace it belongs to
    [line] = [json.loads(x) for x in observed.log.splitlines()
              if x.startswith("{") and '"tool call tools/echo ok' in x]
    assert line["trace_id"] == session.trace_id and line["span_id"] in span_ids


def test_the_sessions_fallback_from_realtime_to_pipeline_is_an_event_on_its_span(observed: Observed) -> None:
    [session] = observed.otlp.named("session")
    [(name, attributes)] = [e for e in session.events if e[0] == "fallback"]
    assert (attributes["from_mode"], attributes["to_mode"]) == ("realtime", "pipeline")
    assert attributes["reason"], attributes  # what failed, for the operator
