"""`voice-runtime mcp-login`: a person logs in once (authorization code + PKCE through
their browser) for an HTTP MCP server whose block has `auth: {oauth: ...}`; the refresh
token is written to the store file (0600) the spec then reads, so serve needs nobody."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.terminal import printable
from .common import AgentOpt, AgentsDir, PluginsOpt, guard_output, load_plugins, pick_agent, quiet_logging, usage_error
from .option_choices import LogLevel


def mcp_login(
    agents_dir: AgentsDir,
    agent: AgentOpt,
    server: Annotated[str, typer.Option("--server", "-s", help="The MCP server block (a key of mcp_servers).")],
    store: Annotated[Path | None, typer.Option(
        "--store", help="Where the refresh token is written (0600). Default: the block's `auth.oauth.store`.",
        show_default=False)] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=1, max=600,
        help="Seconds to wait for the login to complete (the person in the browser), instead of the "
             "block's connect_timeout.")] = 300,
    plugins: PluginsOpt = None,
) -> None:
    """Log in to an MCP server's authorization server in the browser, once, and store
    the refresh token for serve (the browser opens; the URL is printed too).

    Exit code: 0 logged in and stored, 1 the login or the server failed, 2 usage.
    """
    import asyncio

    secrets = guard_output()
    quiet_logging(LogLevel.error, secrets)
    loaded = pick_agent(agents_dir, load_plugins(agents_dir, plugins), agent, secrets)
    block = loaded.spec.mcp_servers.get(server)
    if block is None:
        usage_error(f"agent {loaded.name} has no MCP server {server!r}; "
                    f"its servers: {', '.join(loaded.spec.mcp_servers) or 'none'}")
    config = getattr(getattr(block, "auth", None), "oauth", None)
    if config is None:
        usage_error(f"MCP server {server} has no `auth: {{oauth: ...}}`: nothing to log in to")
    if config.resolved_grant == "client_credentials":
        usage_error(f"MCP server {server} uses client_credentials: the runtime is the client, nobody logs in")
    where = store or (Path(config.store) if config.store else None)
    if where is None:
        usage_error("say where the refresh token goes: --store PATH, or `store:` in the block's auth.oauth")
    where = where if where.is_absolute() else (Path.cwd() / where if store else loaded.path.parent / where)
    unwritable = _unwritable(where)
    if unwritable:  # before the browser opens: a login whose token cannot be kept is a person's time lost
        usage_error(f"the login store {where} cannot be written: {unwritable}")
    login_block = block.model_copy(update={"auth": block.auth.model_copy(update={"oauth": config.model_copy(
        update={"grant": "authorization_code", "store": str(where), "refresh_token": None})})})

    async def main() -> int:
        from ..mcp import oauth
        from ..mcp.connection import McpConnection, McpUnavailable

        oauth.allow_login(fresh=True)
        conn = McpConnection(server, login_block, base_dir=loaded.path.parent, redact=secrets.redact)
        try:
            await conn.connect(timeout=timeout)
        except McpUnavailable as exc:
            typer.echo(printable(f"error: login to MCP server {server} failed: {exc}"), err=True)
            return 1
        finally:
            await conn.aclose()
        if not oauth.stored_refresh_token(where):
            typer.echo(printable(
                f"error: logged in, but the authorization server issued no refresh token, so serve could not "
                f"renew access; ask for it (often scope `offline_access`) in auth.oauth.scope"), err=True)
            return 1
        typer.echo(printable(f"logged in to MCP server {server} ({len(conn.tools)} tools); refresh token stored in "
                             f"{where} (0600). The block reads it with auth.oauth.store: {where}"))
        return 0

    raise typer.Exit(asyncio.run(main()))


def _unwritable(store: Path) -> str | None:
    """Why the login store cannot be written (its folder is created if missing), or None."""
    import os

    if store.is_dir():
        return "it is a folder"
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"its folder cannot be created ({exc.strerror or exc})"
    if not os.access(store.parent, os.W_OK | os.X_OK):
        return f"its folder {store.parent} is not writable"
    if store.exists() and not os.access(store, os.W_OK):
        return "the file is not writable"
    return None


def register(app: typer.Typer) -> None:
    app.command("mcp-login")(mcp_login)
