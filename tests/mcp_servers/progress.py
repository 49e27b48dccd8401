"""An MCP server whose tools report progress while they run, for the per-call timeout.

Run: ``python progress.py [--record FILE]`` (stdio).

* ``work(seconds, every)``: reports progress every ``every`` seconds, answers "done"
  after ``seconds``.
* ``spin(every)``: reports progress every ``every`` seconds and never answers.
* ``quiet(seconds)``: reports progress once, then sleeps ``seconds`` without a word.

Each call appends ``{"tool", "args"}`` to ``--record`` when it arrives, and
``{"ended": tool, "how": "done"|"cancelled", "progress": n}`` when it ends, so a test
sees how far a call got and that a cut call was cancelled on the server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recorder import Recorder  # noqa: E402


def build(rec: Recorder) -> MCPServer:
    server: MCPServer = MCPServer("progress", log_level="WARNING")

    async def reporting(tool: str, ctx: Context, seconds: float | None, every: float) -> int:
        sent = 0
        elapsed = 0.0
        try:
            while seconds is None or elapsed < seconds:
                await ctx.report_progress(sent, None if seconds is None else seconds / every, f"step {sent}")
                sent += 1
                await anyio.sleep(every)
                elapsed += every
        except anyio.get_cancelled_exc_class():
            rec.write({"ended": tool, "how": "cancelled", "progress": sent})
            raise
        rec.write({"ended": tool, "how": "done", "progress": sent})
        return sent

    @server.tool()
    async def work(seconds: float, every: float, ctx: Context) -> str:
        """Work for `seconds`, reporting progress every `every` seconds."""
        rec.call("work", seconds=seconds, every=every)
        sent = await reporting("work", ctx, seconds, every)
        return f"done after {sent} progress reports"

    @server.tool()
    async def spin(every: float, ctx: Context) -> str:
        """Report progress every `every` seconds, forever."""
        rec.call("spin", every=every)
        await reporting("spin", ctx, None, every)
        return "never"

    @server.tool()
    async def quiet(seconds: float, ctx: Context) -> str:
        """Report progress once, then say nothing for `seconds`."""
        rec.call("quiet", seconds=seconds)
        await ctx.report_progress(0, None, "starting")
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            rec.write({"ended": "quiet", "how": "cancelled", "progress": 1})
            raise
        return "woke"

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path)
    build(Recorder(parser.parse_args().record)).run("stdio")


if __name__ == "__main__":
    main()
