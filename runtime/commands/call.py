"""`voice-runtime call`: one tool called directly, through the path a session uses."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

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
    elicit: Annotated[ElicitChoice | None, typer.Option(
        "--elicit", help="How a server's question during the call (elicitation, on a block with "
        "`elicitation: allow`) is answered: ask on the terminal, accept each field's default (decline when a "
        "required field has none), or decline. Default: ask when stdin is a terminal, else decline.",
        show_default=False)] = None,
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

        from ..mcp import oauth

        oauth.allow_login()  # a person runs `call`: a server with `grant: authorization_code` may ask them to log in
        pool = McpPool(retry_in_background=False)
        try:
            with plugin_output():
                box = await open_toolbox(loaded, loaded_plugins, pool)
            from ..mcp.elicitation import ELICITORS

            how = elicit or (ElicitChoice.ask if sys.stdin.isatty() else ElicitChoice.decline)
            for conn in box.acquired.connections.values():
                conn.elicitor = _ask_on_terminal if how is ElicitChoice.ask else ELICITORS[how.value]
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


async def _ask_on_terminal(question: Any) -> Any:
    """A server's question asked on stderr, answered on stdin: ``decline`` (or ``no``)
    at the first prompt declines; end of input cancels; an empty line takes a field's
    default (or leaves an optional field out); a value that does not parse is asked
    again, three times at most."""
    import asyncio

    from ..mcp.elicitation import Answer, parse_typed

    async def line(prompt: str) -> str | None:
        typer.echo(printable(prompt), err=True, nl=False)
        text = await asyncio.to_thread(sys.stdin.readline)
        return text.rstrip("\n") if text else None

    typer.echo(printable(f"? MCP server {question.server} asks: {question.message}"), err=True)
    first = await line("  answer it? [Y/n/decline] ")
    if first is None:
        return Answer("cancel", reason="end of input")
    if first.strip().lower() in ("n", "no", "decline"):
        return Answer("decline", reason="declined on the terminal")
    content: dict[str, Any] = {}
    for f in question.fields:
        hint = (f" [{f.default}]" if f.default is not None else "") + ("" if f.required or f.default is not None
                                                                       else " (optional)")
        for _ in range(3):
            said = await line(f"  {f.label}{hint}: ")
            if said is None:
                return Answer("cancel", reason="end of input")
            if not said.strip() and (f.default is not None or not f.required):
                break  # check_answer applies the default
            try:
                content[f.name] = parse_typed(f, said)
                break
            except ValueError as exc:
                typer.echo(printable(f"  ({exc})"), err=True)
        else:
            return Answer("cancel", reason=f"no valid answer for {f.name}")
    return Answer("accept", content)


def _our_metrics() -> str:
    from prometheus_client import REGISTRY, generate_latest

    text = generate_latest(REGISTRY).decode()
    return "".join(line + "\n" for line in text.splitlines() if "voice_runtime_" in line)


def register(app: typer.Typer) -> None:
    app.command("call")(call)
