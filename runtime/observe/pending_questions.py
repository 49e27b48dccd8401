"""The server questions (MCP elicitation) waiting for a caller now, for serve's
status page: each job process writes its one pending question (or removes it) as
``questions/<pid>.json`` in the folder of serve's call journal (``call_journal.ENV``);
serve lists the files of processes still alive. What is written: agent, call,
server, the fields' names and when it was asked; never the server's message nor
an answer.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .call_journal import ENV

FOLDER = "questions"


def _path() -> Path | None:
    folder = os.environ.get(ENV)
    return Path(folder) / FOLDER / f"{os.getpid()}.json" if folder else None


def publish(agent: str, session_id: str, server: str | None, fields: list[str]) -> None:
    """This process's pending question (``server`` None: none is pending). Outside serve, nothing."""
    path = _path()
    if path is None:
        return
    try:
        if server is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"agent": agent, "session_id": session_id, "server": server, "fields": fields,
                       "asked_at": time.time()}, out)
        os.replace(tmp, path)  # serve never reads half a file
    except OSError:
        pass  # serve is gone or its folder too: the question itself is unaffected


def pending(journal: Path) -> list[dict[str, Any]]:
    """The questions pending in live job processes, oldest first; a dead process's file goes."""
    out = []
    for path in (journal / FOLDER).glob("*.json"):
        try:
            pid = int(path.stem)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            path.unlink(missing_ok=True)
            continue
        except PermissionError:
            pass  # alive, another user's
        try:
            out.append({**json.loads(path.read_text(encoding="utf-8")), "pid": pid})
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda q: q.get("asked_at") or 0)
