"""The one typer app every ``voice-runtime`` command registers on, in the order
``--help`` lists them."""

from __future__ import annotations

from typing import Annotated, Any

import typer
import typer.core

from .. import __version__
from . import call, chat, check, console, mcp_login, plugins, run_tests, schema, serve, sip, tools


EXAMPLES = """\b
Examples:
  voice-runtime serve agents.d/                  every spec a LiveKit agent, reloaded on change
  voice-runtime check agents.d/                  validate every spec, print what will run
  voice-runtime check agents.d/ --format json    the same, for scripts and CI
  voice-runtime schema -o agents.d/agent.schema.json
  voice-runtime plugins                          loaded plugins and what they registered
  echo "what time is it?" | voice-runtime chat agents.d/ --agent support
  voice-runtime console agents.d/ --agent concierge --text
  voice-runtime tools agents.d/ --agent support  the tools the model sees, and from where
  voice-runtime call agents.d/ --agent support get_current_time --args '{"timezone": "UTC"}'
  voice-runtime test agents.d/ --junit results.xml   conversation tests in agents.d/tests/
  voice-runtime sip plan agents.d/               phone lines (agents.d/telephony/) vs LiveKit; `sip apply` applies
  voice-runtime dial agents.d/ --agent support --to +14155550123   the agent calls a number
  voice-runtime mcp-login agents.d/ --agent support --server crm --store /secrets/crm.json
"""


class _UsageCommand(typer.core.TyperCommand):
    """A command whose usage line names its arguments as click does (``AGENTS_DIR``,
    ``[TOOL]`` when optional): this typer writes a required one as ``{agents_dir}``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces += param.get_usage_pieces(ctx)
                continue
            name = param.metavar or (param.name or "").upper()
            pieces.append((name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else ""))
        return pieces


class _App(typer.Typer):
    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or _UsageCommand, **kwargs)


app = _App(
    name="voice-runtime",
    help="Run LiveKit voice agents with MCP tools from a folder of YAML specs.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"voice-runtime {__version__}")
        raise typer.Exit()


@app.callback()


def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run LiveKit voice agents with MCP tools from a folder of YAML specs."""


# each command module registers itself; commands never import each other (pyproject's contracts)
for _command in (check, schema, plugins, chat, run_tests, console, tools, call, mcp_login, serve, sip):
    _command.register(app)
