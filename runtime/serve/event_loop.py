"""The event loop serve and its job processes run: uvloop's when it is installed (a
dependency), asyncio's when the operator chooses it with
``VOICE_RUNTIME_EVENT_LOOP=asyncio``.

A call costs CPU in two places, serve's process (it relays the page's audio to the
job) and the call's job process (livekit's pipeline: a microphone frame every 20 ms,
a VAD window every 32 ms handed to a thread and back, the STT websocket's sends,
livekit's loop monitor ticking every 20 ms). Both are loops of small wake-ups; in
asyncio's pure-Python loop that overhead was ~40 % of a job's interpreter time
(benchmarks/profiles/), and uvloop runs the same callbacks from C. What a caller gets
does not change: the same code runs on the loop.

serve's own loop: ``loop_factory()`` for ``asyncio.Runner``. The job processes: livekit
makes their loop with ``asyncio.new_event_loop()`` (``ipc/proc_client.py``), which asks
the event loop policy, so the forkserver sets uvloop's policy before it forks them
(forkserver_loop.py). Jobs of the thread executor run in serve's process on loops
livekit makes in their threads: asyncio's (serve sets no policy of its own).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping

LOOP_ENV = "VOICE_RUNTIME_EVENT_LOOP"  # "uvloop" (the default) or "asyncio"


def loop_kind(environ: Mapping[str, str] = os.environ) -> str:
    """``uvloop`` unless the operator chose ``asyncio`` or uvloop is not installed."""
    if environ.get(LOOP_ENV, "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def loop_factory(environ: Mapping[str, str] = os.environ) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What ``asyncio.Runner(loop_factory=...)`` makes serve's loop with (None: asyncio's)."""
    if loop_kind(environ) != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop


def set_policy(environ: Mapping[str, str] = os.environ) -> str:
    """Make uvloop's policy the process's (the forkserver's, inherited by the job
    processes it forks); returns the loop chosen."""
    kind = loop_kind(environ)
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return kind
