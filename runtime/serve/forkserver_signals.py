"""Imported only by the forkserver that starts the job processes (first of livekit's
``preload_modules``): it ignores SIGTERM and SIGINT, as livekit's job processes do.

serve drains on SIGTERM, then closes its job processes through livekit's pipe (and
SIGKILLs them on a hurried stop); the forkserver ends by itself when serve does. But a
SIGTERM sent to serve's whole process group (systemd's default KillMode, `timeout`,
the shell's `kill %1`) also reached the forkserver, which died at once: every job
process that ended after it had no exit status to report (multiprocessing reads 255),
and livekit logged "process exited with non-zero exit code 255" at each clean stop.

``SERVE_PID`` guards the import: in serve itself (a stray import) nothing changes, so
serve's own SIGTERM handling can never be switched off by this module.
"""

from __future__ import annotations

import os
import signal

SERVE_PID = "VOICE_RUNTIME_SERVE_PID"  # set by serve before the forkserver starts

if os.environ.get(SERVE_PID) not in (None, str(os.getpid())):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
