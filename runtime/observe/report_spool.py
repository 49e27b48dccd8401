"""The durable spool of call reports: written by a job when its call ends, delivered
by serve (``serve/reports.py``), kept across a serve that is SIGKILLed.

One file per (report, target) in ``pending/``, written whole (a temporary file,
fsync, rename, fsync of the folder) before any delivery is tried, so a crash at any
point leaves either no file or a complete one. A delivered entry is removed; one whose
receiver refuses it for good (4xx other than 408/429, a redirect) or that is still
undelivered after ``MAX_AGE_S`` moves to ``dead/``. Every report has a unique id
(``webhook-id``): delivery is at least once, receivers deduplicate.

``dead/`` is bounded (``Retention``, serve's ``--report-dead-max`` and
``--report-dead-max-days``): a receiver that refuses every report once filled it
until the pod's emptyDir limit evicted serve, and the pending reports with it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PENDING, DEAD, TMP, CALLS = "pending", "dead", "tmp", "calls"
BASE_DELAY_S = 1.0  # the first retry; then doubled
MAX_DELAY_S = 3600.0
MAX_AGE_S = 48 * 3600.0  # retried for at least 24 h (the floor), then dead-lettered
SPOOL_POINTER = "report-spool"  # in serve's state folder: where its job processes spool


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole, on disk, or does not exist."""
    tmp = path.parent.parent / TMP / f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}" \
        if path.parent.name in (PENDING, DEAD) else path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class Retention:
    """How much of ``dead/`` is kept (as Prometheus keeps its data by time and size):
    letters dead longer than ``max_age_s`` go, then the oldest beyond ``max_count`` or
    ``max_bytes`` in all; 0 turns a bound off."""

    max_count: int = 10_000
    max_age_s: float = 7 * 86400.0
    # a long call's report is larger than the ~20 KiB of a short one: the disk is what runs out
    max_bytes: int = 256 * 1024 * 1024


@dataclass
class Entry:
    path: Path
    data: dict[str, Any]

    @property
    def due(self) -> bool:
        return float(self.data.get("next_at", 0)) <= time.time()


class SpoolInUse(Exception):
    """Another live serve holds the spool: two delivering one spool would both report a
    killed job's call and both send each pending report."""

    def __init__(self, folder: Path, holder: str) -> None:
        super().__init__(f"the report spool {folder} is in use by another serve (pid {holder or '?'}); give this "
                         "serve its own --report-spool")


class Spool:
    def __init__(self, folder: Path, retention: Retention = Retention()) -> None:
        self.folder = folder
        self.retention = retention
        self._lock_fd: int | None = None
        # pending file name -> ((inode, size, mtime), next_at, attempts held in memory or None):
        # each version of an entry is parsed once for its schedule, not at every poll (see ``due``)
        self._schedule: dict[str, tuple[tuple[int, int, int], float, int | None]] = {}
        # the root too: mkdir(parents=True) made it with the default mode (0755), and
        # its listing names the calls (README: spool files are 0600 in 0700 folders)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in (PENDING, DEAD, TMP, CALLS):
            (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def hold(self) -> None:
        """Serve's claim on the spool for its lifetime (Prometheus locks its data folder
        the same way): a POSIX lock, released by the kernel when serve dies, even by
        SIGKILL, and never inherited by the processes it forks. Job processes write
        into the spool without it; only the delivering serve holds it."""
        import fcntl

        try:  # never through a symlink: serve would truncate what it points at
            fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise SpoolInUse(self.folder, f"? ({self.folder / '.lock'} cannot be used as the lock: "
                                          f"{exc.strerror or exc})") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise SpoolInUse(self.folder, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def add(self, report: dict[str, Any], targets: list[dict[str, Any]]) -> None:
        """One pending file per target, each on disk before this returns."""
        now = time.time()
        for n, target in enumerate(targets):
            entry = {"id": report["id"], "target": target, "attempts": 0, "created_at": now, "next_at": 0,
                     "last_error": None, "report": report}
            write_durably(self.folder / PENDING / f"{report['id']}.{n}.json", json.dumps(entry).encode())

    def checkpoint_path(self, call_id: str) -> Path:
        """Where a running call keeps its report so far (``session/call_report.py``)."""
        safe = call_id if _SAFE_NAME.fullmatch(call_id) else hashlib.sha256(call_id.encode()).hexdigest()[:32]
        return self.folder / CALLS / f"{safe}.{os.getpid()}.json"

    def orphans(self) -> list[tuple[Path, dict[str, Any]]]:
        """Checkpoints of calls whose job process is gone without writing their report
        (killed, or serve with it): ``(file, {"targets", "report"})``."""
        out = []
        for path in sorted((self.folder / CALLS).glob("*.json")):
            try:
                pid = int(path.name.rsplit(".", 2)[-2])
            except ValueError:
                continue
            if _alive(pid):
                continue
            try:
                out.append((path, json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # half-written when its process died: nothing to tell
        return out

    def due(self, limit: int) -> tuple[int, list[Entry]]:
        """How many deliveries are pending, and at most ``limit`` of those due now (the
        longest waiting first), read whole. Each version of an entry's file is parsed
        once for its schedule: parsing every entry at every poll, a backlog of 6,000
        reports (118 MB: a receiver down for a day) kept serve's loop busy 2 s of every
        2.5 s (/healthz p90 2.5 s). A file that is not an entry is skipped until it
        changes."""
        now, schedule, due = time.time(), {}, []
        try:
            listing = os.scandir(self.folder / PENDING)
        except OSError:  # the folder removed under serve: nothing is pending (as glob() says)
            return 0, []
        with listing:
            for item in listing:
                if not item.name.endswith(".json"):
                    continue
                try:
                    st = item.stat()
                except OSError:
                    continue  # delivered (or moved) meanwhile
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                known = self._schedule.get(item.name)
                if known is None or known[0] != stamp:
                    known = (stamp, _next_at(Path(item.path)), None)
                schedule[item.name] = known
                if known[1] <= now:
                    due.append((known[1], item.name))
        self._schedule = schedule
        out = []
        for _, name in sorted(due)[:limit]:
            path = self.folder / PENDING / name
            with contextlib.suppress(OSError, ValueError):
                entry = Entry(path, json.loads(path.read_text(encoding="utf-8")))
                held = schedule[name][2]
                if held is not None:  # its file could not be rewritten: the backoff goes on growing
                    entry.data["attempts"] = max(held, int(entry.data.get("attempts", 0)))
                out.append(entry)
        return len(schedule), out

    def count(self, sub: str = PENDING) -> int:
        return sum(1 for _ in (self.folder / sub).glob("*.json"))

    def backlog(self) -> dict[str, Any]:
        """What waits: pending deliveries (and since when), dead-lettered ones, calls
        running now (their checkpoints), for /status and the status page."""
        oldest = min((p.stat().st_mtime for p in (self.folder / PENDING).glob("*.json")), default=None)
        return {"pending": self.count(PENDING), "dead": self.count(DEAD), "calls_running": self.count(CALLS),
                "oldest_pending_at": oldest, "spool": str(self.folder)}

    def delivered(self, entry: Entry) -> None:
        entry.path.unlink(missing_ok=True)
        _fsync_dir(entry.path.parent)

    def retry_later(self, entry: Entry, error: str) -> None:
        attempts = int(entry.data.get("attempts", 0)) + 1
        delay = min(BASE_DELAY_S * 2 ** (attempts - 1), MAX_DELAY_S) * random.uniform(0.9, 1.1)
        entry.data.update(attempts=attempts, next_at=time.time() + delay, last_error=error)
        self._hold_until(entry, entry.data["next_at"])
        write_durably(entry.path, json.dumps(entry.data).encode())

    def dead(self, entry: Entry, error: str) -> None:
        entry.data.update(last_error=error, dead_at=time.time())
        self._hold_until(entry, float("inf"))  # tried again only by the next serve, if it cannot move
        write_durably(self.folder / DEAD / entry.path.name, json.dumps(entry.data).encode())
        self.delivered(entry)

    def prune_dead(self) -> dict[str, int]:
        """Removes the dead letters past the retention, oldest first (by when they were
        dead-lettered: the file's mtime); how many went, by reason (``age``, ``count``, ``size``)."""
        keep = self.retention
        letters = []
        try:
            listing = os.scandir(self.folder / DEAD)
        except OSError:
            return {}
        with listing:
            for item in listing:
                if item.name.endswith(".json"):
                    with contextlib.suppress(OSError):
                        st = item.stat()
                        letters.append((st.st_mtime, item.name, st.st_size))
        letters.sort()
        removed: dict[str, int] = {}
        left, size, oldest_kept = len(letters), sum(letter[2] for letter in letters), time.time() - keep.max_age_s
        for mtime, name, bytes_ in letters:  # oldest first: once one stays, every younger one does
            reason = ("age" if keep.max_age_s and mtime < oldest_kept
                      else "count" if keep.max_count and left > keep.max_count
                      else "size" if keep.max_bytes and size > keep.max_bytes else None)
            if reason is None:
                break
            with contextlib.suppress(FileNotFoundError):
                (self.folder / DEAD / name).unlink()
            left, size = left - 1, size - bytes_
            removed[reason] = removed.get(reason, 0) + 1
        return removed

    def _hold_until(self, entry: Entry, next_at: float) -> None:
        """When ``entry`` is next due and how often it was tried, kept in memory before its
        file is rewritten: a spool that cannot be written (its volume full) made the entry
        due again at the next poll, so its receiver got an attempt every half second, and
        the log a traceback each time, instead of the backoff (which must keep growing, so
        the attempts too, not only the time)."""
        try:
            st = os.stat(entry.path)
        except OSError:
            return
        self._schedule[entry.path.name] = ((st.st_ino, st.st_size, st.st_mtime_ns), next_at,
                                           int(entry.data.get("attempts", 0)))

    def expired(self, entry: Entry) -> bool:
        return time.time() - float(entry.data.get("created_at", 0)) > MAX_AGE_S


def _next_at(path: Path) -> float:
    """When an entry is due; never, for a file that is not an entry."""
    try:
        return float(json.loads(path.read_text(encoding="utf-8")).get("next_at", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return float("inf")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature (``webhook-signature``): HMAC-SHA256 over
    ``id.timestamp.body`` with the base64 key after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def spool_of(state_dir: Path) -> tuple[Spool, list[dict[str, Any]]] | None:
    """The spool serve named in its state folder and serve's own report targets
    (``serve --reports``), for a job process; None when serve has none (chat, tests)."""
    try:
        named = json.loads((state_dir / SPOOL_POINTER).read_text(encoding="utf-8"))
        folder = named["folder"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (Spool(Path(folder)), list(named.get("targets") or [])) if folder else None
