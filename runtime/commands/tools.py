"""`voice-runtime tools`: the tools an agent's model sees and where each comes from."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..core.terminal import printable, shortened
from .common import AgentOpt, AgentsDir, FormatOpt, PluginsOpt, guard_output, load_plugins, pick_agent, plugin_output, quiet_logging
from .option_choices import LogLevel, OutputFormat

if TYPE_CHECKING:
    from ..mcp.direct import Toolbox


def tools(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    plugins: PluginsOpt = None,
    format: FormatOpt = OutputFormat.text,
    lock: Annotated[bool, typer.Option("--lock", help="Write <spec>.tools.lock: the tool definitions seen now are "
                                       "the approved ones; a later change withholds the tool.")] = False,
    log_level: Annotated[LogLevel, typer.Option("--log-level", case_sensitive=False, help="Log level on stderr.")]
    = LogLevel.error,
) -> None:
    """List the tools the agent's model will see and where each comes from.

    Connects to the agent's MCP servers; a server that is down is reported and its
    tools are missing, exactly as in a session.
    """
    import asyncio

    from ..mcp.direct import open_toolbox

    secrets = guard_output()
    quiet_logging(log_level, secrets)
    loaded_plugins = load_plugins(agents_dir, plugins)
    loaded = pick_agent(agents_dir, loaded_plugins, agent, secrets)

    async def main() -> Toolbox:
        from ..mcp.pool import McpPool

        pool = McpPool(retry_in_background=False)
        try:
            if lock:
                from ..mcp.pins import write_tool_lock
                from ..mcp.pool import listed_tools

                # approve what the servers list now, then show what the model gets with it
                path = write_tool_lock(loaded, listed_tools((await pool.acquire(loaded)).connections))
                typer.echo(f"wrote {path}", err=True)
            return await open_toolbox(loaded, loaded_plugins, pool)
        finally:
            await pool.aclose()

    with plugin_output():  # plugin tool factories run while the toolbox is built
        box = asyncio.run(main())
    unavailable = box.acquired.unavailable
    from ..session.handoffs import tool_name

    # the model is also shown a transfer tool per handoff (no arguments; the session continues as the agent)
    handoffs = [{"name": tool_name(h.agent), "source": f"handoff:{h.agent}", "original": h.agent,
                 "description": h.when, "parameters": {}} for h in loaded.spec.handoffs]
    # the spec's telephony: tools; in a session they hide a server's tool of the same name.
    # Built with livekit's classes, so imported only for a spec that has a telephony: block
    # (tools on any other spec never imports livekit: test_cli_imports.py)
    phone: list[dict[str, Any]] = []
    if loaded.spec.telephony is not None:
        from ..session.phone import phone_tool_listing

        phone = [{**tool, "source": "built-in phone tool", "original": tool["name"]}
                 for tool in phone_tool_listing(loaded.spec.telephony)]
    hidden = {p["name"] for p in phone}
    rows = [r for r in box.rows if r.name not in hidden]
    handoffs += phone
    from ..mcp.capabilities import allowed, served, summary
    from ..mcp.oauth import describe_auth

    up = {name: conn for name, conn in box.acquired.connections.items() if name not in unavailable}
    auth = {name: conn.health().auth for name, conn in box.acquired.connections.items() if conn.health().auth}
    if format is OutputFormat.json:
        typer.echo(json.dumps({"agent": loaded.name, "tools": [r.as_dict() for r in rows] + handoffs,
                               "withheld": [w.as_dict() for w in box.withheld],
                               "unavailable": unavailable, "auth": auth,
                               "servers": {name: {"capabilities": served(conn.capabilities),
                                                  "allows": allowed(conn.server)} for name, conn in up.items()}},
                              indent=2))
    else:
        from ..core.terminal import table

        typer.echo(table(["TOOL", "FROM", "ORIGINAL NAME", "DESCRIPTION"], [
            [r.name, r.source, r.original, shortened(r.description, 70)] for r in rows
        ] + [[h["name"], h["source"], h["original"], shortened(h["description"], 70)] for h in handoffs]))
        for line in box.warnings:
            typer.echo(printable(f"withheld: {line}"))
        for r in box.rows:
            if r.name in hidden:
                typer.echo(printable(f"hidden: {r.name} from {r.source}: the built-in phone tool of the same name wins"))
        for name, conn in up.items():
            typer.echo(f"capabilities: MCP server {name}: {summary(conn.capabilities, conn.server)}")
        for server, state in auth.items():
            typer.echo(printable(f"auth: MCP server {server}: {describe_auth(state)}"))
        for server, why in unavailable.items():
            typer.echo(printable(f"warning: MCP server {server} is unreachable: {why}; its tools are missing"),
                       err=True)
    required_down = [s for s in unavailable if loaded.spec.mcp_servers[s].required]
    raise typer.Exit(1 if required_down else 0)


def register(app: typer.Typer) -> None:
    app.command("tools")(tools)
