"""Watching ``agents.d/`` and ``plugins/``: when to reload, never how.

As uvicorn's watchfiles supervisor does, each batch of events is reduced to "the
folder may have changed"; the event kinds are ignored and the catalog re-stats
files itself. That is what makes editors' rename-saves and Kubernetes ConfigMap
``..data`` symlink swaps (where no visible file changes, only the link they go
through) come out as one change. A periodic scan catches events the watcher
missed (network filesystems, inotify limits). Triggers are coalesced: a burst of
saves settles into one reload, and reloads never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger("voice_runtime.reload")


def _relevant(change: object, path: str) -> bool:
    # editors' swap and backup files never hold a spec; everything else (hidden
    # `..data` links included) may
    name = Path(path).name
    return not (name.endswith(("~", ".swp", ".swx", ".tmp")) or name.startswith(".#") or name == "4913")


class Reloader:
    def __init__(
        self,
        folders: dict[str, Path],
        on_change: Callable[[set[str], str], Awaitable[None]],
        *,
        settle: float = 0.1,
        max_delay: float = 1.0,
        scan_interval: float = 10.0,
    ) -> None:
        """``folders``: kind ("specs", "plugins") -> folder. ``on_change(kinds,
        cause)`` runs the reload; it is never called twice at once."""
        self.folders = {k: f for k, f in folders.items() if f is not None}
        # set once each folder's watcher sees changes: what changed before that is for
        # the owner to read once (serve does, before it says it is ready)
        self.watching = {kind: asyncio.Event() for kind in self.folders}
        self.on_change = on_change
        self.settle = settle
        self.max_delay = max_delay
        self.scan_interval = scan_interval
        self._pending: set[str] = set()
        self._cause = ""
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def trigger(self, kinds: set[str], cause: str) -> None:
        waiting = bool(self._pending)
        self._pending |= kinds
        self._cause = self._cause or cause
        if not (waiting and cause == "scan"):  # a scan is no new write: it does not extend the settle window
            self._wake.set()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="reload")]
        for kind, folder in self.folders.items():
            self._tasks.append(asyncio.create_task(self._watch(kind, folder), name=f"watch-{kind}"))
        if self.scan_interval > 0:
            self._tasks.append(asyncio.create_task(self._scan(), name="scan"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []

    async def _watch(self, kind: str, folder: Path) -> None:
        import watchfiles

        absent = False
        while True:
            if not folder.exists():  # a plugins/ folder may be created later: look every second
                absent = True
                self.watching[kind].set()  # nothing to miss: its appearance is a change
                await asyncio.sleep(min(self.scan_interval or 1.0, 1.0))
                continue
            if absent:  # it appeared: what was written into it before the watch began is a change too
                absent = False
                self.trigger({kind}, "watch")
            # no debounce of watchfiles' own: our settle window does it
            changes = watchfiles.awatch(folder, watch_filter=_relevant, debounce=50, step=20,
                                        recursive=True, yield_on_timeout=False)
            step = asyncio.ensure_future(anext(changes))
            try:
                # the watcher registers its inotify watches in its first step: from then
                # on no change is missed (the owner re-reads once for what came before)
                await asyncio.sleep(0)
                self.watching[kind].set()
                while True:
                    await step
                    self.trigger({kind}, "watch")
                    step = asyncio.ensure_future(anext(changes))
            except StopAsyncIteration:
                pass
            except Exception as exc:  # noqa: BLE001 - the folder vanished; the scan still runs
                log.warning("watching %s stopped (%s); relying on the periodic scan", folder, exc)
                await asyncio.sleep(self.scan_interval or 1.0)
            finally:
                step.cancel()
                with contextlib.suppress(BaseException):
                    await changes.aclose()

    async def _scan(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval)
            # the catalog's stat cache makes an unchanged folder cheap to re-read
            self.trigger(set(self.folders), "scan")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            first = loop.time()
            # settle: wait until the writes stop (or max_delay passes), so a burst
            # of saves is one reload and the last write wins
            while True:
                self._wake.clear()
                remaining = self.max_delay - (loop.time() - first)
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=min(self.settle, remaining))
                except asyncio.TimeoutError:
                    break
            kinds, cause = self._pending, self._cause
            self._pending, self._cause = set(), ""
            self._wake.clear()
            try:
                await self.on_change(kinds, cause)
            except Exception:  # noqa: BLE001 - a reload bug must not stop future reloads
                log.exception("reload failed")
