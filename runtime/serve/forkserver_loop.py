"""Imported only by the forkserver that starts the job processes (one of livekit's
``preload_modules``): the job processes forked from it run their call on uvloop's
event loop (event_loop.py says why and how to keep asyncio's).

``SERVE_PID`` guards the import as in forkserver_signals.py: in serve itself (a stray
import) nothing changes.
"""

from __future__ import annotations

import os

from .event_loop import set_policy
from .forkserver_signals import SERVE_PID

if os.environ.get(SERVE_PID) not in (None, str(os.getpid())):
    set_policy()
