"""`voice-runtime console`: livekit's local console for one agent."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import AgentOpt, AgentsDir, PluginsOpt, load_plugins, pick_agent, refuse_missing_keys, usage_error


def console(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    plugins: PluginsOpt = None,
    text: Annotated[bool, typer.Option("--text", help="Type instead of speaking.")] = False,
) -> None:
    """livekit's local console for one agent: microphone and speaker, or --text."""
    from ..session.console import run_console
    from ..spec.secrets import SecretSet

    import sys

    # livekit's console owns the terminal (and its logging): no stream wrapping here
    loaded_plugins = load_plugins(agents_dir, plugins)
    loaded = pick_agent(agents_dir, loaded_plugins, agent, SecretSet())
    refuse_missing_keys(loaded, loaded_plugins, text_only=text)
    if not sys.stdin.isatty():  # livekit's console reads keys from a terminal: piped lines were ignored
        usage_error("console needs a terminal; for typed turns from a pipe or a script use "
                    "`voice-runtime chat AGENTS_DIR --agent NAME` (one turn per line)")
    raise typer.Exit(run_console(loaded, loaded_plugins, text=text))


def register(app: typer.Typer) -> None:
    app.command("console")(console)
