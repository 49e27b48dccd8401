"""Running a fake on its own (``python -m tests.fakes.<name> --port N``): serve until
interrupted, and say on stdout where (one line, so a script can read it)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any


def run_standalone(fake: Any, port: int, describe: Callable[[Any], str]) -> None:
    async def serve() -> None:
        await fake.start(port)
        print(describe(fake), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await fake.stop()

    try:
        asyncio.run(serve())
    except OSError as exc:  # the port is taken
        sys.exit(f"cannot serve on port {port}: {exc.strerror or exc}")
