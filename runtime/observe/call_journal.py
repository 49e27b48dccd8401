"""The recent tool calls of every job, for serve's status page.

A job process is not serve: its records reach serve the way its metrics do,
through a folder both share. ``serve`` names the folder in
``VOICE_RUNTIME_CALL_JOURNAL`` (inside its private state folder, 0700) before any
job process starts; each process appends one JSON line per finished call to its
own file there, and serve reads the newest lines when the page is asked for.
Only what a ``ToolCallRecord`` holds is written (an argument digest, never the
arguments; the result's size, never its text).

A job process serves one call, so each call would leave a file. When serve sees
a process end it folds that file into ``archive.jsonl`` (``retire``), which keeps
the newest ``KEEP`` calls of every ended process: the folder holds the archive and
the files of the processes alive now, whether or not anyone opens the page.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tool_calls import Sink, ToolCallRecord

ENV = "VOICE_RUNTIME_CALL_JOURNAL"
KEEP = 100  # calls the status page shows
ARCHIVE = "archive.jsonl"  # the newest KEEP calls of the processes that have ended
# a process file is rewritten to its newest KEEP lines once it passes this size,
# so a long-lived process (the thread executor: serve itself) stays bounded
_MAX_BYTES = 256 * 1024
_FIELDS = ("started_at", "agent", "session_id", "server", "tool", "outcome", "latency_ms", "result_chars", "error")


def sink_from_env() -> Sink | None:
    """The sink writing this process's calls to serve's journal; None outside serve."""
    folder = os.environ.get(ENV)
    return _Journal(Path(folder)) if folder else None


class _Journal:
    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{os.getpid()}.jsonl"

    def __call__(self, record: ToolCallRecord) -> None:
        line = json.dumps({k: getattr(record, k) for k in _FIELDS}, default=str) + "\n"
        try:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            # one write() of one line with O_APPEND: serve never reads half a line
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > _MAX_BYTES:
                _keep_newest(self.path)
        except OSError:
            pass  # serve is gone or its folder too: the call itself is unaffected


def _keep_newest(path: Path) -> None:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-KEEP:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def retire(folder: Path, pid: int) -> None:
    """Fold the file of process ``pid``, which has ended, into the archive (written
    whole, then renamed), keeping the newest ``KEEP`` calls; then remove it."""
    path = folder / f"{pid}.jsonl"
    try:
        ended = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return  # it made no tool call
    archive = folder / ARCHIVE
    try:
        kept = archive.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        kept = []
    calls = []
    for line in kept + ended[-KEEP:]:
        try:
            started = json.loads(line).get("started_at") or 0
        except (ValueError, AttributeError):
            continue  # a torn line (a full disk) is not worth keeping
        calls.append((float(started) if isinstance(started, (int, float)) else 0.0, line))
    calls.sort(key=lambda c: c[0])
    tmp = folder / (ARCHIVE + ".tmp")  # not *.jsonl: the page never reads it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for _, line in calls[-KEEP:])
    os.replace(tmp, archive)
    path.unlink(missing_ok=True)


def recent(folder: Path, limit: int = KEEP) -> list[dict[str, Any]]:
    """The newest ``limit`` calls over every process, newest first. Files of
    processes that can no longer hold one of them are removed."""
    try:
        files = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []
    calls: list[dict[str, Any]] = []
    for i, path in enumerate(files):
        if len(calls) >= limit:
            calls.sort(key=lambda c: c.get("started_at") or 0, reverse=True)
            del calls[limit:]
            if path.stat().st_mtime < (calls[-1].get("started_at") or 0):
                # this file (and every older one) was last written before the
                # oldest call shown: none of its calls can be shown again
                for stale in files[i:]:
                    stale.unlink(missing_ok=True)
                break
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines()[-limit:]:
            try:
                calls.append(json.loads(line))
            except ValueError:
                continue
    calls.sort(key=lambda c: c.get("started_at") or 0, reverse=True)
    return calls[:limit]
