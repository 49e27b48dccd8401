"""Filler speech for slow tools, and what the agent says when a call times out.

livekit 1.8.9 has nothing for this: while a function tool runs, the caller hears
silence. ``Fillers.guard`` runs around each MCP call of a session: when the call
has not returned after ``filler.after_ms`` it has the agent say the next filler line
(pipeline: ``session.say`` through the TTS; realtime: the model is asked to say it),
without waiting for the line (the call goes on), again at most every ``every_ms``
while the call runs. With ``say_progress`` the server's own words (a progress
notification's message, an MCP task's status message) are said instead of the next
line when they are new, at most one every ``PROGRESS_EVERY_S``. A result that arrives during a filler waits for it to finish,
or cuts it (``on_result: interrupt``). The caller speaking over a filler cancels the
call (livekit would let it run on). A call that times out with ``timeout_say`` set
makes the agent say that line, and the model gets the failure without being asked
to explain it too (it would say the same thing twice).

The lines are agent speech in the chat history (``session.say`` adds them), counted in
``voice_runtime_tool_fillers_total{agent,server,tool}`` and told to the session's
listeners as ``("filler", {...})`` (``chat`` prints them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..mcp import progress

if TYPE_CHECKING:
    from ..spec.models import Filler, McpServerBase
    from ..observe.tool_calls import Listener

log = logging.getLogger("voice_runtime.fillers")

# the server's status lines are said at most this often (a server may send dozens a second)
PROGRESS_EVERY_S = 3.0


@dataclass(frozen=True)
class ToolVoicePlan:
    """The filler and timeout line that apply to one tool (per-tool keys win)."""

    filler: Filler | None
    timeout_say: str | None


def voice_plan(server: McpServerBase, tool: str) -> ToolVoicePlan | None:
    """The settings for ``tool`` (its name on the server): its own entry under the
    server's ``tools``, else the server's; None when neither says anything."""
    own = server.tools.get(tool)
    filler = own.filler if own is not None and own.filler is not None else server.filler
    timeout_say = own.timeout_say if own is not None and own.timeout_say is not None else server.timeout_say
    if filler is None and timeout_say is None:
        return None
    return ToolVoicePlan(filler, timeout_say)


# says one line in the session as it is now; returns livekit's SpeechHandle, or None
# when there is no session to speak in
Speak = Callable[[str], Any]


def speak_in(session: Any, mode: str, line: str) -> Any:
    """Say ``line`` as the agent. A pipeline speaks it through its TTS; a realtime
    model has no TTS, so it is asked to say it (it then lands in the history as its
    own words)."""
    if session is None:
        return None
    if mode == "realtime":
        return session.generate_reply(instructions=f"Say exactly this to the caller and nothing else: {line}")
    return session.say(line)


class Fillers:
    """One session's fillers: who speaks, who listens, what is counted."""

    def __init__(self, agent: str, speak: Speak, listeners: list[Listener],
                 count: Callable[[str, str, str], None] | None = None,
                 servers: dict[int, McpServerBase] | None = None) -> None:
        self.agent = agent
        self._speak = speak
        self._listeners = listeners
        # this session's own server blocks, by id() of the connection serving them: a
        # pooled connection may have been opened for another spec with other voice keys
        self._servers = servers or {}
        if count is None:
            from ..observe.metrics import count_filler

            count = count_filler
        self._count = count

    def plan_for(self, conn: Any, tool: str) -> ToolVoicePlan | None:
        """The plan for ``tool`` of the server ``conn`` serves, as this session's spec says."""
        return voice_plan(self._servers.get(id(conn), conn.server), tool)

    def _say(self, line: str, *, server: str, tool: str, kind: str) -> Any:
        try:
            handle = self._speak(line)
        except RuntimeError as exc:  # the session is closing: nobody to talk to
            log.debug("filler not said: %s", exc)
            return None
        if kind != "timeout":  # a status line said while the call runs is a filler too
            self._count(self.agent, server, tool)
        for listener in self._listeners:
            listener("filler", {"server": server, "tool": tool, "text": line, "kind": kind})
        return handle

    async def guard(self, server: str, tool: str, plan: ToolVoicePlan | None, call: Awaitable[Any],
                    is_timeout: Callable[[BaseException], bool]) -> Any:
        """Await ``call`` (a tool call), speaking as ``plan`` says while it runs.
        ``is_timeout`` tells a timed-out call's exception from other failures."""
        if plan is None:
            return await call
        from livekit.agents.llm import ToolResult

        news = _News()
        if plan.filler is not None and plan.filler.say_progress:
            with progress.listening(news.tell):  # the call's task reads the listener when it starts
                task = asyncio.ensure_future(call)
        else:
            task = asyncio.ensure_future(call)
        speaking: Any = None
        try:
            await asyncio.sleep(0)  # the call starts (and is recorded as started) before after_ms counts
            if plan.filler is not None:
                speaking = await self._fill(task, plan.filler, server, tool, news)
            try:
                result = await asyncio.shield(task)
            except Exception as exc:
                if plan.timeout_say is None or not is_timeout(exc):
                    raise
                _interrupt(speaking)
                self._say(plan.timeout_say, server=server, tool=tool, kind="timeout")
                # the model keeps the failure in its history, but the caller has been told
                return ToolResult(f"{exc} The caller was told: {plan.timeout_say}", reply_required=False)
            if speaking is not None and not speaking.done():
                if plan.filler is not None and plan.filler.on_result == "interrupt":
                    _interrupt(speaking)
                else:
                    await speaking.wait_for_playout()
            return result
        except _CallerInterrupted:
            # livekit lets a tool run on when the caller talks over the agent while it
            # runs; the caller cutting the filler short has moved on, so the call is
            # cancelled (the MCP SDK tells the server) and their new turn is answered
            task.cancel()
            await asyncio.wait([task])
            return ToolResult("The caller interrupted; the call was cancelled.", reply_required=False)
        except asyncio.CancelledError:
            task.cancel()  # the session cancelled the tool: the MCP SDK tells the server
            _interrupt(speaking)
            raise

    async def _fill(self, task: asyncio.Future[Any], filler: Filler, server: str, tool: str, news: _News) -> Any:
        """Say filler lines (or the server's news) until ``task`` is done; returns the
        last line's handle. Raises _CallerInterrupted when the caller cuts a line short."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        due = started + filler.after_ms / 1000
        next_news = started + filler.after_ms / 1000  # a fast call says nothing, news or not
        speaking: Any = None
        said = 0
        while True:
            waits: set[asyncio.Future[Any]] = {task}
            waiter = None
            if speaking is not None and not speaking.done():
                waiter = asyncio.ensure_future(speaking.wait_for_playout())
                waits.add(waiter)
            wake = min(due, next_news) if news.latest is not None else due
            timeout = None if wake == float("inf") or waiter is not None else max(0.0, wake - loop.time())
            heard = asyncio.ensure_future(news.arrived.wait())
            waits.add(heard)
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            heard.cancel()
            news.arrived.clear()
            if waiter is not None:
                waiter.cancel()
            if task.done():
                return speaking
            if speaking is not None and speaking.done() and speaking.interrupted:
                raise _CallerInterrupted
            if speaking is not None and not speaking.done():
                continue
            now = loop.time()
            if news.latest is not None and now >= next_news:
                line, news.latest = news.latest, None
                speaking = self._say(line, server=server, tool=tool, kind="progress")
                next_news = now + PROGRESS_EVERY_S
                # the server's line stands for the next filler line, not beside it
                due = now + filler.every_ms / 1000 if filler.every_ms is not None else float("inf")
            elif now >= due:
                speaking = self._say(filler.say[said % len(filler.say)], server=server, tool=tool, kind="filler")
                said += 1
                due = now + filler.every_ms / 1000 if filler.every_ms is not None else float("inf")


class _News:
    """The newest thing the server said about the call and not yet said to the caller
    (older unsaid lines are stale: only the latest counts)."""

    def __init__(self) -> None:
        self.latest: str | None = None
        self._last_told: str | None = None
        self.arrived = asyncio.Event()

    def tell(self, message: str) -> None:
        if message == self._last_told:  # a status polled again, unchanged
            return
        self._last_told = self.latest = message
        self.arrived.set()


class _CallerInterrupted(Exception):
    """The caller spoke over a filler line."""


def _interrupt(handle: Any) -> None:
    if handle is None or handle.done():
        return
    try:
        handle.interrupt(force=True)
    except Exception:  # noqa: BLE001 - already finished or the session is closing
        log.debug("filler interrupt failed", exc_info=True)
