"""Single-flight builds of the operator port's documents (/status, the status page,
/metrics).

Each of them is built from all of serve's state on serve's event loop: with 400
agents one /status costs ~12 ms, and 600 concurrent requests once held /healthz
for 7.5 s while each built its own copy. Requests that arrive together now share
one build: a request waits for the first build that STARTS after it arrived, so
it never gets data older than itself; at most one build of a document runs and
one is queued (joined by every request that arrives meanwhile), and between two
builds the loop answers whatever else is waiting (probes first of all).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class _Flight:
    def __init__(self) -> None:
        self.queued: asyncio.Future[Any] | None = None  # the next build, not started: requests join it
        self.runner: asyncio.Task[None] | None = None


class Coalescer:
    """Builds by key (the document, and for /status its ``?agent=`` filter), counted
    per document so /metrics shows how many requests each build served."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight] = {}  # only keys with a build queued or running
        self.requests: dict[str, int] = {}
        self.builds: dict[str, int] = {}

    async def get(self, document: str, key: Hashable, build: Callable[[], Awaitable[Any]]) -> Any:
        """The result of a build of ``key`` that starts after this call; ``build`` is
        used if this call has to queue one (calls with one key pass the same build)."""
        self.requests[document] = self.requests.get(document, 0) + 1
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
        if flight.queued is None:
            flight.queued = asyncio.get_running_loop().create_future()
            if flight.runner is None:
                flight.runner = asyncio.create_task(self._run(document, key, flight, build))
        # shielded: a client that hangs up must not cancel the build the others wait for
        return await asyncio.shield(flight.queued)

    async def _run(self, document: str, key: Hashable, flight: _Flight,
                   build: Callable[[], Awaitable[Any]]) -> None:
        waiting: asyncio.Future[Any] | None = None
        try:
            while flight.queued is not None:
                # requests whose bytes arrived in the same loop iteration join this build,
                # and what else became ready (a /healthz) is answered before it
                await asyncio.sleep(0)
                waiting, flight.queued = flight.queued, None
                self.builds[document] = self.builds.get(document, 0) + 1
                try:
                    waiting.set_result(await build())
                except Exception as exc:  # every waiter gets the error, as it would have alone
                    waiting.set_exception(exc)
                    waiting.add_done_callback(_retrieved)  # no "never retrieved" noise if all hung up
        finally:
            # cancelled (serve stopping): what is queued or being built fails, not hangs
            for left in (waiting, flight.queued):
                if left is not None and not left.done():
                    left.cancel()
            flight.runner = flight.queued = None
            del self._flights[key]


def _retrieved(future: asyncio.Future[Any]) -> None:
    future.exception()
