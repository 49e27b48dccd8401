"""`voice-runtime call`: one tool called directly, through the path a session uses."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..core.terminal import printable
from .common import AgentOpt, AgentsDir, PluginsOpt, guard_output, load_plugins, pick_agent, plugin_output, quiet_logging
from .option_choices import ElicitChoice, LogLevel


def call(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    tool: Annotated[str, typer.Argument(metavar="TOOL", help="Tool name as the model sees it (see `tools`).",
                                                show_default=False)],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    plugins: PluginsOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the call record and result as JSON.")] = False,
    metrics: Annotated[bool, typer.Option("--metrics", help="Then print voice-runtime's Prometheus metrics.")] = False,
    elicit: Annotated[ElicitChoice, typer.Option(
        "--elicit", help="How a server's question during the call (elicitation, on a block with "
        "`elicitation: allow`) is answered: accept each field's default (decline when a required field has "
        "none), or decline.")] = ElicitChoice.decline,
) -> None:
    """Call one tool directly, through the same path a session uses, and print its result.

    Exit code: 0 the tool answered, 1 it failed (down, timeout, error), 2 usage
    (unknown agent or tool, arguments that are not a JSON object).
    """
    import asyncio

    from ..mcp.toolset import ToolFailure
    from ..mcp.direct import call_row, open_toolbox

    try:
        arguments = json.loads(args)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--args") from None
    if not isinstance(arguments, dict):
        raise typer.BadParameter("must be a JSON object, e.g. '{\"city\": \"Paris\"}'", param_hint="--args")
    secrets = guard_output()
    quiet_logging(LogLevel.error, secrets)
    loaded_plugins = load_plugins(agents_dir, plugins)
    loaded = pick_agent(agents_dir, loaded_plugins, agent, secrets)

    async def main() -> int:
        from ..mcp.pool import McpPool

        pool = McpPool(retry_in_background=False)
        try:
            with plugin_output():
                box = await open_toolbox(loaded, loaded_plugins, pool)
            from ..mcp.elicitation import ELICITORS

            for conn in box.acquired.connections.values():
                conn.elicitor = ELICITORS[elicit.value]
            row = box.find(tool)
            if row is None:
                known = ", ".join(r.name for r in box.rows) or "none"
                down = "".join(f"; MCP server {s} is unreachable: {why}" for s, why in box.acquired.unavailable.items())
                withheld = [w for w in box.withheld if tool in (w.name, w.original)]
                why = "".join(f"; withheld: {w.reason}" for w in withheld)
                typer.echo(printable(f"error: agent {loaded.name} has no tool {tool!r}{why}; available: {known}{down}"),
                           err=True)
                return 2
            if not json_out:
                typer.echo(printable(f"-> {row.source}: {row.original} {json.dumps(arguments)}"), err=True)
            try:
                with plugin_output():  # a plugin tool's prints are not its result
                    text, failure = (await call_row(row, arguments, box.recorder))[0], None
            except ToolFailure as exc:
                text, failure = "", str(exc)
            record = box.recorder.records[-1] if box.recorder.records else None
            if json_out:
                typer.echo(json.dumps({"result": text, "failure": failure,
                                       "record": record.as_dict() if record else None}, indent=2))
            else:
                if record is not None:
                    typer.echo(printable(
                        f"<- {record.outcome} in {record.latency_ms:.1f} ms, {record.result_chars} characters"
                        + (f": {record.error}" if record.error else "")), err=True)
                if failure is None:
                    typer.echo(printable(text, lines=True))  # the server's text; multi-line is fine
                else:  # the server's words, once, its lines kept (the record's error is our own)
                    typer.echo(printable(f"error: {failure}", lines=True), err=True)
            if metrics:
                typer.echo(_our_metrics(), nl=False)
            return 0 if failure is None else 1
        finally:
            await pool.aclose()

    raise typer.Exit(asyncio.run(main()))


def _our_metrics() -> str:
    from prometheus_client import REGISTRY, generate_latest

    text = generate_latest(REGISTRY).decode()
    return "".join(line + "\n" for line in text.splitlines() if "voice_runtime_" in line)


def register(app: typer.Typer) -> None:
    app.command("call")(call)
