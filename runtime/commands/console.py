"""`voice-runtime console`: livekit's local console for one agent."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import AgentOpt, AgentsDir, PluginsOpt, load_plugins, pick_agent, refuse_missing_keys


def console(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    plugins: PluginsOpt = None,
    text: Annotated[bool, typer.Option("--text", help="Type instead of speaking.")] = False,
) -> None:
    """livekit's local console for one agent: microphone and speaker, or --text."""
    from ..session.console import run_console
    from ..spec.secrets import SecretSet

    # livekit's console owns the terminal (and its logging): no stream wrapping here
    loaded_plugins = load_plugins(agents_dir, plugins)
    loaded = pick_agent(agents_dir, loaded_plugins, agent, SecretSet())
    refuse_missing_keys(loaded, loaded_plugins, text_only=text)
    raise typer.Exit(run_console(loaded, loaded_plugins, text=text))


def register(app: typer.Typer) -> None:
    app.command("console")(console)
