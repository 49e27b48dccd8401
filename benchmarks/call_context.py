"""What call context and call reports cost a call.

1. Session start (the MCP part a job pays: ``connect_mcp()`` + ``build_tools()``) for
   an HTTP MCP block authenticated per call (``headers: {Authorization: "Bearer
   ${call.token}"}``: connected by each call, never from the warm pool) against the same
   block shared (``Bearer ${TOKEN}``: serve's warm connection). Sessions alternate
   between the two (the machine is shared and noisy); the ratio is per-call / shared.
2. Writing a call's report into the durable spool (two targets: two fsync'd files) at
   the end of a call, for a report of 20 turns and 10 tool calls.
3. The whole end of a call's report as a job does it (``serve/job.py:_report_out``:
   redaction, the hook, the spool), with post-call analysis off, then on; with it on,
   the analysis call alone (the real openai plugin against tests/fakes/openai_chat.py,
   which answers at once: what remains is our side and the HTTP round trip).

MCP servers are the real test recorder (tests/mcp_servers/recorder.py) on 127.0.0.1.

    python benchmarks/call_context.py                  # 30 sessions per side, 200 reports
    python benchmarks/call_context.py --sessions 3 --reports 20 --ends 20

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ (the fakes, the MCP harness) on sys.path
from _common import emit, load_spec, machine, percentile, progress, quiet_logging, spec_yaml


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values), 2), "p95_ms": round(percentile(values, 95), 2),
            "p99_ms": round(percentile(values, 99), 2)}


async def _session(loaded: Any, plugins: Any, pool: Any, values: dict[str, str]) -> float:
    from voice_runtime.session.runner import SessionRunner

    started = time.perf_counter()
    runner = SessionRunner(loaded, plugins, text_only=True, pool=pool, call_context=values)
    try:
        await runner.connect_mcp()
        tools = runner.build_tools()
        elapsed = time.perf_counter() - started
    finally:
        await runner.aclose()
    if not tools:
        raise SystemExit("the session got no tools")
    return elapsed * 1000


def _report(n_turns: int = 20, n_calls: int = 10) -> dict[str, Any]:
    from voice_runtime.observe.report_spool import new_id

    now = time.time()
    return {"id": new_id(), "type": "call.ended", "agent": "desk", "generation": 3, "call_id": "job-x",
            "room": "r", "started_at": now - 60, "ended_at": now, "duration_s": 60.0, "end_reason": "hangup",
            "error": None, "context": {"caller": "+15550001234"},
            "transcript": [{"role": "caller" if i % 2 == 0 else "agent", "text": "word " * 25, "at": now,
                            "interrupted": False} for i in range(n_turns)],
            "tool_calls": [{"server": "crm", "tool": "lookup", "outcome": "ok", "latency_ms": 12.5, "at": now}
                           for _ in range(n_calls)],
            "handoffs": [], "fallbacks": [], "fillers": [], "unbacked_claims": [],
            "latency": {"turns": [0.8] * (n_turns // 2), "p50_s": 0.8, "max_s": 0.8, "measured": ["speech"]},
            "usage": {"llm_prompt_tokens": 4000, "llm_completion_tokens": 600, "tts_characters": 1500,
                      "tts_audio_s": 90.0, "stt_audio_s": 60.0, "models": []}}


ANALYSIS = ("analysis:\n  schema: {type: object, required: [resolved], properties: {resolved: {type: boolean}, "
            "topic: {type: string}}}\n")


def _analysis_model(request: dict[str, Any]) -> Any:
    from fakes.openai_chat import echo_script, text

    system = " ".join(str(m.get("content")) for m in request.get("messages") or [] if m.get("role") == "system")
    return text('{"resolved": true, "topic": "billing"}') if "JSON Schema" in system else echo_script(request)


async def _ends(tmp: Path, fake_url: str, n: int) -> dict[str, Any]:
    """The end of a call's report (redact, analysis, hook, spool) as serve's job runs it."""
    import json as _json

    from voice_runtime.observe.report_spool import SPOOL_POINTER
    from voice_runtime.serve.job import _report_out

    state = tmp / "state"
    state.mkdir()
    (state / SPOOL_POINTER).write_text(_json.dumps({"folder": str(tmp / "end-spool"), "targets": []}))
    import os

    os.environ["BENCH_WEBHOOK_SECRET"] = "whsec_" + "A" * 32  # a spec takes a webhook secret only from ${VAR}
    reports = 'reports: [{webhook: {url: "http://127.0.0.1:9/x", secret: "${BENCH_WEBHOOK_SECRET}"}}, {file: {dir: out}}]\n'

    out: dict[str, Any] = {}
    for label, extra in (("analysis_off", reports), ("analysis_on", reports + ANALYSIS)):
        plugins, loaded = load_spec(tmp / label, spec_yaml(label, fake_url, {}).replace("mcp_servers:\n", "") + extra)
        total: list[float] = []
        analysis: list[float] = []
        for _ in range(n):
            started = time.perf_counter()
            report = await _report_out(state, loaded, plugins, {}, _report())
            total.append((time.perf_counter() - started) * 1000)
            if report["analysis"] is not None:
                if "error" in report["analysis"]:
                    raise SystemExit(f"the analysis failed: {report['analysis']['error']}")
                analysis.append(report["analysis"]["duration_s"] * 1000)
        out[f"report_end_{label}"] = _stats(total)
        if analysis:
            out["analysis_call"] = _stats(analysis)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import os

    from fakes.openai_chat import FakeOpenAI
    from mcp_servers.harness import start_http_server

    from voice_runtime.mcp.pool import McpPool
    from voice_runtime.observe.report_spool import Spool
    from voice_runtime.session.providers import import_livekit_plugins

    import_livekit_plugins()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="call_context-")))
        web = stack.enter_context(start_http_server(name="crm"))
        fake = FakeOpenAI(_analysis_model)
        fake_url = await fake.start()
        try:
            os.environ["BENCH_CRM_TOKEN"] = "shared-token-0001"
            shared_spec = spec_yaml("shared", fake_url, {"crm": {"url": web.url,
                                    "headers": {"Authorization": "Bearer ${BENCH_CRM_TOKEN}"}}})
            per_call_spec = spec_yaml("percall", fake_url, {"crm": {"url": web.url,
                                      "headers": {"Authorization": "Bearer ${call.token}"}}}) \
                + "context:\n  token: {from: 'dispatch:token', required: true, secret: true}\n"
            plugins, shared = load_spec(tmp / "a", shared_spec)
            _, per_call = load_spec(tmp / "b", per_call_spec)
            pool = McpPool()
            await pool.warm([shared])  # what serve does when it accepts the spec
            for _ in range(args.warmup):
                await _session(shared, plugins, pool, {})
                await _session(per_call, plugins, pool, {"token": "tok-warm"})
            shared_ms: list[float] = []
            per_call_ms: list[float] = []
            for i in range(args.sessions):
                shared_ms.append(await _session(shared, plugins, pool, {}))
                per_call_ms.append(await _session(per_call, plugins, pool, {"token": f"tok-{i:04d}"}))
                if (i + 1) % 10 == 0:
                    progress(f"{i + 1}/{args.sessions} sessions per side")
            await pool.aclose()
            progress("report ends: analysis off, then on")
            ends = await _ends(tmp, fake_url, args.ends)
        finally:
            await fake.stop()
        spool = Spool(tmp / "spool")
        targets = [{"webhook": {"url": "http://127.0.0.1:9/x", "secret": "whsec_" + "A" * 32}},
                   {"file": {"dir": str(tmp / "out")}}]
        write_ms: list[float] = []
        for _ in range(args.reports):
            report = _report()
            started = time.perf_counter()
            spool.add(report, targets)
            write_ms.append((time.perf_counter() - started) * 1000)
    shared_s, per_call_s = _stats(shared_ms), _stats(per_call_ms)
    return {
        "benchmark": "call_context",
        "machine": machine(),
        "sessions_per_side": args.sessions,
        "session_start_shared_block": shared_s,
        "session_start_per_call_block": per_call_s,
        "per_call_over_shared_p50": round(per_call_s["p50_ms"] / shared_s["p50_ms"], 2),
        "report_spool_write_two_targets": _stats(write_ms),
        "reports_written": args.reports,
        **ends,
        "report_ends": args.ends,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--ends", type=int, default=100, help="call ends per side (analysis off / on)")
    args = parser.parse_args()
    quiet_logging()
    emit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
