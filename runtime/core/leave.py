"""Leaving the process at once, its output flushed: Python's own exit joins every
non-daemon thread and finalizes every module, which after livekit's job pool was torn
down mid-start (a hurried stop) took 1-3 s more and, with a thread some library left
blocked, for ever."""

from __future__ import annotations

import logging
import os
import sys


def leave_now(code: int) -> None:
    """Flush the logs and the standard streams, then ``os._exit(code)``: for a caller
    that has done all its own cleanup."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)
