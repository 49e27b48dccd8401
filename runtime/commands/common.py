"""What the commands share: the options every command takes, the folder and agent
they read, output that redacts secrets, logging for a session, refusing a provider
without a key before anything starts."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from ..core.terminal import printable
from .option_choices import LogLevel, OutputFormat

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec
    from ..spec.secrets import SecretSet


AgentsDir = Annotated[Path, typer.Argument(metavar="AGENTS_DIR", help="Folder of agent specs (*.yaml).",
                                                  show_default=False)]
PluginsOpt = Annotated[
    Optional[Path],
    typer.Option("--plugins", help="Folder of plugin files. Default: plugins/ beside the specs folder."),
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="Output for people (text) or scripts (json).")]
TelephonyOpt = Annotated[
    Optional[Path],
    typer.Option("--telephony", metavar="DIR", help="Folder of phone line files (trunks, dispatch rules). "
                 "Default: telephony/ inside the specs folder."),
]
AgentOpt = Annotated[str, typer.Option("--agent", "-a", help="Agent name (see `check`).")]
LogLevelOpt = Annotated[LogLevel, typer.Option("--log-level", case_sensitive=False, help="Log level on stderr.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also show the libraries' warnings "
                                          "(livekit, openai, mcp), tracebacks included.")]


def plugins_dir_for(agents_dir: Path | None, option: Path | None) -> Path:
    if option is not None:
        return option
    if agents_dir is not None:
        return agents_dir.resolve().parent / "plugins"
    return Path("plugins")


def require_dir(agents_dir: Path) -> None:
    """A specs folder that does not exist is a usage error (exit 2), for every command."""
    if not agents_dir.is_dir():
        why = "not a directory (give the folder that holds the *.yaml specs)" if agents_dir.exists() else "no such directory"
        typer.echo(f"error: {agents_dir}: {why}", err=True)
        raise typer.Exit(2)


def load_plugins(agents_dir: Path | None, option: Path | None) -> Plugins:
    from ..plugins.manager import make_plugin_manager

    return make_plugin_manager(plugins_dir_for(agents_dir, option))


def guard_output() -> SecretSet:
    """This command's secrets, and a stdout and stderr that redact them: every line
    it prints (reports, errors, log lines, tracebacks, warnings) passes through."""
    from ..spec.secrets import RedactingStream, SecretSet, environment_credentials

    secrets = SecretSet(environment_credentials())
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout, secrets)
        sys.stderr = RedactingStream(sys.stderr, secrets)
    return secrets


def pick_agent(agents_dir: Path, plugins: Plugins, agent: str, secrets: SecretSet,
                every: list[LoadedSpec] | None = None) -> LoadedSpec:
    """The named agent's accepted spec, or exit with its errors (1), or with the folder's
    errors (1) or none (2) and that no valid agent has that name, naming those that are.
    ``every``: filled with every accepted spec of the folder (handoff targets)."""
    from ..spec.loader import load_folder

    require_dir(agents_dir)

    result = load_folder(agents_dir, plugins)
    secrets.add_specs(result.specs)
    if every is not None:
        every.extend(result.specs)
    for loaded in result.specs:
        if loaded.name == agent:
            return loaded
    own = [e for e in result.errors if Path(e.file).stem == agent or f"{agent!r}" in e.message]
    for error in own or result.errors:
        typer.echo(printable(str(error)), err=True)
    if own:
        raise typer.Exit(1)
    # the agent may be one of the specs with errors (under another name): the errors come
    # first, then what the user asked for and what could be asked for instead
    names = ", ".join(s.name for s in result.specs)
    if not names:
        names = "none: every spec has errors (above)" if result.errors else "none"
    typer.echo(printable(f"error: no agent named {agent!r} in {agents_dir}; available: {names}"), err=True)
    raise typer.Exit(1 if result.errors else 2)


def quiet_logging(level: LogLevel, secrets: SecretSet) -> None:
    from ..observe.logs import setup_logging

    setup_logging("short", level.value, secrets)


def _ours_only(record: logging.LogRecord) -> bool:
    # a record the conversation shows as an event (session.activity.SHOWN_AS_EVENT) is not said twice
    return record.name.startswith("voice_runtime") and not getattr(record, "session_event", False)


def session_logging(log_level: LogLevel | None, verbose: bool, secrets: SecretSet) -> None:
    """By default a conversation shows voice-runtime's own one-line warnings and
    errors: an unreachable LLM made livekit log about 20 retry warnings and two
    tracebacks before our sentence. ``-v`` adds the libraries' warnings;
    ``--log-level`` shows everything from that level on."""
    quiet_logging(log_level or LogLevel.warning, secrets)
    if log_level is None and not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_ours_only)


def refuse_missing_keys(loaded: LoadedSpec, plugins: Plugins, *, text_only: bool) -> None:
    """A provider this session builds has no API key: say which, and the variable
    to set, before anything starts (exit 2), not seconds in, in the SDK's words."""
    from .check_report import missing_api_keys

    missing = missing_api_keys(loaded, plugins.registry, text_only=text_only)
    for sentence in missing:
        typer.echo(f"error: {loaded.name}: {sentence}", err=True)
    if missing:
        raise typer.Exit(2)


def usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def plugin_output() -> AbstractContextManager[object]:
    from ..plugins.manager import plugin_output

    return plugin_output()
