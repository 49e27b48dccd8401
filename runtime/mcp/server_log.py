"""A server's ``notifications/message`` (MCP logging) in our log: at the level the
server gave (mapped onto Python's), redacted like everything else the server says,
made printable, cut to ``MAX_CHARS``, and at most ``PER_SECOND`` lines a second per
server; the rest are counted and reported in one line ("N log messages dropped"),
so a chatty or hostile server cannot flood serve's log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from ..core.terminal import printable

log = logging.getLogger("voice_runtime.mcp.server_log")

PER_SECOND = 20
MAX_CHARS = 1000
# RFC 5424's eight levels, as the MCP spec names them
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL, "alert": logging.CRITICAL,
          "emergency": logging.CRITICAL}


class ServerLog:
    """One server's log lines, rate-limited. ``callback`` is the SDK's logging_callback."""

    def __init__(self, server: str, redact: Callable[[str], str], *, per_second: int = PER_SECOND,
                 clock: Callable[[], float] | None = None) -> None:
        self.server = server
        self._redact = redact
        self.per_second = per_second
        self._clock = clock
        self._window = float("-inf")
        self._in_window = 0
        self.dropped = 0
        self._flush: asyncio.TimerHandle | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def callback(self, params: Any) -> None:
        self.heard(getattr(params, "level", "info"), getattr(params, "logger", None), getattr(params, "data", None))

    def heard(self, level: str, logger: str | None, data: Any) -> None:
        now = self._now()
        if now - self._window >= 1.0:
            self._report_dropped()
            self._window, self._in_window = now, 0
        if self._in_window >= self.per_second:
            self.dropped += 1
            if self._flush is None:  # a burst then silence still gets its line
                with_loop = asyncio.get_running_loop()
                self._flush = with_loop.call_later(max(0.0, self._window + 1.0 - now), self._report_dropped)
            return
        self._in_window += 1
        text = data if isinstance(data, str) else json.dumps(data, default=str)
        text = printable(self._redact(text))
        if len(text) > MAX_CHARS:
            text = text[:MAX_CHARS] + f"... [{len(text)} characters]"
        source = f" ({printable(self._redact(str(logger)))[:80]})" if logger else ""
        log.log(LEVELS.get(str(level), logging.INFO), "MCP server %s%s: %s", self.server, source, text)

    def _report_dropped(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self.dropped:
            log.warning("MCP server %s: %d log messages dropped (more than %d a second)",
                        self.server, self.dropped, self.per_second)
            self.dropped = 0
