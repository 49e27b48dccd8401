"""No MCP server process outlives ``serve``.

The mcp SDK (2.3.0) starts every stdio server as the leader of a new session and
process group, and on a clean close it shuts stdin, waits, then SIGTERMs and
SIGKILLs the group. That close never runs when the process that owns the
connection dies first: a job process killed by livekit (or by a second SIGTERM),
or serve cut short. The server's parent then becomes PID 1, and a server that
ignores stdin EOF runs for ever with the spec's expanded headers and env.

Two things close that gap on Linux. ``serve`` becomes a child subreaper, so an
orphaned server is re-parented to serve instead of PID 1 and stays findable; and
on every exit path serve stops each process group led by one of its descendants
(stdio servers are the only session leaders below it: job processes, the
forkserver and the resource tracker share serve's session).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time

log = logging.getLogger("voice_runtime.serve")

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (Linux >= 3.4)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def server_groups() -> set[int]:
    """Process groups led by a descendant that started its own session: the stdio
    MCP servers of serve and of its job processes, orphaned or not."""
    import psutil

    groups = set()
    mine = os.getsid(0)
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(OSError, psutil.Error):
            sid = os.getsid(child.pid)
            if sid != mine and sid == child.pid:
                groups.add(child.pid)
    return groups


def kill_server_groups() -> int:
    """SIGKILL every such group at once, without waiting (a hurried stop)."""
    import psutil

    try:
        groups = server_groups()
    except (OSError, psutil.Error):
        return 0
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    return len(groups)


def kill_job_processes() -> int:
    """SIGKILL every descendant that shares serve's session: job processes, a process
    still starting, the forkserver that starts them (a hurried stop). The resource
    tracker is spared: it frees what the killed processes leave behind. The forkserver
    is killed only once it has no child left: it is what reports each job process's
    exit status to livekit, and killed first it reported none (livekit logged "process
    exited with non-zero exit code 255" for every call cut); one with no child is
    still preloading (or idle), and a start waiting on it would wait for the preload."""
    import psutil

    killed = 0
    mine = os.getsid(0)
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    forkservers = []
    for child in children:
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(child.pid) != mine:
                continue
            command = " ".join(child.cmdline())
            if "resource_tracker" in command:
                continue
            if "multiprocessing.forkserver" in command and child.ppid() == os.getpid():
                forkservers.append(child)
                continue
            child.kill()
            killed += 1
    for forkserver in forkservers:
        with contextlib.suppress(OSError, psutil.Error):
            if not forkserver.children():
                forkserver.kill()
                killed += 1
    return killed


def stop_server_groups(grace: float = 2.0) -> int:
    """SIGTERM every such group, SIGKILL what is left after ``grace`` seconds, and
    reap what was ours. Returns how many groups had to be stopped."""
    import psutil

    try:
        groups = server_groups()
    except (OSError, psutil.Error):
        return 0
    if not groups:
        return 0
    members = _members(groups)
    live = [p for p in members if _running(p)]
    if live:
        for pgid in groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGTERM)
        _, alive = psutil.wait_procs(live, timeout=grace)
        if alive:
            for pgid in groups:
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=2.0)
        log.info("stopped %d MCP server process group(s) left behind by ended calls", len(groups))
    _reap(groups)  # the dead (killed by a hurried stop, say) are reaped all the same
    return len(groups) if live else 0


def _running(proc: object) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.Error:
        return False


def _members(groups: set[int]) -> list[object]:
    import psutil

    out = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) in groups:
                out.append(proc)
    return out


def _reap(pids: set[int]) -> None:
    """Orphans re-parented to us become our zombies when they die."""
    deadline = time.monotonic() + 0.5
    for pid in pids:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break  # not ours, or already reaped (psutil's wait did it)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.01)
