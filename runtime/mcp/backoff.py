"""How long a connection waits before trying a server that is down again."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
# A server must stay up this long before a loss resets the backoff: one that dies
# right after every start is a crash loop, retried ever more slowly.
STABLE_AFTER = 10.0
# Kept for the log and for tests: a crash loop slowing down shows in these.
KEEP_DELAYS = 100


class Backoff:
    """Jittered exponential backoff: each wait doubles up to ``maximum``; a server
    that was up for ``stable_after`` seconds before it was lost starts again from
    ``start``."""

    def __init__(
        self, start: float = BACKOFF_START, maximum: float = BACKOFF_MAX, *,
        stable_after: float = STABLE_AFTER,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.start, self.maximum, self.stable_after = start, maximum, stable_after
        self._clock, self._jitter = clock, jitter
        self.base = start  # the next wait, before jitter
        # the waits since the server was last stable (latest KEEP_DELAYS)
        self.delays: list[float] = []
        self._up_since = 0.0

    def next_delay(self) -> float:
        """The wait before the next attempt; the one after it doubles."""
        delay = self.base * self._jitter(0.8, 1.2)  # jitter: crash-looping servers are not hammered in step
        self.base = min(self.base * 2, self.maximum)
        self.delays.append(delay)
        del self.delays[:-KEEP_DELAYS]
        return delay

    def up(self) -> None:
        """The server answered: its stable time starts now."""
        self._up_since = self._clock()

    def lost(self) -> None:
        """The server went down after being up: when it had been stable, the first
        retry is quick again and the new outage's first retries are logged again."""
        if self._clock() - self._up_since >= self.stable_after:
            self.base = self.start
            self.delays.clear()
