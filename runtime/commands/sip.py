"""`voice-runtime sip plan|apply`: the phone lines of the files made LiveKit's, like
Terraform; `voice-runtime dial`: an agent calls a number."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..core.terminal import printable
from .common import AgentOpt, AgentsDir, FormatOpt, PluginsOpt, TelephonyOpt, guard_output, load_plugins, \
    quiet_logging, require_dir, usage_error
from .option_choices import LogLevel, OutputFormat

if TYPE_CHECKING:
    from ..spec.loader import LoadedSpec
    from ..spec.secrets import SecretSet
    from ..spec.telephony import Lines

LIVEKIT_VARS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
OwnerOpt = Annotated[str, typer.Option("--owner", help="Which voice-runtime's objects these are (in their metadata): "
                                       "two deployments sharing one LiveKit project use two owners.")]

def _livekit() -> tuple[str, str, str]:
    values = [os.environ.get(v, "") for v in LIVEKIT_VARS]
    missing = [v for v, value in zip(LIVEKIT_VARS, values) if not value]
    if missing:
        usage_error(f"{', '.join(missing)} not set (LiveKit's URL and API credentials)")
    return values[0], values[1], values[2]


def _lines(agents_dir: Path, plugins: Path | None, telephony: Path | None, secrets: SecretSet
           ) -> tuple[Lines, dict[str, LoadedSpec]]:
    """The folder's phone lines and its valid agents by name, or exit 1 with every
    problem of the lines at file:line:col."""
    from ..spec.loader import load_folder
    from ..spec.telephony import load_lines, telephony_folder

    require_dir(agents_dir)
    folder = telephony_folder(agents_dir, telephony)
    if not folder.is_dir():  # nothing to read: a usage error, not an invalid file at 1:1
        usage_error(printable(f"no phone lines: {folder} is {'not a directory' if folder.exists() else 'missing'}; "
                              "put the *.yaml line files there (an example: deploy/examples/telephony/twilio.yaml) "
                              "or name their folder with --telephony DIR"))
    manager = load_plugins(agents_dir, plugins)
    specs = load_folder(agents_dir, manager)
    secrets.add_specs(specs.specs)
    agents = {s.name: s for s in specs.specs}
    lines = load_lines(folder, manager, agents, required=True)
    secrets.add(lines.secrets)
    if lines.errors:
        for error in lines.errors:
            typer.echo(printable(str(error)), err=True)
        raise typer.Exit(1)
    return lines, agents


def _echo(text: str, err: bool = False) -> None:
    for line in text.splitlines():  # printable() escapes a line break inside a value, not between lines
        typer.echo(printable(line), err=err)


def _run(agents_dir: Path, plugins: Path | None, telephony: Path | None, owner: str, apply: bool) -> None:
    from ..serve.sip_lines import plan_and_apply, remote_error, render_applied

    secrets = guard_output()
    lines, _ = _lines(agents_dir, plugins, telephony, secrets)
    url, key, secret = _livekit()
    secrets.add({secret: "${LIVEKIT_API_SECRET}"})
    quiet_logging(LogLevel.error, secrets)
    try:
        plan, applied = asyncio.run(plan_and_apply(lines, url, key, secret, apply=apply, owner=owner))
    except Exception as exc:  # noqa: BLE001 - LiveKit unreachable or refusing: one line, nothing changed
        typer.echo(printable(f"error: cannot read LiveKit's SIP objects at {url}: {remote_error(exc)}"), err=True)
        raise typer.Exit(1) from None
    _echo(plan.render())
    if plan.conflicts:
        typer.echo("error: the plan has conflicts; nothing was changed", err=True)
        raise typer.Exit(1)
    if applied is not None:
        _echo(render_applied(applied), err=not applied.ok)
        raise typer.Exit(0 if applied.ok else 1)


def plan(agents_dir: AgentsDir, plugins: PluginsOpt = None, telephony: TelephonyOpt = None,
         owner: OwnerOpt = "default") -> None:
    """Print what `sip apply` would change in LiveKit (create, update, delete, unchanged);
    passwords are never printed. Exit 1 on conflicts (a number held by an object
    voice-runtime does not manage) or invalid files."""
    _run(agents_dir, plugins, telephony, owner, apply=False)


def apply(agents_dir: AgentsDir, plugins: PluginsOpt = None, telephony: TelephonyOpt = None,
          owner: OwnerOpt = "default") -> None:
    """Make LiveKit's trunks and dispatch rules match the files, touching only the objects
    voice-runtime manages. The whole plan is checked before any change; a failure stops
    the apply and says what was applied. Running it again changes nothing."""
    _run(agents_dir, plugins, telephony, owner, apply=True)


def dial(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    to: Annotated[str, typer.Option("--to", metavar="+E164", help="The number to call, such as +14155550100.")],
    context: Annotated[Optional[list[str]], typer.Option("--context", metavar="KEY=VALUE", help="Call context, as the agent's dispatch metadata (repeat).")] = None,
    trunk: Annotated[Optional[str], typer.Option("--trunk", help="The outbound trunk. Default: the first whose allowed_destinations take the number.")] = None,
    plugins: PluginsOpt = None,
    telephony: TelephonyOpt = None,
    owner: OwnerOpt = "default",
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Have an agent call a number: dispatch it into a new room, dial through the
    outbound trunk, wait for the answer. Prints the call id (the room) and the SIP
    outcome: answered, busy, no_answer or failed (whether a person or a voicemail box
    answered is the agent's to find out). Exit 0 answered, 1 not answered, 2 refused."""
    import json

    from ..serve.dial import Refused, check_request, place_call
    from ..serve.sip_lines import remote_error

    given: dict[str, str] = {}
    for item in context or []:
        key, sep, value = item.partition("=")
        if not sep:
            usage_error(printable(f"--context {item[:80]!r} is not KEY=VALUE"))
        if key.strip() in given:  # last-wins would dial with a value the caller may not have meant
            usage_error(printable(f"--context {key.strip()[:80]!r} is given twice"))
        given[key.strip()] = value
    from ..spec.telephony import is_e164

    if not is_e164(to):  # before reading any file: the command line is wrong
        usage_error(printable(f"--to {to[:40]!r} is not a phone number in E.164 form (+, country code and "
                              "number, such as +14155550100)"))
    secrets = guard_output()
    lines, agents = _lines(agents_dir, plugins, telephony, secrets)
    try:
        declared = agents[agent].spec.context if agent in agents else {}
        trunk_name = check_request(lines, agent, to, given, declared, trunk, agents)
    except Refused as exc:
        usage_error(printable(f"call refused: {exc}"))
    url, key, secret = _livekit()
    secrets.add({secret: "${LIVEKIT_API_SECRET}"})
    quiet_logging(LogLevel.error, secrets)
    try:
        result = asyncio.run(place_call(lines, agent, to, given, trunk_name, url, key, secret, owner))
    except Refused as exc:
        usage_error(printable(f"call refused: {exc}"))
    except Exception as exc:  # noqa: BLE001 - LiveKit unreachable or refusing the dispatch
        typer.echo(printable(f"error: the call was not placed: {remote_error(exc)}"), err=True)
        raise typer.Exit(1) from None
    if format is OutputFormat.json:
        typer.echo(json.dumps(result.as_dict()))
    else:
        code = f" (SIP {result.sip_status_code} {result.sip_status})" if result.sip_status_code else ""
        typer.echo(printable(f"call {result.call_id}: {result.outcome}{code}; {agent} -> {to} via {result.trunk}"))
    raise typer.Exit(0 if result.outcome == "answered" else 1)


def register(app: typer.Typer) -> None:
    # a group of the app's own kind: its commands then get the app's usage line
    sip = type(app)(name="sip", help="Apply the phone lines of the files (telephony/*.yaml) to LiveKit.",
                    no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                    pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})
    sip.command("plan")(plan)
    sip.command("apply")(apply)
    app.add_typer(sip, name="sip")
    app.command("dial")(dial)
