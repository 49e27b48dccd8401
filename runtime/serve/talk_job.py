"""A browser call, in its job process (see talk.py for serve's side).

serve launches the call as a fake job (no LiveKit room) whose room metadata is
``{"talk": {"socket": ..., "token": ..., "max_call_seconds": ...}}``. The job
connects to serve's unix socket, says the token (serve relays that connection to
the page's WebSocket), and runs the agent with the page's microphone and
loudspeaker as livekit's ``session.input.audio`` / ``session.output.audio``
(browser_audio.py): everything behind them is the production session.

The page is told what it shows: the transcript (the session's conversation items
and the caller's interim transcripts), every tool call as the call record has it
(the runner's events: tool, arguments, outcome, latency), fillers, unbacked
claims, handoffs and fallbacks. Typed turns arrive as ``{"type": "text"}``
messages. The call ends when the page hangs up or goes away, or after
``max_call_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.error_text import error_text
from ..session.browser_audio import (AUDIO, MESSAGE, VAD_WINDOW_SAMPLES, BrowserLink, FrameError, browser_mic,
                                     browser_speaker, read_frame)

if TYPE_CHECKING:
    from livekit.agents import JobContext

    from ..session.runner import SessionRunner
    from ..spec.loader import LoadedSpec

log = logging.getLogger("voice_runtime.job")

CONNECT_TIMEOUT_S = 10.0
MAX_TEXT_CHARS = 4000  # a typed turn, as a simulated one


def speaks(loaded: LoadedSpec) -> bool:
    """The agent has a voice (a pipeline that is not text-only, or a realtime model)."""
    spec: Any = loaded.spec
    return spec.realtime is not None or (spec.pipeline is not None and not spec.pipeline.text_only)


@dataclass
class BrowserCall:
    socket: str
    token: str
    max_call_seconds: float
    audio: bool
    link: BrowserLink | None = None
    mic: Any = None
    speaker: Any = None

    @classmethod
    def of(cls, ctx: JobContext, loaded: LoadedSpec) -> BrowserCall | None:
        """The browser call this fake job is, if serve launched it for one."""
        try:
            talk = json.loads(ctx.job.room.metadata or "{}").get("talk")
        except (ValueError, AttributeError):
            return None
        if not isinstance(talk, dict):
            return None
        return cls(str(talk["socket"]), str(talk["token"]), float(talk["max_call_seconds"]), speaks(loaded))

    async def connect(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.socket), CONNECT_TIMEOUT_S)
        writer.write(self.token.encode() + b"\n")
        await writer.drain()
        self.link = BrowserLink(reader, writer)
        if self.audio:
            self.mic, self.speaker = browser_mic(VAD_WINDOW_SAMPLES), browser_speaker(self.link)

    def io(self) -> dict[str, Any]:
        """The runner's audio, when the agent speaks (else a text-only session)."""
        return {"audio_in": self.mic, "audio_out": self.speaker} if self.audio else {}

    async def run(self, ctx: JobContext, runner: SessionRunner) -> None:
        from ..session.runner import SessionRefused

        link = self.link
        assert link is not None
        runner.listeners.append(lambda event, data: link.post({"type": event, **data}))
        try:
            try:
                await runner.start()
            except SessionRefused as exc:
                link.post({"type": "error", "message": f"agent {runner.name} refused the call: {exc}"})
                return
            except Exception as exc:  # noqa: BLE001 - a provider that cannot be built: the page says why
                link.post({"type": "error", "message": f"agent {runner.name} could not start: {error_text(exc)}"})
                return
            self._watch(runner)
            link.post({"type": "ready", "agent": runner.name, "mode": runner.mode, "audio": self.audio,
                       "pid": os.getpid(), "greeting": runner.loaded.spec.greeting if not self.audio else None})
            try:
                async with asyncio.timeout(self.max_call_seconds):
                    await self._serve(runner)
            except TimeoutError:
                if runner.call_report is not None:
                    runner.call_report.end_reason = "timeout"
                link.post({"type": "ended", "reason": f"the call reached its limit of {self.max_call_seconds:g} s"})
        finally:
            if self.mic is not None:
                self.mic.close()
            await asyncio.sleep(0.1)  # the last messages leave before the socket closes
            await link.aclose()
            ctx.shutdown(reason="browser call ended")

    def _watch(self, runner: SessionRunner) -> None:
        """The transcript as the session has it."""
        link = self.link
        assert link is not None

        def on_item(event: Any) -> None:
            item = event.item
            text = getattr(item, "text_content", None) or ""
            role = getattr(item, "role", "")
            if text and role in ("user", "assistant"):
                link.post({"type": "turn", "speaker": "caller" if role == "user" else "agent", "text": text,
                           "interrupted": bool(getattr(item, "interrupted", False))})

        def on_transcript(event: Any) -> None:
            if not event.is_final and event.transcript:
                link.post({"type": "hearing", "text": event.transcript})

        def on_state(event: Any) -> None:
            link.post({"type": "state", "agent": str(event.new_state)})

        runner.session.on("conversation_item_added", on_item)
        runner.session.on("user_input_transcribed", on_transcript)
        runner.session.on("agent_state_changed", on_state)

    async def _serve(self, runner: SessionRunner) -> None:
        """Frames from the page until it hangs up or goes away; typed turns run one
        after another."""
        link = self.link
        assert link is not None
        typed: asyncio.Queue[str] = asyncio.Queue(8)
        turns = asyncio.ensure_future(self._typed_turns(runner, typed))
        try:
            while True:
                try:
                    got = await read_frame(link.reader)
                except (FrameError, ConnectionError) as exc:
                    log.warning("browser call %s: %s", runner.session_id, exc)
                    return
                if got is None:
                    return  # the page closed, or serve ended the call
                kind, payload = got
                if kind == AUDIO:
                    if self.mic is not None:
                        self.mic.push(payload)
                    continue
                message = _message(payload)
                if message.get("type") == "hangup":
                    return
                if message.get("type") == "text":
                    text = str(message.get("text", "")).strip()[:MAX_TEXT_CHARS]
                    if text and not typed.full():
                        typed.put_nowait(text)
        finally:
            turns.cancel()
            with contextlib.suppress(BaseException):
                await turns

    async def _typed_turns(self, runner: SessionRunner, typed: asyncio.Queue[str]) -> None:
        while True:
            text = await typed.get()
            try:
                await runner.run_turn(text)
            except Exception as exc:  # noqa: BLE001 - the call goes on after a failed turn, as in chat
                assert self.link is not None
                self.link.post({"type": "error", "message": error_text(exc)})


def _message(payload: bytes) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        message = json.loads(payload)
        if isinstance(message, dict):
            return message
    return {}
