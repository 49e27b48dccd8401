"""A stdio MCP server whose one tool, ``charge``, fails the way its ``how`` asks,
quoting the card number it was given, as a careless payment server would:

* ``is_error``: a tool error (``isError``) saying the card was declined;
* ``hostile``: the same, with ANSI escapes, a bidi override, CR and newlines;
* ``huge``: a tool error of 100,000 characters (over ``max_result_chars``);
* ``rpc``: a JSON-RPC error -32602 naming the card;
* ``huge_rpc``: a JSON-RPC error whose message is 1,000,000 characters;
* ``code``: a JSON-RPC error whose code is the card number;
* ``hang``: never answers (the call times out);
* ``die``: the process writes the card to stderr and exits mid-call;
* anything else: ``charged <card>``.

Run: ``python errors.py``."""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

server: MCPServer = MCPServer("errors", log_level="WARNING")


@server.tool()
async def charge(card: str, how: str) -> str:
    """Charge a card."""
    if how == "is_error":
        raise ToolError(f"card {card} was declined")
    if how == "hostile":
        raise ToolError(f"\x1b[2J\x1b]0;owned\x07card {card}\nwas\r\ndeclined\u202e by the bank")
    if how == "huge":
        raise ToolError(f"card {card} was declined " + "x" * 100_000)
    if how == "rpc":
        raise MCPError(-32602, f"invalid card {card}")
    if how == "code":
        raise MCPError(int(card), "declined")
    if how == "huge_rpc":
        raise MCPError(-32602, f"invalid card {card} " + "y" * 1_000_000)
    if how == "hang":
        await anyio.sleep_forever()
    if how == "die":
        print(f"charging card {card}: bank unreachable", file=sys.stderr, flush=True)
        os._exit(3)
    return f"charged {card}"


if __name__ == "__main__":
    server.run("stdio")
