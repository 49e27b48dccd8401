"""What `serve` holds for tool_call_overhead.py's "borrowed" side, in a process of its
own as in production: a warm McpPool for one spec and the Gateway job processes
borrow it through. Usage: _gateway_host.py STATE_DIR SPEC_FOLDER; prints "ready"
once listening, exits when stdin closes. Not a benchmark (leading underscore)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


async def main(state_dir: Path, folder: Path) -> None:
    from voice_runtime.mcp.gateway import Gateway
    from voice_runtime.mcp.pool import McpPool
    from voice_runtime.plugins.manager import make_plugin_manager
    from voice_runtime.spec.loader import load_folder

    [loaded] = load_folder(folder, make_plugin_manager(None)).specs
    pool = McpPool()
    await pool.warm([loaded])
    # the benchmark's borrowing process names job "bench", routed to the spec's agent
    gateway = Gateway(pool, state_dir, lambda agent: loaded,
                      lambda pid, job_id: loaded.name if job_id == "bench" else None)
    await gateway.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await gateway.aclose()
    await pool.aclose()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
