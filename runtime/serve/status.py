"""What /status, /readyz and /metrics show: read from the catalog, the agents and
the MCP pool at request time, never kept up to date on the side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Catalog, Entry
    from ..mcp.pool import McpPool
    from .agents import Agents
    from .metric_files import MetricFiles
    from .options import ServeOptions


class StatusView:
    """The serve process as operators see it. ``reloads`` (counts by result) and
    ``plugin_errors`` are written by the supervisor, where reloads are handled."""

    def __init__(self, options: ServeOptions, catalog: Catalog, agents: Agents, pool: McpPool | None,
                 metric_files: MetricFiles | None = None) -> None:
        self.options = options
        # the job processes' metrics; None: no multiprocess folder, this process's registry
        self.metric_files = metric_files
        self.catalog = catalog
        self.agents = agents
        self.pool = pool
        self.reloads: dict[str, int] = {"success": 0, "failure": 0}
        self.stopping = False  # set on the first stop signal: /readyz says so, so traffic moves away
        self.watching = False  # set once the specs folder is watched: ready means edits are seen
        # plugin files that do not load (start) or the newest plugin change that was refused
        self.plugin_errors: list[str] = []
        self.gateway: Any = None  # the MCP gateway (process executor): its refusals are counted
        self.documents: Any = None  # the operator port's coalesced builds (coalesce.Coalescer): counted
        self.spool: Any = None  # the call report spool (observe/report_spool.Spool): its backlog is shown
        # name -> (LoadedSpec, describe(), server -> pool key), made once per accepted version
        self._described: dict[str, tuple[Any, dict[str, Any], dict[str, str]]] = {}

    def not_ready(self) -> list[str]:
        reasons = []
        if self.catalog.last is None:  # the first reload runs off the loop: /readyz answers meanwhile
            reasons.append("the specs are still being loaded")
        elif not self.watching:  # an edit made now would wait for the periodic scan
            reasons.append("the watcher of the specs folder is starting")
        elif not self.catalog.agents:
            reasons.append("no agent is loaded")
        agents = self.agents
        if self.stopping:
            reasons.append("stopping: draining the calls in progress")
        idle_mb = agents.idle_killed_recently()
        if idle_mb is not None:
            reasons.append(f"prewarmed job processes are killed by --job-memory-limit-mb "
                           f"{self.options.job_memory_limit_mb:g} before any call (one used {idle_mb:.0f} MB)")
        if agents.hub_error or (not agents.hub_ready and not agents.registers_names):
            why = agents.hub_error or (f"connecting to LiveKit at {self.options.ws_url}"
                                       if not self.options.unregistered else "starting")
            reasons.append(f"the job pool is not ready ({why})")
        for name, entry in self.catalog.agents.items():
            worker = agents.workers.get(name)
            if agents.registers_names and (worker is None or not worker.registered):
                why = (worker.error if worker is not None else None) or f"connecting to LiveKit at {self.options.ws_url}"
                reasons.append(f"agent {name} is not registered ({why})")
            for server, health in self.mcp_health(name, entry).items():
                if entry.loaded.spec.mcp_servers[server].required and health["state"] != "up":
                    reasons.append(f"agent {name}: required MCP server {server} is {health['state']}"
                                   f" ({health['error'] or 'connecting'})")
        return reasons

    def _described_view(self, name: str, entry: Entry) -> tuple[dict[str, Any], dict[str, str]]:
        """describe() and the pool keys of an agent's servers, computed once per
        accepted version: /status and /metrics ask for them on every scrape."""
        cached = self._described.get(name)
        if cached is None or cached[0] is not entry.loaded:
            from ..mcp.pool import server_key
            from ..spec.describe import describe

            keys = {server: server_key(entry.loaded, server) for server in entry.loaded.spec.mcp_servers}
            cached = self._described[name] = (entry.loaded, describe(entry.loaded), keys)
        return cached[1], cached[2]

    def mcp_health(self, name: str, entry: Entry) -> dict[str, dict[str, Any]]:
        _, keys = self._described_view(name, entry)
        idle = {"state": "idle", "error": None, "tools": []}
        health = {}
        for server, key in keys.items():
            conn = self.pool.connection(key) if self.pool is not None else None
            health[server] = conn.health().as_dict() if conn is not None else dict(idle)
        return health

    def status(self, only: set[str] | None = None) -> dict[str, Any]:
        agents = []
        sessions = self.agents.sessions_by_agent()
        current = self.sessions_current()
        entries = self.catalog.agents.items() if only is None else (
            (name, self.catalog.agents[name]) for name in only if name in self.catalog.agents)
        for name, entry in sorted(entries):
            d, _ = self._described_view(name, entry)
            health = self.mcp_health(name, entry)
            worker = self.agents.workers.get(name)
            # from the first stop signal on, before the drain reaches the agent: it takes no new call
            draining = self.stopping or name in self.agents.draining
            ready = bool(worker and self.agents.is_ready(worker)) and not draining
            agents.append({
                "name": name, "file": d["file"], "generation": entry.generation, "digest": entry.loaded.digest,
                "accepted_at": entry.accepted_at, "mode": d["mode"], "providers": d["providers"],
                "mcp_servers": {s: {**info, **health[s]} for s, info in d["mcp_servers"].items()},
                "tools": d["tools"], "handoffs": d["handoffs"],
                "registered": bool(worker and self.agents.is_registered(worker)),
                "ready": ready, "state": "draining" if draining else "ready" if ready else "not ready",
                "error": worker.error if worker else None, "draining": draining,
                "sessions_active": sessions[name],
                # calls talking as this agent now, wherever they started (handoffs)
                "sessions_current": current.get(name, 0),
            })
        if only is None:
            for gone in set(self._described) - set(self.catalog.agents):
                del self._described[gone]
        last = self.catalog.last
        not_ready = self.not_ready()
        return {
            "agents": agents,
            "generation": self.catalog.generation,
            "last_reload": last.as_dict() if last else None,
            "last_successful_reload_at": self.catalog.last_success_at,
            "plugin_errors": self.plugin_errors,
            "jobs": {"running": sum(sessions.values()), "idle_pids": self.agents.idle_pids(),
                     "dispatch": self.options.dispatch.value,
                     "refused": dict(self.agents.refused), "killed_for_memory": sum(self.agents.memory_kills.values())},
            "tool_calls": self.recent_tool_calls(),
            # call reports waiting for delivery or dead-lettered (the spool: serve --report-spool)
            "reports": self.spool.backlog() if self.spool is not None else None,
            "pending_questions": self.pending_questions(),
            "ready": not not_ready,
            "not_ready": not_ready,
            "pid": os.getpid(),
        }

    def recent_tool_calls(self) -> list[dict[str, Any]]:
        """The last calls of every job, newest first (see call_journal)."""
        from ..observe.call_journal import recent

        return recent(self.catalog.state_dir / "tool_calls")

    def pending_questions(self) -> list[dict[str, Any]]:
        """Server questions (MCP elicitation) waiting for a caller now (see pending_questions)."""
        from ..observe.pending_questions import pending

        return pending(self.catalog.state_dir / "tool_calls")

    def sessions_current(self) -> dict[str, int]:
        """Sessions per agent they talk as now, from the job processes' gauge."""
        out: dict[str, int] = {}
        for family in self._job_metrics().collect():
            if family.name == "voice_runtime_sessions_current":
                for sample in family.samples:
                    out[sample.labels["agent"]] = out.get(sample.labels["agent"], 0) + int(sample.value)
        return out

    def metrics_text(self) -> bytes:
        """The Prometheus exposition: job processes' counters (tool calls, livekit's)
        and serve's own gauges."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(self._job_metrics())
        registry.register(ServeCollector(self))
        return generate_latest(registry)

    def _job_metrics(self) -> Any:
        from prometheus_client import REGISTRY

        return self.metric_files if self.metric_files is not None else _Forward(REGISTRY)


class ServeCollector:
    """voice-runtime's serve metrics, read from the status view at scrape time."""

    def __init__(self, view: StatusView) -> None:
        self.view = view

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        view, catalog = self.view, self.view.catalog
        reloads = CounterMetricFamily("voice_runtime_config_reloads", "Spec reloads by result.", labels=["result"])
        for result, count in view.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        last = catalog.last
        yield GaugeMetricFamily("voice_runtime_config_last_reload_successful",
                                "1 if the last reload was accepted in full, 0 if it kept a last good version.",
                                value=1 if (last is None or last.ok) and not view.plugin_errors else 0)
        yield GaugeMetricFamily("voice_runtime_config_last_reload_timestamp_seconds",
                                "When the last reload ran (Unix time).", value=last.timestamp if last else 0)
        yield GaugeMetricFamily("voice_runtime_config_generation", "The newest accepted spec generation.",
                                value=catalog.generation)
        yield GaugeMetricFamily("voice_runtime_agents_loaded", "Agents being served.", value=len(catalog.agents))
        sessions = GaugeMetricFamily("voice_runtime_sessions_active", "Jobs running, per agent.", labels=["agent"])
        up = GaugeMetricFamily("voice_runtime_mcp_server_up", "1 if the MCP server is connected.",
                               labels=["agent", "server"])
        required = GaugeMetricFamily("voice_runtime_mcp_server_required",
                                     "1 if the spec marks the MCP server required: true (sessions refuse without it).",
                                     labels=["agent", "server"])
        running = view.agents.sessions_by_agent()
        for name, entry in sorted(catalog.agents.items()):
            sessions.add_metric([name], running[name])
            servers = entry.loaded.spec.mcp_servers
            for server, health in view.mcp_health(name, entry).items():
                up.add_metric([name, server], 1 if health["state"] == "up" else 0)
                required.add_metric([name, server], 1 if servers[server].required else 0)
        yield sessions
        yield GaugeMetricFamily("voice_runtime_load", "The load serve reports to LiveKit (0-1): CPU use, or calls "
                                "/ --full-load-calls when that is larger; LiveKit sends no new call above "
                                "voice_runtime_load_threshold. What an autoscaler scales on.", value=view.agents.load())
        yield GaugeMetricFamily("voice_runtime_load_threshold", "--load-threshold.",
                                value=view.options.load_threshold)
        yield up
        yield required
        refused = CounterMetricFamily("voice_runtime_jobs_refused", "Jobs LiveKit offered that serve refused, by reason "
                                      "(no_agent, unknown_agent, draining, not_allowed).", labels=["reason"])
        for reason, count in sorted(view.agents.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        gateway = CounterMetricFamily(
            "voice_runtime_gateway_refused", "Requests of job processes that serve's MCP gateway refused, by the "
            "agent the job was routed to and reason (unbound: the process runs no job serve routed; block: a server "
            "block not the agent's; tool: a tool its model is not shown).", labels=["agent", "reason"])
        for (agent, reason), count in sorted(view.gateway.refused.items() if view.gateway is not None else []):
            gateway.add_metric([agent, reason], count)
        yield gateway
        killed = CounterMetricFamily("voice_runtime_jobs_memory_killed", "Calls ended because their job process "
                                     "went over --job-memory-limit-mb.", labels=["agent"])
        for agent, count in sorted(view.agents.memory_kills.items()):
            killed.add_metric([agent], count)
        yield killed
        yield from _documents(view.documents)
        yield from _memory()


def _documents(documents: Any) -> Any:
    """How many requests of /status, the page and /metrics each build served: under a
    flood, far fewer builds than requests (coalesce.py)."""
    from prometheus_client.core import CounterMetricFamily

    requests = CounterMetricFamily("voice_runtime_http_document_requests", "Requests of an operator-port document "
                                   "(status, page, metrics).", labels=["document"])
    builds = CounterMetricFamily("voice_runtime_http_document_builds", "Builds of an operator-port document: "
                                 "requests that arrive together share one.", labels=["document"])
    for document in ("status", "page", "metrics"):
        requests.add_metric([document], documents.requests.get(document, 0) if documents is not None else 0)
        builds.add_metric([document], documents.builds.get(document, 0) if documents is not None else 0)
    yield requests
    yield builds


def _memory() -> Any:
    """What the alert on memory compares: the memory serve's cgroup (the container)
    uses as the kernel counts it against the limit, and that limit (0: none)."""
    from prometheus_client.core import GaugeMetricFamily

    yield GaugeMetricFamily("voice_runtime_memory_bytes",
                            "Memory in use by serve, its job processes and MCP servers: the container's "
                            "working set (cgroup usage less inactive file cache), or their summed RSS outside one.",
                            value=_cgroup_working_set() or _summed_rss())
    # always exported (0: no limit), so dashboards and the test of what they use see it
    yield GaugeMetricFamily("voice_runtime_memory_limit_bytes",
                            "The memory limit of serve's cgroup (the container's limit); 0 when there is none.",
                            value=_cgroup_memory_limit() or 0)


_CGROUP = Path("/sys/fs/cgroup")


def _cgroup_working_set() -> int | None:
    """What kubelet calls the working set (cgroup v2): the kernel's own count, which
    the limit applies to; RSS summed over processes counts forked pages twice."""
    try:
        usage = int((_CGROUP / "memory.current").read_text())
        stat = dict(line.split() for line in (_CGROUP / "memory.stat").read_text().splitlines())
    except (OSError, ValueError):
        return None
    return max(usage - int(stat.get("inactive_file", 0)), 0)


def _summed_rss() -> int:
    import psutil

    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.Error, OSError):
            continue  # ended meanwhile
    return total


def _cgroup_memory_limit() -> int | None:
    for path in (_CGROUP / "memory.max", _CGROUP / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # cgroup v1 says "no limit" with a huge number
            return int(text)
        return None
    return None


class _Forward:
    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Any:
        return self.registry.collect()
