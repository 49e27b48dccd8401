"""What operators scrape and alert on: serve's live /metrics is valid Prometheus
exposition, and every metric the alerts and the Grafana dashboard use is one a
real serve exports; the alerts pass promtool's checks and their unit tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.openai_chat import FakeOpenAI
from helpers import REPO, write
from mcp_servers.harness import free_port, stdio_command
from serve_harness import Serve

PROMTOOL = shutil.which("promtool")
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "voice-runtime.json"
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")

# PromQL words that look like metric names
_PROMQL_WORDS = {"sum", "by", "rate", "count", "max", "min", "or", "and", "vector", "histogram_quantile",
                 "le", "on", "without", "avg", "increase", "humanizePercentage"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers and strings removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\bby\s*\([^)]*\)", "", expr)
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in _PROMQL_WORDS and "_" in w}


def exported_names(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a real serve after a simulated call in which the realtime model
    was unreachable (the session fell back to its pipeline) and a tool ran."""
    tmp = tmp_path_factory.mktemp("metrics")
    fake = FakeOpenAI()
    fake.start_in_thread()
    try:
        command, args = stdio_command(record=tmp / "calls.jsonl", name="tools")
        closed = free_port()
        write(tmp / "agents.d" / "desk.yaml", (
            "apiVersion: voice-runtime/v1\ninstructions: You are the desk.\n"
            f"realtime: {{provider: openai, base_url: 'http://127.0.0.1:{closed}/v1', api_key: x,"
            " max_retry: 0, retry_interval: 0.1}\n"
            f"pipeline:\n  llm: {{provider: openai, base_url: '{fake.base_url}', api_key: x}}\n  text_only: true\n"
            f"mcp_servers:\n  tools: {{command: {json.dumps(command)}, args: {json.dumps(args)}, required: true}}\n"))
        fake.use_tool_then_answer("echo", {"text": "metrics"})
        with Serve(tmp / "agents.d") as serve:
            serve.wait_ready()
            code, report = serve.post("/simulate?wait=1", b'{"agent": "desk", "turns": ["echo it"]}', timeout=120)
            assert code == 200 and report["turns"][0]["tool_calls"], report
            # the job's counters reach /metrics through the multiprocess folder
            serve.wait_for(lambda: "voice_runtime_session_fallbacks_total{" in serve.get("/metrics")[1],
                           message="the fallback counted")
            yield serve.get("/metrics")[1]
    finally:
        fake.stop_thread()


# livekit's own gauges end in _count, which promtool's naming lint flags (exit 3);
# named here so a new lint problem (ours or livekit's) still fails the test
LIVEKIT_LINT = {
    'lk_agents_active_job_count non-histogram and non-summary metrics should not have "_count" suffix',
    'lk_agents_child_process_count non-histogram and non-summary metrics should not have "_count" suffix',
}


@needs_promtool
def test_live_metrics_pass_promtool_check_metrics(live_metrics: str) -> None:
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=live_metrics, capture_output=True, text=True)
    # exit 1 is a parse error; 3 is lint problems only
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    problems = {line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()}
    assert problems <= LIVEKIT_LINT, problems - LIVEKIT_LINT
    assert "voice_runtime_tool_calls_total{" in live_metrics  # the job's tool call is in what was checked


def test_every_metric_the_alerts_and_the_dashboard_use_is_exported_by_serve(live_metrics: str) -> None:
    import yaml

    exported = exported_names(live_metrics)
    used: dict[str, set[str]] = {}
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            used[f"alert {rule['alert']}"] = promql_metrics(rule["expr"])
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        used[f"panel {panel['title']!r}"] = set().union(*(promql_metrics(t["expr"]) for t in panel["targets"]))
    assert all(used.values()), used  # the extraction found names everywhere: this test can fail
    missing = {where: sorted(names - exported) for where, names in used.items() if names - exported}
    assert missing == {}, f"not exported by serve: {missing}"


@needs_promtool
def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    check = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    test = subprocess.run([PROMTOOL, "test", "rules", str(ALERTS.with_name("alerts.test.yaml"))],
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
