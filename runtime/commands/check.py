"""`voice-runtime check`: every spec validated, every MCP server probed, what will run."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import AgentsDir, FormatOpt, PluginsOpt, TelephonyOpt, guard_output, load_plugins, quiet_logging, require_dir
from .option_choices import LogLevel, OutputFormat


def check(
    agents_dir: AgentsDir,
    plugins: PluginsOpt = None,
    format: FormatOpt = OutputFormat.text,
    offline: Annotated[bool, typer.Option("--offline", help="Do not connect to the MCP servers.")] = False,
    telephony: TelephonyOpt = None,
) -> None:
    """Validate every spec, connect to every MCP server, and print what will run,
    or every error as file:line:col.

    Exit code: 0 valid (an unreachable optional MCP server or a provider without an
    API key is a warning), 1 invalid or a required MCP server unreachable, 2 usage
    error (no such folder, bad option).
    """
    import asyncio

    from .check_report import probe_servers, render_json, render_text, run_check

    require_dir(agents_dir)
    secrets = guard_output()
    report = run_check(agents_dir, load_plugins(agents_dir, plugins), telephony)
    secrets.add_specs(report.specs)
    if report.lines is not None:
        secrets.add(report.lines.secrets)
    if not report.errors and not offline:
        quiet_logging(LogLevel.error, secrets)  # the report says what failed; the SDK's own logs would repeat it
        report.servers = asyncio.run(probe_servers(report))
    typer.echo(render_json(report) if format is OutputFormat.json else render_text(report))
    raise typer.Exit(0 if report.ok else 1)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
