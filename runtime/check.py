"""`voice-runtime check`: load a folder, then report what will run or every error."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .spec.errors import SpecError
from .spec.loader import LoadedSpec, load_folder
from .summary import describe

if TYPE_CHECKING:
    from .plugins import Plugins


@dataclass
class CheckReport:
    folder: Path
    specs: list[LoadedSpec] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def run_check(folder: Path, plugins: Plugins) -> CheckReport:
    report = CheckReport(folder)
    # A broken plugin fails the check: a spec may depend on what it would register.
    report.errors.extend(plugins.errors)
    sources = {info.name: info.source for info in plugins.loaded}
    report.errors.extend(SpecError(sources.get(p.plugin, p.plugin), message=str(p)) for p in plugins.registry.problems)
    result = load_folder(folder, plugins)
    report.specs = result.specs
    report.errors.extend(result.errors)
    return report


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def render_text(report: CheckReport) -> str:
    if report.errors:
        files = {e.file for e in report.errors}
        lines = [str(e) for e in report.errors]
        lines.append(f"found {len(report.errors)} error{'s' if len(report.errors) != 1 else ''} in {len(files)} file{'s' if len(files) != 1 else ''}")
        return "\n".join(lines)
    rows = []
    for loaded in report.specs:
        d = describe(loaded)
        providers = ", ".join(f"{k} {v}" for k, v in d["providers"].items())
        servers = ", ".join(f"{n} ({s['transport']}{', required' if s['required'] else ''})" for n, s in d["mcp_servers"].items())
        rows.append([d["name"], d["mode"], providers, servers or "-", ", ".join(d["tools"]) or "-", d["file"]])
    body = table(["AGENT", "MODE", "PROVIDERS", "MCP SERVERS", "TOOLS", "FILE"], rows)
    return f"{body}\n{len(rows)} agent{'s' if len(rows) != 1 else ''} OK"


def render_json(report: CheckReport) -> str:
    out: dict[str, Any] = {
        "ok": report.ok,
        "agents": [describe(s) for s in report.specs] if report.ok else [],
        "errors": [e.as_dict() for e in report.errors],
    }
    return json.dumps(out, indent=2)
