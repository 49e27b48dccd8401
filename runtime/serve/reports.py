"""Delivering the spooled call reports (``observe/report_spool.py``) from serve.

One task in serve's loop looks at the spool every ``POLL_S`` and tries each entry that
is due: a file target gets ``<id>.json`` written durably into its folder; a webhook
target a POST signed the Standard Webhooks way. Bounded: one attempt lasts at most the
target's ``timeout_s``, at most ``MAX_RESPONSE_BYTES`` of the answer are read, and
redirects are never followed (the signed report goes to the URL the spec names, or
nowhere). 2xx delivers; 408, 429, 5xx and network errors retry with exponential
backoff; any other answer (4xx, 3xx) is permanent: the entry moves to ``dead/``, logged
and counted. The spool outlives serve: a serve started on the same folder (after a
SIGKILL too) delivers what its predecessor left.

A call whose job process died without writing its report (SIGKILL, the memory limit,
serve itself killed) left a checkpoint (``Spool.orphans``): the same task spools the
report it holds, marked ``job_killed``, with the id the job would have used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from ..observe.report_spool import Entry, Spool, sign, write_durably

log = logging.getLogger("voice_runtime.reports")
POLL_S = 0.5
MAX_RESPONSE_BYTES = 64 * 1024
RETRYABLE = {408, 429}
# deliveries tried at once: a backlog that falls due together (a receiver back after
# an outage) goes out in batches instead of thousands of attempts queueing for
# aiohttp's 100 connections until their timeout_s runs out
MAX_BATCH = 64
PRUNE_EVERY_S = 60.0  # dead letters age out between two dead-letterings too


class Permanent(Exception):
    """The receiver refused the report for good."""


class Deliverer:
    def __init__(self, spool: Spool, on_report: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.spool = spool
        self.on_report = on_report  # every report serve writes itself (a killed job's): the plugins' hook
        self._task: asyncio.Task[None] | None = None
        self._http: Any = None
        self._pruned_at = float("-inf")  # when dead/ was last held to the retention (monotonic)

    async def start(self) -> None:
        import aiohttp

        from ..observe.metrics import observe_dead_removed

        for reason in ("age", "count", "size"):  # exported from the start: the alert on dead letters reads it
            observe_dead_removed(reason, 0)
        self._http = aiohttp.ClientSession()
        self._task = asyncio.ensure_future(self._run())
        pending = self.spool.count()
        if pending:
            log.info("%d call report deliveries pending in %s (from a previous serve or this one)", pending,
                     self.spool.folder)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.once()
            except Exception:  # noqa: BLE001 - delivery must outlive a bad entry
                log.exception("call report delivery failed")
            await asyncio.sleep(POLL_S)

    async def once(self) -> None:
        from ..observe.metrics import set_reports_pending

        # the spool's files are read, written and fsync'd in a thread: on serve's loop
        # a large backlog stalled /healthz, /metrics and LiveKit's worker connection
        await asyncio.to_thread(self.report_killed_calls)
        pending, due = await asyncio.to_thread(self.spool.due, MAX_BATCH)
        set_reports_pending(pending)
        results = await asyncio.gather(*(self._deliver(e) for e in due), return_exceptions=True)
        await asyncio.to_thread(self._record, due, results)

    def prune(self) -> None:
        """dead/ held to the retention; what went is logged in one line and counted."""
        from ..observe.metrics import observe_dead_removed

        self._pruned_at = time.monotonic()
        removed = self.spool.prune_dead()
        if not removed:
            return
        keep = self.spool.retention
        for reason, count in removed.items():
            observe_dead_removed(reason, count)
        why = {"age": f"dead longer than {keep.max_age_s / 86400:g} day(s) (--report-dead-max-days)",
               "count": f"beyond the newest {keep.max_count} (--report-dead-max)",
               "size": f"beyond {keep.max_bytes / 2**20:g} MiB in all (--report-dead-max-mb)"}
        log.warning("removed %d undeliverable call report(s) from %s, oldest first: %s", sum(removed.values()),
                    self.spool.folder / "dead", "; ".join(f"{n} {why[r]}" for r, n in sorted(removed.items())))

    def _record(self, due: list[Entry], results: list[BaseException | None]) -> None:
        from ..observe.metrics import set_reports_pending

        dead = False
        for entry, result in zip(due, results):
            try:
                dead = self._record_one(entry, result) or dead
            except OSError as exc:  # the spool's volume full or gone: the entry waits in memory meanwhile
                log.error("call report %s: the spool %s cannot record the delivery attempt (%s); the next attempt "
                          "waits as if it had", entry.data["id"], self.spool.folder, exc.strerror or exc)
        if dead or time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            try:
                self.prune()
            except OSError as exc:
                log.error("the spool's dead/ folder %s cannot be pruned: %s", self.spool.folder / "dead",
                          exc.strerror or exc)
        set_reports_pending(self.spool.count(), self.spool.count("dead"))

    def _record_one(self, entry: Entry, result: BaseException | None) -> bool:
        """Records one attempt; True when the entry was dead-lettered."""
        from ..observe.metrics import observe_report

        where = _where(entry)
        if result is None:
            self.spool.delivered(entry)
            observe_report("delivered")
            log.info("call report %s delivered to %s (attempt %d)", entry.data["id"], where,
                     int(entry.data.get("attempts", 0)) + 1)
        elif isinstance(result, Permanent) or self.spool.expired(entry):
            self.spool.dead(entry, str(result))
            observe_report("dead")
            log.error("call report %s could not be delivered to %s: %s; kept in %s", entry.data["id"], where,
                      result, self.spool.folder / "dead")
            return True
        else:
            self.spool.retry_later(entry, str(result))
            observe_report("retried")
            log.warning("call report %s not delivered to %s (attempt %d): %s; retrying", entry.data["id"],
                        where, int(entry.data["attempts"]), result)
        return False

    def report_killed_calls(self) -> None:
        """The report of every call whose job process is gone without writing it, from
        what its checkpoint holds (transcript, tool calls... up to its last event)."""
        for path, saved in self.spool.orphans():
            report = dict(saved.get("report") or {})
            if not report.get("id"):
                path.unlink(missing_ok=True)
                continue
            ended = time.time()
            report.update(ended_at=ended, duration_s=round(ended - float(report.get("started_at") or ended), 3),
                          end_reason="job_killed",
                          end_detail="the call's job process ended without finishing the call")
            log.warning("call %s of agent %s: its job process ended without a report; reporting it as job_killed",
                        report.get("call_id"), report.get("agent"))
            if self.on_report is not None:
                try:
                    self.on_report(report)
                except Exception:  # noqa: BLE001 - the report is spooled whatever a plugin does
                    log.exception("the call report hook failed")
            self.spool.add(report, list(saved.get("targets") or []))
            path.unlink(missing_ok=True)

    async def _deliver(self, entry: Entry) -> None:
        target, report = entry.data["target"], entry.data["report"]
        body = json.dumps(report).encode()
        if "file" in target:
            folder = Path(target["file"]["dir"])
            await asyncio.to_thread(_write_file, folder, f"{report['id']}.json", body)
            return None
        hook = target["webhook"]
        import aiohttp

        stamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": report["id"], "webhook-timestamp": str(stamp),
                   "webhook-signature": sign(hook["secret"], report["id"], stamp, body)}
        try:
            async with self._http.post(hook["url"], data=body, headers=headers, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=float(hook.get("timeout_s", 10)))) as resp:
                await resp.content.read(MAX_RESPONSE_BYTES)  # bounded: the answer is not needed, only its status
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            said = _without_url(str(exc), hook["url"])
            raise RuntimeError(f"{type(exc).__name__}: {said}" if said else type(exc).__name__) from None
        if 200 <= status < 300:
            return None
        if status in RETRYABLE or status >= 500:
            raise RuntimeError(f"HTTP {status}")
        if 300 <= status < 400:
            raise Permanent(f"HTTP {status}: a redirect, not followed (the signed report goes only to its URL)")
        raise Permanent(f"HTTP {status}")


def _write_file(folder: Path, name: str, body: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_durably(folder / name, body)


def _where(entry: Entry) -> str:
    target = entry.data["target"]
    if "file" in target:
        return f"folder {target['file']['dir']}"
    return _shown_url(target["webhook"]["url"])


def _shown_url(url: str) -> str:
    """The URL as logs show it: no userinfo (``user:password@``) and no query, which
    may hold credentials written as text, where redaction (of ``${VAR}`` values) cannot
    know them."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _without_url(text: str, url: str) -> str:
    """aiohttp's error text with the target's URL (as written, or as aiohttp's URL
    class re-encodes it, with or without userinfo: ``ClientResponseError`` ends in
    ``url='...'``) shown as ``_shown_url`` shows it."""
    from yarl import URL

    shown = _shown_url(url)
    forms = {url}
    try:
        parsed = URL(url)
        # aiohttp moves userinfo into an Authorization header: its errors name the URL without it
        for form in (parsed, parsed.with_user(None)):
            forms |= {str(form), form.human_repr()}
    except ValueError:  # not a URL aiohttp could parse: its text is still removed
        pass
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, shown)
    return text
