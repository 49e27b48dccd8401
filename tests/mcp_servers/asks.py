"""An MCP server whose tools ask the client something back: elicitation (a question
for the caller), and what the client announced it can answer.

Run: ``python asks.py [--record FILE]`` (stdio).

* ``book(city)``: asks for a date (string, required), a yes/no ``confirm`` (boolean,
  required) and ``seats`` (integer, default 2), then answers with what it got.
* ``book_when(city, gate)``: records ``{"event": "waiting", "tool", "city"}``, waits until the
  file ``gate`` exists, then asks as ``book`` does.
* ``hold(gate)``: records ``{"event": "waiting", "tool"}`` and waits until ``gate`` exists
  (a tool call in flight that asks nothing).
* ``nested()``: asks with a form the MCP spec forbids (a nested object).
* ``link()``: asks the client to open a URL (URL-mode elicitation).
* ``summarize(text, max_tokens)``: asks the client's model for a one-line summary
  (sampling), recorded as ``{"asked": "summarize", "model", "text", "stop_reason"}``.
* ``roots()``: the client's roots (``roots/list``), as a JSON list of URIs.
* ``capabilities()``: the client capabilities announced at initialize, as JSON.

At start it appends ``{"event": "spawn", "ppid"}``. Each answer is appended to ``--record`` as ``{"asked": tool, "action", "content"}``
(or ``{"asked": tool, "error"}``), so a test reads what reached the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recorder import Recorder  # noqa: E402

BOOKING_FORM = {
    "type": "object",
    "properties": {
        "date": {"type": "string", "title": "Date of the trip", "description": "as YYYY-MM-DD"},
        "confirm": {"type": "boolean", "title": "Shall I book it?"},
        "seats": {"type": "integer", "title": "Seats", "default": 2},
    },
    "required": ["date", "confirm"],
}
NESTED_FORM = {"type": "object", "properties": {"address": {"type": "object", "properties": {"street": {"type": "string"}}}}}


def build(rec: Recorder) -> MCPServer:
    server: MCPServer = MCPServer("asks", log_level="WARNING")

    async def ask(tool: str, ctx: Context, message: str, form: dict) -> str:
        try:
            result = await ctx.request_context.session.elicit_form(message, form, related_request_id=ctx.request_id)
        except Exception as exc:  # noqa: BLE001 - the test reads what the client answered
            rec.write({"asked": tool, "error": str(exc)})
            return f"error: {exc}"
        rec.write({"asked": tool, "action": result.action, "content": result.content})
        return f"{result.action}: {json.dumps(result.content, sort_keys=True)}"

    @server.tool()
    async def book(city: str, ctx: Context) -> str:
        """Book a trip to `city`; asks the caller for the date and a confirmation."""
        return await ask("book", ctx, f"Booking a trip to {city}. Which date, and shall I book it?", BOOKING_FORM)

    async def wait_for(tool: str, gate: str, **about: str) -> None:
        # the test opens the gate once every call it needs is in flight (no sleeps in the test)
        rec.write({"event": "waiting", "tool": tool, **about})
        while not Path(gate).exists():
            await anyio.sleep(0.02)

    @server.tool()
    async def book_when(city: str, gate: str, ctx: Context) -> str:
        """Book a trip to `city` once the file `gate` exists."""
        await wait_for("book_when", gate, city=city)
        return await ask("book", ctx, f"Booking a trip to {city}. Which date, and shall I book it?", BOOKING_FORM)

    @server.tool()
    async def hold(gate: str) -> str:
        """Return once the file `gate` exists."""
        await wait_for("hold", gate)
        return "released"

    @server.tool()
    async def nested(ctx: Context) -> str:
        """Asks with a nested form (not allowed by the MCP spec)."""
        return await ask("nested", ctx, "Your address?", NESTED_FORM)

    @server.tool()
    async def link(ctx: Context) -> str:
        """Asks the client to open a URL."""
        try:
            result = await ctx.request_context.session.elicit_url(
                "Sign in to continue", "https://example.com/login", "login-1", related_request_id=ctx.request_id)
        except Exception as exc:  # noqa: BLE001
            rec.write({"asked": "link", "error": str(exc)})
            return f"error: {exc}"
        rec.write({"asked": "link", "action": result.action, "content": result.content})
        return result.action

    @server.tool()
    async def summarize(text: str, max_tokens: int, ctx: Context) -> str:
        """Asks the client's model to summarize `text` (MCP sampling)."""
        from mcp.types import SamplingMessage, TextContent

        try:
            result = await ctx.request_context.session.create_message(
                [SamplingMessage(role="user", content=TextContent(type="text", text=text))],
                max_tokens=max_tokens, system_prompt="Summarize in one line.", related_request_id=ctx.request_id)
        except Exception as exc:  # noqa: BLE001 - the test reads what the client answered
            rec.write({"asked": "summarize", "error": str(exc)})
            return f"error: {exc}"
        rec.write({"asked": "summarize", "model": result.model, "text": result.content.text,
                   "stop_reason": result.stop_reason})
        return f"summary: {result.content.text}"

    @server.tool()
    async def roots(ctx: Context) -> str:
        """The roots the client announces (MCP roots)."""
        try:
            result = await ctx.request_context.session.list_roots()
        except Exception as exc:  # noqa: BLE001
            return f"error: {exc}"
        return json.dumps([str(r.uri) for r in result.roots])

    @server.tool()
    async def capabilities(ctx: Context) -> str:
        """The client's announced capabilities."""
        caps = ctx.client_capabilities
        return json.dumps(caps.model_dump(mode="json", exclude_none=True) if caps else {}, sort_keys=True)

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path)
    rec = Recorder(parser.parse_args().record)
    rec.write({"event": "spawn", "ppid": os.getppid()})  # which process started it (serve or a job)
    build(rec).run("stdio")


if __name__ == "__main__":
    main()
