"""`voice-runtime plugins`: the loaded plugins, where each came from, what it registered."""

from __future__ import annotations

import json

import typer

from .common import FormatOpt, PluginsOpt, load_plugins
from .option_choices import OutputFormat


def plugins_cmd(
    plugins: PluginsOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """List loaded plugins, where each came from, and what it registered."""
    loaded = load_plugins(None, plugins)
    registry = loaded.registry
    rows = [
        {
            "name": info.name,
            "origin": info.origin,
            "source": info.source,
            "registered": registry.contributions.get(info.name, []),
        }
        for info in loaded.loaded
    ]
    problems = [str(e) for e in loaded.errors] + [str(p) for p in registry.problems]
    if format is OutputFormat.json:
        typer.echo(json.dumps({"plugins": rows, "disabled": loaded.disabled, "errors": problems}, indent=2))
    else:
        from ..core.terminal import table

        typer.echo(table(["PLUGIN", "FROM", "REGISTERED", "SOURCE"], [
            [r["name"], r["origin"], ", ".join(r["registered"]) or "-", r["source"]] for r in rows
        ]))
        for name in loaded.disabled:
            typer.echo(f"disabled: {name}")
        for problem in problems:
            typer.echo(f"error: {problem}")
    raise typer.Exit(1 if problems else 0)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins_cmd)
