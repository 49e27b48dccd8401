"""Imported only by the forkserver that starts the job processes (first of livekit's
``preload_modules``): it ignores SIGTERM and SIGINT, as livekit's job processes do, and
the other signals serve handles (SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2).

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

# every signal serve handles itself (stop, reload, logged-and-ignored): sent to the whole
# group (a terminal closing sends SIGHUP to it), each would have killed the forkserver and,
# inherited, the job processes with their calls; livekit's job processes set their own
# SIGUSR1 handler (stack dumps) over this
GROUP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")

if os.environ.get(SERVE_PID) not in (None, str(os.getpid())):
    for name in GROUP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
