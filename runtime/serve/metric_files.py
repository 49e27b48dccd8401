"""The Prometheus folder serve shares with its job processes (PROMETHEUS_MULTIPROC_DIR).

prometheus_client's multiprocess mode gives every process files of its own
(``counter_<pid>.db``, ``histogram_<pid>.db``, ``gauge_<mode>_<pid>.db``) and reads
every one of them on each scrape. A job process serves one call and exits, so left
alone the folder grew by three files a call: 864 files after 300 calls, and a scrape
took 41 ms at ~290 calls and 1.3 s at ~8,700 (Prometheus gives up at 10 s, near 60 k
calls). When serve sees a job process end, ``retire`` folds its files away:

- its live gauges (``voice_runtime_sessions_current``) are removed, as
  ``prometheus_client.multiprocess.mark_process_dead`` does: a process that is gone
  holds no session, however it ended (a SIGKILLed job never decremented its own);
  so are its ``all`` gauges, whose series name the pid and would stay for ever;
- its counters, histograms and other gauges are combined into one archive file per
  kind (``counter_archive.db``, ...), written with prometheus_client's own
  ``MmapedDict`` and swapped in with a rename; then its files are removed.

``collect`` and ``retire`` take one lock: a scrape sees the ended process's files or
the archive holding their values, never both (a double count) nor neither (a total
going down). The folder holds the archive and the files of the processes alive now,
however many calls were served.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger("voice_runtime.serve")

ENV = "PROMETHEUS_MULTIPROC_DIR"
ARCHIVE = "archive"  # in place of a pid: prometheus_client reads "gauge_max_archive.db" as pid "archive"


class MetricFiles:
    """The folder, read for scrapes and tidied as job processes end."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> MetricFiles | None:
        folder = os.environ.get(ENV)
        return cls(folder) if folder else None

    def collect(self) -> Iterable[Any]:
        """Every process's values merged, as prometheus_client's MultiProcessCollector
        does, over the folder and the files serve sheltered in subfolders of it
        (``shelter``)."""
        from prometheus_client.multiprocess import MultiProcessCollector

        with self._lock:
            files = glob.glob(os.path.join(self.folder, "**", "*.db"), recursive=True)
            return MultiProcessCollector.merge(files, accumulate=True)

    def retire(self, pid: int) -> None:
        """Fold away the files of process ``pid``, which has ended (see the module)."""
        suffix = f"_{pid}.db"
        with self._lock:
            folds: dict[str, list[str]] = {}
            for path in glob.glob(os.path.join(self.folder, f"*{suffix}")):
                kind = os.path.basename(path)[: -len(suffix)]  # "counter", "gauge_livesum", ...
                mode = kind.partition("_")[2]
                if kind.startswith("gauge_") and (mode.startswith("live") or mode == "all"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                else:
                    folds.setdefault(kind, []).append(path)
            for kind, paths in folds.items():
                try:
                    _fold(os.path.join(self.folder, f"{kind}_{ARCHIVE}.db"), paths, kind.partition("_")[2])
                except (OSError, RuntimeError) as exc:  # a full disk; a torn file (RuntimeError)
                    # the files stay as they are: counted, only not folded
                    log.warning("could not fold the metrics of ended process %d (%s): %s", pid, kind, exc)


def _fold(archive: str, paths: list[str], mode: str) -> None:
    """Combine ``paths`` into ``archive`` (a new file renamed over the old one), then
    remove them. The caller holds the lock that scrapes take."""
    from prometheus_client.mmap_dict import MmapedDict

    values: dict[str, tuple[float, float]] = {}
    for path in ([archive] if os.path.exists(archive) else []) + paths:
        for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path):
            seen = values.get(key)
            values[key] = (value, timestamp) if seen is None else _combine(mode, seen, (value, timestamp))
    tmp = f"{archive}.tmp"  # not *.db: a scrape never reads it
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    merged = MmapedDict(tmp)
    try:
        for key, (value, timestamp) in values.items():
            merged.write_value(key, value, timestamp)
    finally:
        merged.close()
    os.replace(tmp, archive)
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _combine(mode: str, a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """Two processes' values of one series, as the collector would combine them
    (``mode``: a gauge's multiprocess mode; empty for counters and histograms, which add)."""
    if mode == "max":
        return max(a, b, key=lambda v: v[0])
    if mode == "min":
        return min(a, b, key=lambda v: v[0])
    if mode == "mostrecent":
        return max(a, b, key=lambda v: v[1])
    return (a[0] + b[0], max(a[1], b[1]))


def shelter() -> None:
    """livekit's ``AgentServer.run()`` deletes every file in PROMETHEUS_MULTIPROC_DIR.
    Moving the files into a fresh subfolder first keeps the counts of jobs so far
    (counters written before the hub started, by a test or a restarted pool); a
    running process keeps writing to its file, moved or not (it is mmapped)."""
    folder = os.environ.get(ENV)
    if not folder or not os.path.isdir(folder):
        return
    files = [f for f in os.listdir(folder) if f.endswith(".db")]
    if not files:
        return
    kept = os.path.join(folder, "kept", str(time.time_ns()))
    os.makedirs(kept, exist_ok=True)
    for name in files:
        try:
            os.replace(os.path.join(folder, name), os.path.join(kept, name))
        except OSError:
            log.warning("could not keep metrics file %s", name, exc_info=True)
