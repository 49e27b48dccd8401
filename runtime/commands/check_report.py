"""What `voice-runtime check` reports: a folder loaded, its MCP servers probed, the
report as text or JSON (the command itself is ``commands.check``)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..spec.errors import SpecError
from ..spec.loader import LoadedSpec, load_folder
from ..spec.describe import describe
from ..core.terminal import printable, table
from ..plugins.registry import missing_api_keys

if TYPE_CHECKING:
    from ..mcp.toolset import Withheld
    from ..spec.telephony import Lines
    from ..plugins.manager import Plugins


@dataclass


class ServerProbe:
    """What connecting to one MCP server of one agent found."""

    agent: str
    server: str
    transport: str
    required: bool
    reachable: bool
    error: str | None
    handshake_ms: float | None
    protocol_version: str | None
    tools: list[str]  # as the model will see them, after the allow-list and prefixes
    capabilities: list[str] = field(default_factory=list)  # what the server declares (tools, prompts, tasks...)
    allows: list[str] = field(default_factory=list)  # what the spec lets it ask (elicitation, sampling, roots)
    auth: dict[str, Any] | None = None  # OAuth: grant and token expiry (mcp.oauth.TokenState), never a token

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass


class CheckReport:
    folder: Path
    specs: list[LoadedSpec] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)
    servers: list[ServerProbe] | None = None  # None: not probed (--offline, or invalid specs)
    # (agent, tool withheld from its model): what a session would withhold, and why
    withheld: list[tuple[str, Withheld]] = field(default_factory=list)
    # (agent, sentence): reported, but the specs are valid (tools withheld, keys missing)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    lines: Lines | None = None  # the telephony folder's trunks and dispatch rules, when it has any

    @property
    def ok(self) -> bool:
        return not self.errors and not self.unreachable_required

    @property
    def unreachable_required(self) -> list[ServerProbe]:
        return [p for p in self.servers or [] if p.required and not p.reachable]


async def probe_servers(report: CheckReport) -> list[ServerProbe]:
    """Connect to every MCP server of every spec, concurrently, once: the same
    handshake, allow-list, names and withheld tools a session would get (the
    withheld ones are added to ``report``). Plugin tool factories are not called
    (one may import livekit, which `check` does not), so their names are unknown
    here; a session renames an MCP tool that clashes with one (`tools` shows it)."""
    from ..mcp.capabilities import allowed, served
    from ..mcp.pool import McpPool
    from ..mcp.toolset import plan_tools

    specs = report.specs
    pool = McpPool(retry_in_background=False)
    try:
        acquired = await asyncio.gather(*(pool.acquire(s) for s in specs))
        probes = []
        for loaded, got in zip(specs, acquired):
            exposed: dict[str, list[str]] = {}
            plan = plan_tools({n: c for n, c in got.connections.items() if c.state == "up"}, lock=got.lock)
            for tool in plan.mcp:
                exposed.setdefault(tool.server, []).append(tool.exposed)
            report.withheld += [(loaded.name, w) for w in plan.withheld]
            report.warnings += [(loaded.name, line) for line in plan.warnings()]
            for name, conn in got.connections.items():
                up = conn.state == "up"
                probes.append(ServerProbe(
                    loaded.name, name, conn.transport, conn.server.required, up, None if up else conn.error,
                    round(conn.handshake_ms, 1) if up and conn.handshake_ms is not None else None,
                    conn.protocol_version if up else None, exposed.get(name, []),
                    served(conn.capabilities) if up else [], allowed(conn.server), conn.health().auth,
                ))
        return probes
    finally:
        await pool.aclose()


def run_check(folder: Path, plugins: Plugins, telephony: Path | None = None) -> CheckReport:
    from ..spec.telephony import load_lines, telephony_folder

    report = CheckReport(folder)
    # A broken plugin fails the check: a spec may depend on what it would register.
    report.errors.extend(plugins.errors)
    sources = {info.name: info.source for info in plugins.loaded}
    report.errors.extend(SpecError(sources.get(p.plugin, p.plugin), message=str(p)) for p in plugins.registry.problems)
    result = load_folder(folder, plugins)
    report.specs = result.specs
    report.errors.extend(result.errors)
    # phone lines name agents: checked against the names of the specs that loaded
    report.lines = load_lines(telephony_folder(folder, telephony), plugins, [s.name for s in result.specs],
                              required=telephony is not None)
    report.errors.extend(report.lines.errors)
    for loaded in result.specs:
        report.warnings += [(loaded.name, line) for line in missing_api_keys(loaded, plugins.registry)]
    return report


def render_text(report: CheckReport) -> str:
    if report.errors:
        files = {e.file for e in report.errors}
        lines = [printable(str(e)) for e in report.errors]
        lines.append(f"found {len(report.errors)} error{'s' if len(report.errors) != 1 else ''} in {len(files)} file{'s' if len(files) != 1 else ''}")
        return "\n".join(lines)
    rows = []
    for loaded in report.specs:
        d = describe(loaded)
        providers = ", ".join(f"{k} {v}" for k, v in d["providers"].items())
        servers = ", ".join(f"{n} ({s['transport']}{', required' if s['required'] else ''})" for n, s in d["mcp_servers"].items())
        handoffs = ", ".join(h["agent"] + ("" if h["history"] == "full" else f" ({h['history']})")
                             for h in d["handoffs"])
        rows.append([d["name"], d["mode"], providers, servers or "-", ", ".join(d["tools"]) or "-",
                     *([handoffs or "-"] if any(s.spec.handoffs for s in report.specs) else []), d["file"]])
    # the HANDOFFS column only for folders that use them: other tables keep their shape
    handoff_column = ["HANDOFFS"] if any(s.spec.handoffs for s in report.specs) else []
    body = table(["AGENT", "MODE", "PROVIDERS", "MCP SERVERS", "TOOLS", *handoff_column, "FILE"], rows)
    lines = [body]
    if report.servers:
        lines += ["", _servers_table(report.servers)]
        for probe in report.servers:
            if not probe.reachable:
                what = "error" if probe.required else "warning"
                then = ("sessions are refused until it is up (required: true)" if probe.required
                        else "the agent starts without its tools")
                lines.append(printable(
                    f"{what}: {probe.agent}: MCP server {probe.server} is unreachable: {probe.error}; {then}"))
    if report.warnings and not report.servers:
        lines.append("")  # the agent table ends at a blank line
    lines += [printable(f"warning: {agent}: {line}") for agent, line in report.warnings]
    n = len(rows)
    if report.lines is not None and not report.lines.empty:
        lines.append(lines_summary(report.lines))
    if report.unreachable_required:
        k = len(report.unreachable_required)
        lines.append(f"{n} agent{'s' if n != 1 else ''} valid; {k} required MCP server{'s' if k != 1 else ''} unreachable")
    else:
        lines.append(f"{n} agent{'s' if n != 1 else ''} OK")
    return "\n".join(lines)


SUMMARY_RULES, SUMMARY_NUMBERS = 10, 5  # the sentence names this many rules, and numbers of each


def lines_summary(lines: Lines) -> str:
    """One sentence on the phone lines (numbers are no secret; passwords are never shown),
    naming the first rules and numbers only: 40 files of 1,000 rules made it one 1 MB line."""
    def _first(items: list[str], limit: int, what: str) -> list[str]:
        return items[:limit] + ([f"and {len(items) - limit} more {what}"] if len(items) > limit else [])

    named = [f"{', '.join(_first(r.numbers + [f'trunk {t}' for t in r.trunks], SUMMARY_NUMBERS, 'number(s)'))} "
             f"-> {r.agent}" for r in list(lines.rules.values())[:SUMMARY_RULES]]
    if len(lines.rules) > SUMMARY_RULES:
        named.append(f"and {len(lines.rules) - SUMMARY_RULES} more rule(s)")
    rules = ", ".join(named)
    return printable(f"phone lines: {len(lines.inbound)} inbound trunk(s), {len(lines.outbound)} outbound "
                     f"trunk(s), {len(lines.rules)} dispatch rule(s){': ' + rules if rules else ''}")


def _servers_table(servers: list[ServerProbe]) -> str:
    from ..mcp.oauth import describe_auth

    rows = [
        [p.agent, p.server, p.transport, "up" if p.reachable else "DOWN",
         f"{p.handshake_ms:.0f} ms" if p.handshake_ms is not None else "-", p.protocol_version or "-",
         ", ".join(p.tools) or "-", *([describe_auth(p.auth)] if any(q.auth for q in servers) else [])]
        for p in servers
    ]
    capabilities = [f"{p.agent}/{p.server}: {', '.join(p.capabilities) or '-'}"
                    + (f"; may ask: {', '.join(p.allows)}" if p.allows else "") for p in servers if p.reachable]
    # the AUTH column only where a server uses OAuth: other tables keep their shape
    auth = ["AUTH"] if any(p.auth for p in servers) else []
    return (table(["AGENT", "MCP SERVER", "TRANSPORT", "STATUS", "HANDSHAKE", "PROTOCOL", "TOOLS", *auth], rows)
            + "".join(f"\ncapabilities: {line}" for line in capabilities))


def render_json(report: CheckReport) -> str:
    out: dict[str, Any] = {
        "ok": report.ok,
        "agents": [describe(s) for s in report.specs] if not report.errors else [],
        "errors": [e.as_dict() for e in report.errors],
        "mcp_servers": None if report.servers is None else [p.as_dict() for p in report.servers],
        "withheld_tools": [{"agent": agent, **w.as_dict()} for agent, w in report.withheld],
        "warnings": [{"agent": agent, "message": line} for agent, line in report.warnings] if not report.errors else [],
    }
    if report.lines is not None and not report.lines.empty:
        out["telephony"] = {"inbound_trunks": sorted(report.lines.inbound), "outbound_trunks": sorted(report.lines.outbound),
                            "dispatch_rules": {n: {"agent": r.agent, "numbers": r.numbers, "trunks": r.trunks}
                                               for n, r in sorted(report.lines.rules.items())}}
    return json.dumps(out, indent=2)
