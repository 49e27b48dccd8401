"""`voice-runtime chat`: a conversation with one agent, no LiveKit server: typed
(text), or played from WAV files (``--audio-in``, through the agent's real STT, VAD
and TTS). Every tool call is shown as it happens, with its result and latency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..core.error_text import error_text
from ..core.terminal import printable

if TYPE_CHECKING:
    from .runner import SessionRunner

RESULT_PREVIEW = 200
_NEWLINES = re.compile(r"[ \t]*\r?\n\s*")


def phone_line(data: dict[str, Any]) -> str:
    """A phone outcome (session/phone.py) in words."""
    kind = data.get("event")
    why = f" ({data['reason']})" if data.get("reason") else ""
    if kind == "hang_up":
        return f"hung up: {data['reason']}"
    if kind == "transfer":
        return f"{data['kind']} transfer to {data['target']} ({data['to']}): {data['outcome']}" + why
    if kind == "dtmf":
        return f"keypad {data['direction']}: {data['count']} digits, {data['outcome']}" + why
    if kind == "voicemail":
        return f"answering-machine detection: {data['category']}, action {data['action']}" + why
    return str(data)


class ChatPrinter:
    """Turns session events into lines for a person (text) or a script (JSON)."""

    def __init__(self, agent: str, *, as_json: bool, out: TextIO = sys.stdout, echo_user: bool = False) -> None:
        self.agent = agent
        self.as_json = as_json
        self.out = out
        self.echo_user = echo_user
        self.errors = 0
        # an unbacked claim is found while the turn runs; it is printed after the reply it is about
        self.held: list[tuple[str, dict[str, Any]]] | None = None
        self._fillers: list[str] = []  # filler lines shown, whose history item is not a reply to show again

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "unbacked_claim" and self.held is not None:
            self.held.append((event, data))
            return
        if event == "handoff":
            self.agent = data["to"]
        if event == "filler" and data.get("kind") in ("filler", "progress"):
            self._fillers.append(data["text"])
        if self.as_json:  # json.dumps escapes control characters (ensure_ascii)
            self.out.write(json.dumps({"type": event, **data}, default=str) + "\n")
        else:
            # tool results, replies repeating them, server errors: not the terminal's commands
            self.out.write(printable(self._text(event, data), lines=True) + "\n")
        self.out.flush()

    def _text(self, event: str, data: dict[str, Any]) -> str:
        if event == "user":
            return f"you> {data['text']}"
        if event == "reply":
            return f"{self.agent}> {data['text']}"
        if event == "tool_call":
            return f"  -> {data['server']}: {data['tool']} {json.dumps(data['arguments'], default=str)}"
        if event == "tool_result":
            result = _NEWLINES.sub(" ", data["result"])  # one line: a pretty-printed JSON result's indents too
            if len(result) > RESULT_PREVIEW:
                result = result[:RESULT_PREVIEW] + "..."
            return f"  <- {data['tool']} {data['outcome']} in {data['latency_ms']:.1f} ms: {result}"
        if event == "filler":
            why = {"timeout": "timed out", "progress": "reports"}.get(data["kind"], "is still running")
            return f"  .. {data['tool']} {why}: {self.agent}> {data['text']}"
        if event == "error":
            return f"error: {data['message']}"
        if event == "handoff":
            return f"-> handoff {data['from']} -> {data['to']}"
        if event == "handoff_refused":
            return (f"!! handoff {data['from']} -> {data['to']} refused: {data['limit']} handoffs in this turn "
                    f"already (max_handoffs_per_turn); {data['from']} answers")
        if event == "unbacked_claim":
            from .claims import describe

            return f"!! {describe(data)}"
        if event == "claims_judged":
            return f"  (claims judge: {data['verdict']}{': ' + data['reason'] if data.get('reason') else ''})"
        if event == "fallback":
            return f"  (switched from {data['from']} to {data['to']}: {data['reason']})"
        if event == "phone":
            return f"  [phone] {phone_line(data)}"
        return f"  ({event}: {data.get('message', data)})"

    def hold(self) -> None:
        self.held = []

    def release(self) -> None:
        held, self.held = self.held or [], None
        for event, data in held:
            self(event, data)

    def reply(self, text: str) -> None:
        """An assistant message of the history: a reply, unless it is a filler line
        already shown as one."""
        if text in self._fillers:
            self._fillers.remove(text)
            return
        self("reply", {"text": text})

    def user(self, text: str) -> None:
        if self.as_json or self.echo_user:
            self("user", {"text": text})

    def error(self, message: str) -> None:
        self.errors += 1
        self("error", {"message": message})


def reply_texts(events: list[Any]) -> list[str]:
    """The assistant's messages of a turn, in order (a handoff target's included)."""
    out = []
    for event in events:
        item = getattr(event, "item", None)
        if getattr(event, "type", "") == "message" and getattr(item, "role", "") == "assistant":
            if item.text_content:
                out.append(item.text_content)
    return out


async def _lines(stdin: TextIO, prompt: str | None, out: TextIO) -> Any:
    """The caller's lines. Read by a daemon thread of its own, not the loop's executor:
    asyncio.run waits for the executor's threads at exit, and one blocked in readline
    (a terminal at its prompt, a pipe kept open) made a Ctrl-C wait for the next line
    or EOF, for ever; a daemon thread is left behind."""
    import threading

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    wanted = threading.Semaphore(0)  # one line read ahead at most: the prompt comes first

    def read() -> None:
        while True:
            wanted.acquire()
            try:
                line = stdin.readline()
            except (OSError, ValueError):  # stdin closed under us
                line = ""
            try:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            except RuntimeError:  # the loop has closed: chat is over
                return
            if not line:
                return

    threading.Thread(target=read, name="chat-stdin", daemon=True).start()
    while True:
        if prompt is not None:
            out.write(prompt)
            out.flush()
        wanted.release()
        line = await lines.get()
        if not line:
            return
        line = line.strip()
        if line:
            yield line


async def _started(runner: SessionRunner, printer: ChatPrinter) -> bool:
    """Start the session with the printer listening; a refusal is printed as an error."""
    from .runner import SessionRefused

    runner.listeners.append(printer)
    try:
        await runner.start()
    except SessionRefused as exc:
        printer.error(str(exc))
        return False
    except Exception as exc:  # a provider that cannot be built (missing key...)
        printer.error(f"agent {runner.name} could not start: {error_text(exc)}")
        return False
    return True


async def run_chat(runner: SessionRunner, printer: ChatPrinter, stdin: TextIO = sys.stdin) -> int:
    from .call_report import CallReport, redactor

    # with --json, the call's report (as serve delivers it) is the last line
    report = CallReport(runner, generation=None, call_id=runner.session_id,
                        redact=redactor(runner.loaded, runner.call_context).redact_data) if printer.as_json else None
    if report is not None:
        runner.call_report = report  # a hang-up's reason is the report's end_reason
    if not await _started(runner, printer):
        return 1
    interrupted = False
    try:
        with _stopped_by_sigterm():
            try:
                await _converse(runner, printer, stdin)
            except asyncio.CancelledError:  # Ctrl-C (asyncio.run cancels this task) or SIGTERM
                interrupted = True
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # taken: the report and the close below run as usual
                printer.release()
        if report is not None:
            from ..plugins.manager import notify
            from .analysis import finished_report

            # the same report serve delivers: with the spec's post-call analysis, told to the hook;
            # an interrupted chat's too, after the lines it had printed
            failed = f"{printer.errors} turn(s) failed" if printer.errors else None
            ended = await finished_report(runner.plugins, report, "chat interrupted" if interrupted else "chat ended",
                                          failed)
            notify(runner.plugins, "voice_runtime_call_report", report=ended)
            printer("report", {"report": ended})
    finally:
        await runner.aclose()
    if interrupted:
        if stdin.isatty():
            printer.out.write("\n")  # the shell's prompt on a line of its own, after "you> ^C"
            printer.out.flush()
        return 130  # as a shell reports a Ctrl-C
    return 1 if printer.errors else 0


async def _converse(runner: SessionRunner, printer: ChatPrinter, stdin: TextIO) -> None:
    if runner.loaded.spec.greeting:
        printer("reply", {"text": runner.loaded.spec.greeting, "greeting": True})
    interactive = stdin.isatty() and not printer.as_json
    async for line in _lines(stdin, "you> " if interactive else None, printer.out):
        printer.user(line)
        printer.hold()
        try:
            result = await runner.run_turn(line)
        except Exception as exc:  # the conversation goes on after a failed turn
            printer.error(error_text(exc))
            printer.release()
            continue
        for text in reply_texts(result.events):
            printer.reply(text)
        printer.release()
        if runner.hang_up_reason is not None:  # the agent ended the call (end_call, a transfer...)
            break
    await runner.claims_settled()  # a judge's last verdicts are shown (and in the report) before it ends


@contextlib.contextmanager
def _stopped_by_sigterm() -> Any:
    """SIGTERM ends a chat as Ctrl-C does (its report written, its session closed),
    not by the default death that loses both."""
    import signal

    loop, task = asyncio.get_running_loop(), asyncio.current_task()

    def stop() -> None:  # once: a second SIGTERM is the default death, as a second Ctrl-C hurries
        loop.remove_signal_handler(signal.SIGTERM)
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, stop)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)  # no-op once it fired


# how long the agent may take to start answering a turn once the caller stopped
# speaking (VAD silence + endpointing + STT + LLM), and to finish it (tools included)
ANSWER_START_SECONDS = 8.0
TURN_SECONDS = 120.0
QUIET_SECONDS = 0.6  # the agent idle this long: its answer is over


async def run_audio_chat(runner: SessionRunner, printer: ChatPrinter, turns: list[Any],
                         audio_out: Path | None = None) -> int:
    """A voice conversation from audio: each of ``turns`` (``audio_io.Pcm``) is played
    as the caller, in real time, once the agent has finished answering the previous
    one. Prints what was heard and said with the same lines as text chat; writes the
    call as the caller heard it to ``audio_out``."""
    import time

    from .audio_io import write_wav

    mic, speaker = runner.audio_in, runner.audio_out
    started = time.monotonic()
    if not await _started(runner, printer):
        return 1

    def on_item(event: Any) -> None:
        item = event.item
        text = getattr(item, "text_content", None) or ""
        role = getattr(item, "role", "")
        if text and role == "user":
            printer("user", {"text": text})
        elif text and role == "assistant":
            printer.reply(text)

    session = runner.session
    session.on("conversation_item_added", on_item)
    try:
        if runner.loaded.spec.greeting:
            await _answered(runner, speaker, started=time.monotonic(), wait_start=ANSWER_START_SECONDS)
        for turn in turns:
            await mic.play(turn)
            problem = await _answered(runner, speaker, started=time.monotonic(), wait_start=ANSWER_START_SECONDS)
            if problem:
                printer.error(problem)
            if runner.hang_up_reason is not None:
                break
    finally:
        await runner.aclose()
        if audio_out is not None:
            write_wav(audio_out, speaker.audio_since(started))
    return 1 if printer.errors else 0


async def _answered(runner: SessionRunner, speaker: Any, *, started: float, wait_start: float) -> str | None:
    """Until the agent has answered: it started (thinking or speaking) within
    ``wait_start`` seconds and has since been idle for QUIET_SECONDS. Otherwise
    what went wrong, in a sentence: the agent never started to answer (the turn
    was not heard: an unreachable STT, say), or the answer did not end in time."""
    import time

    def busy() -> bool:
        session = runner.session
        return session is not None and (session.agent_state in ("thinking", "speaking") or speaker.playing)

    began = False
    quiet_since: float | None = None
    while True:
        now = time.monotonic()
        if busy():
            began, quiet_since = True, None
        elif began:
            quiet_since = quiet_since or now
            if now - quiet_since >= QUIET_SECONDS:
                return None
        elif now - started > wait_start:
            return (f"the agent did not answer within {wait_start:g} s: the turn was not heard "
                    "(is its STT reachable? -v shows the providers' errors)")
        if now - started > TURN_SECONDS:
            return f"no answer within {TURN_SECONDS:g} s"
        await asyncio.sleep(0.05)
