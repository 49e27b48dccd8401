"""The one operator port of `serve`: /healthz, /readyz, /metrics, /status (and
POST /simulate when enabled). aiohttp, because livekit already depends on it."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from .serve import Supervisor

log = logging.getLogger("voice_runtime.http")


class ServeCollector:
    """voice-runtime's serve metrics, read from the supervisor at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sup = self.supervisor
        reloads = CounterMetricFamily("voice_runtime_config_reloads", "Spec reloads by result.", labels=["result"])
        for result, count in sup.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        last = sup.catalog.last
        yield GaugeMetricFamily("voice_runtime_config_last_reload_successful",
                                "1 if the last reload was accepted in full, 0 if it kept a last good version.",
                                value=1 if (last is None or last.ok) and not sup.plugin_errors else 0)
        yield GaugeMetricFamily("voice_runtime_config_last_reload_timestamp_seconds",
                                "When the last reload ran (Unix time).", value=last.timestamp if last else 0)
        yield GaugeMetricFamily("voice_runtime_config_generation", "The newest accepted spec generation.",
                                value=sup.catalog.generation)
        yield GaugeMetricFamily("voice_runtime_agents_loaded", "Agents being served.", value=len(sup.catalog.agents))
        sessions = GaugeMetricFamily("voice_runtime_sessions_active", "Jobs running, per agent.", labels=["agent"])
        up = GaugeMetricFamily("voice_runtime_mcp_server_up", "1 if the MCP server is connected.",
                               labels=["agent", "server"])
        for name, entry in sorted(sup.catalog.agents.items()):
            sessions.add_metric([name], sup.sessions_active(name))
            for server, health in sup.mcp_health(name, entry).items():
                up.add_metric([name, server], 1 if health["state"] == "up" else 0)
        yield sessions
        yield up


def metrics_text(supervisor: Supervisor) -> bytes:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        # job processes write their counters (tool calls, livekit's) to files there
        registry = CollectorRegistry()
        registry.register(_ProcessFiles(folder))
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(ServeCollector(supervisor))
    return generate_latest(registry)


class _ProcessFiles:
    """prometheus_client's multiprocess aggregation over the folder and the files
    ``serve`` sheltered in subfolders of it (see ``shelter_metric_files``)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def collect(self) -> Any:
        import glob

        from prometheus_client.multiprocess import MultiProcessCollector

        files = glob.glob(os.path.join(self.folder, "**", "*.db"), recursive=True)
        return MultiProcessCollector.merge(files, accumulate=True)


def shelter_metric_files() -> None:
    """livekit's ``AgentServer.run()`` deletes every file in PROMETHEUS_MULTIPROC_DIR
    (fine for one server per process, but serve starts one per agent, also while
    running). Moving the files into a fresh subfolder first keeps the counts of jobs
    so far; a running process keeps writing to its file, moved or not (it is mmapped)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder or not os.path.isdir(folder):
        return
    files = [f for f in os.listdir(folder) if f.endswith(".db")]
    if not files:
        return
    kept = os.path.join(folder, "kept", str(time.time_ns()))
    os.makedirs(kept, exist_ok=True)
    for name in files:
        try:
            os.replace(os.path.join(folder, name), os.path.join(kept, name))
        except OSError:
            log.warning("could not keep metrics file %s", name, exc_info=True)


class _Forward:
    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Any:
        return self.registry.collect()


def make_app(supervisor: Supervisor) -> web.Application:
    from aiohttp import web

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reasons = supervisor.not_ready()
        if reasons:
            return web.Response(status=503, text="not ready:\n" + "".join(f"- {r}\n" for r in reasons))
        return web.Response(text="ready\n")

    async def metrics(_: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = supervisor.catalog.secrets.redact(metrics_text(supervisor).decode()).encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(_: web.Request) -> web.Response:
        # one line (pipe it through jq to read it): json's C encoder only runs without
        # indent, and with 1,000 agents indenting cost 3-4 times the rest of /status
        return web.Response(text=supervisor.catalog.secrets.dumps(supervisor.status()) + "\n",
                            content_type="application/json")

    async def simulate(request: web.Request) -> web.Response:
        """Start a fake job (no LiveKit server): {"agent", "turns": [...], "gap_s", "speech"}."""
        from livekit.protocol import models

        try:
            body = await request.json()
            agent = body["agent"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'body must be JSON with "agent"'}, status=400)
        worker = supervisor.workers.get(agent)
        if worker is None or agent in supervisor.draining:
            return web.json_response({"error": f"no agent named {agent!r} is serving"}, status=404)
        room = str(body.get("room") or f"sim-{time.time_ns()}")
        script = json.dumps({"turns": list(body.get("turns", [])), "gap_s": float(body.get("gap_s", 0)),
                             "speech": body.get("speech") is True})
        await worker.server.simulate_job(room, fake_job=True,
                                         room_info=models.Room(sid=f"RM_{room}", name=room, metadata=script))
        return web.json_response({"agent": agent, "room": room, "generation": worker.generation})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    if supervisor.options.simulate:
        app.router.add_post("/simulate", simulate)
    return app


async def start_http(supervisor: Supervisor, host: str, port: int) -> Any:
    from aiohttp import web

    runner = web.AppRunner(make_app(supervisor), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
