"""A server's question during a call (MCP elicitation), put to the caller by the agent.

When a server asks (``elicitation/create``) while one of its tools runs, that tool
returns to the model at once with the question, the fields it needs in words, and
what to do next: ask the caller, then call ``answer_server_question`` with the
answers (or ``decline_server_question`` when the caller refuses). When the block's
``elicitation_confirm`` is on (the default), checked answers are not sent yet: the
runtime itself reads them back ("So that is: ... Is that right?", a secret field as
"the value you gave") and the model's turn ends there; only ``confirmed: true`` for
the very answers read out sends them, and corrected answers are read back again. The server's tool call stays open meanwhile; the answering tool hands the
answer to the server and returns the original tool's result. So the question is
spoken by the agent's own voice, in the caller's language, and the caller's next
turns are parsed into the form by the model; ``mcp.elicitation`` checks the values
against the form (a value that does not fit goes back to the model to ask again).

Bounds: one question at a time per call (a second is declined), the server block's
``elicitation_timeout`` (then the server gets ``cancel``), and a call that ends
cancels what is pending. The caller speaking over the agent while it puts the
question to them (barge-in) abandons it: the server gets ``cancel`` at once, as a
filler's barge-in cancels a slow call, and the model is told when it tries to answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..mcp.elicitation import Answer, FormField, Question, asking, check_answer, in_loop, read_back
from ..mcp.toolset import ToolFailure

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("voice_runtime.session")

ANSWER_TOOL = "answer_server_question"
DECLINE_TOOL = "decline_server_question"


@dataclass
class Pending:
    question: Question
    answer: asyncio.Future[Answer]
    call: asyncio.Task[Any] | None = None  # the tool call the question interrupted
    read_back: dict[str, Any] | None = None  # the answers last read back to the caller, awaiting their yes


@dataclass(frozen=True)
class ReadBack:
    """Answers the runtime reads back (``line``) before they go to the server."""

    line: str


@dataclass
class ServerQuestions:
    """The call's pending server question, between the connection that asked it and
    the model that puts it to the caller."""

    pending: Pending | None = None
    # told of each question put to the caller and of its end (None): serve's status page
    on_change: Callable[[Question | None], None] | None = None
    # the model is offered the answering tools from the call's first question on (``offer``):
    # most calls are never asked anything, and two unused tools would cost every turn
    offered: bool = False
    offer: Callable[[], Awaitable[None]] | None = None
    _watchers: dict[str, list[asyncio.Future[Pending]]] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        self._loop = asyncio.get_running_loop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The call's loop (once started): a connection's callbacks hop to it."""
        return self._loop

    async def ask(self, question: Question) -> Answer:
        """The connection's elicitor: runs in the connection's loop, waits in the call's."""
        return await in_loop(self._loop, self._ask)(question)

    async def _ask(self, question: Question) -> Answer:
        watchers = self._watchers.get(question.server) or []
        if self.pending is not None:
            return Answer("decline", reason="another question is waiting for the caller")
        if not watchers:
            return Answer("decline", reason="asked outside a tool call of this server")
        pending = self.pending = Pending(question, asyncio.get_running_loop().create_future())
        self._changed(question)
        # the MCP request does not say which of the server's running calls asked: the
        # oldest one is given the question (one tool output shows it, not every one)
        watchers[0].set_result(pending)
        try:
            return await pending.answer  # elicitation_timeout cancels this wait
        finally:
            if self.pending is pending:
                self.pending = None
            self._changed(None)

    async def run(self, server: str, call: Awaitable[Any]) -> Any:
        """Run a tool call of ``server``; when the server asks a question first, return
        the question for the model instead (the call goes on, waiting for the answer)."""
        loop = asyncio.get_running_loop()
        # the call's tool call carries this call's elicitor: a shared connection puts the
        # server's question to it, not to another call using the same connection
        with asking(self.ask):
            task = asyncio.ensure_future(call)
        watcher: asyncio.Future[Pending] = loop.create_future()
        self._watchers.setdefault(server, []).append(watcher)
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._watchers[server].remove(watcher)
        if task.done() or not watcher.done():
            return task.result()
        pending = watcher.result()
        pending.call = task
        task.add_done_callback(_retrieved)  # a call that ends unheard (hang-up) logs no "never retrieved"
        if not self.offered:
            # before the model reads the question: its next turn can answer it
            self.offered = True
            if self.offer is not None:
                await self.offer()
        return for_the_model(pending.question)

    async def answer(self, content: dict[str, Any] | None, action: str, confirmed: bool = False) -> Any:
        """The model's ``answer_server_question`` / ``decline_server_question``:
        the original tool's result, a ``ReadBack`` to say first (the block confirms
        and the caller has not said yes to exactly these answers), or a ValueError
        the model is told."""
        pending = self.pending
        if pending is None or pending.answer.done():
            raise ValueError("no server question is waiting (it may have timed out)")
        if action == "accept":
            if confirmed and not content and pending.read_back is not None:
                content = pending.read_back  # "yes" to what was read back
            try:
                content = check_answer(pending.question, content or {})
            except ValueError as exc:
                raise ValueError(f"{exc}; ask the caller again, then call {ANSWER_TOOL} again") from None
            # a yes counts only for the very answers the runtime read out: the model
            # cannot skip the read-back, and a corrected value is read back again
            if pending.question.confirm and not (confirmed and content == pending.read_back):
                pending.read_back = content
                return ReadBack(read_back(pending.question, content))
            pending.answer.set_result(Answer("accept", content))
        else:
            pending.answer.set_result(Answer("decline", reason="the caller refused"))
        assert pending.call is not None
        return await pending.call

    def close(self, reason: str = "the call ended") -> None:
        """The call ended (or the caller abandoned the question): a pending question is
        cancelled for its server."""
        pending, self.pending = self.pending, None
        if pending is not None and not pending.answer.done():
            log.info("server %s's question cancelled: %s", pending.question.server, reason)
            pending.answer.set_result(Answer("cancel", reason=reason))
            self._changed(None)

    def _changed(self, question: Question | None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(question)
        except Exception:  # noqa: BLE001 - the status page's view must not fail the question
            log.debug("pending question not published", exc_info=True)

    def attach(self, session: Any) -> None:
        """Watch the call's speech: an agent turn the caller cut short while a question
        was with the model (being put to them) abandons that question."""

        def on_item(event: Any) -> None:
            item = getattr(event, "item", None)
            if getattr(item, "role", None) != "assistant" or not getattr(item, "interrupted", False):
                return
            pending = self.pending
            if pending is not None and pending.call is not None:  # the model has it: it was being asked
                self.close("the caller interrupted the question")

        session.on("conversation_item_added", on_item)


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def for_the_model(question: Question) -> str:
    fields = "; ".join(_describe(f) for f in question.fields)
    return (f"Before it can finish, the {question.server} service asks the caller: \"{question.message}\" "
            f"It needs: {fields}. Ask the caller, then call {ANSWER_TOOL} with `answers` holding each field by name"
            f"{' (they are read back to the caller for a yes first)' if question.confirm else ''}; "
            f"if the caller refuses, call {DECLINE_TOOL}.")


def _describe(f: FormField) -> str:
    if f.choices is not None:
        names = f.labels or f.choices
        kind = ("one or more of " if f.type == "array" else "one of ") + ", ".join(
            f"{label} (as {value!r})" if label != value else repr(value) for label, value in zip(names, f.choices))
    else:
        kind = {"string": "text", "number": "a number", "integer": "a whole number", "boolean": "yes or no"}[f.type]
    extra = "required" if f.required else f"optional, default {f.default!r}" if f.default is not None else "optional"
    about = f.label if f.label != f.name else ""
    return f"{f.name}{f' ({about})' if about else ''}: {kind}, {extra}"


def after_read_back(line: str) -> str:
    return (f"The caller was read back their answers: \"{line}\" Wait for their reply. If they say yes, call "
            f"{ANSWER_TOOL} with confirmed: true. If they change a value, call {ANSWER_TOOL} with the corrected "
            f"answers (they are read back again). If they refuse, call {DECLINE_TOOL}.")


def question_tools(questions: ServerQuestions, say: Callable[[str], Any]) -> list[Any]:
    """The two tools the model answers a server's question with; ``say`` speaks the
    read-back as the agent (the runtime's words, not the model's)."""
    from livekit.agents.llm import ToolError, ToolResult, function_tool

    async def respond(content: dict[str, Any] | None, action: str, confirmed: bool = False) -> Any:
        try:
            result = await questions.answer(content, action, confirmed)
        except (ValueError, ToolFailure) as exc:  # the model is told, as for any tool
            raise ToolError(str(exc)) from None
        if isinstance(result, ReadBack):
            say(result.line)
            # the read-back is this turn's words: the model speaks again at the caller's reply
            return ToolResult(after_read_back(result.line), reply_required=False)
        return result

    async def answer(raw_arguments: dict[str, Any]) -> Any:
        answers = raw_arguments.get("answers")
        return await respond(answers if isinstance(answers, dict) else {}, "accept",
                             raw_arguments.get("confirmed") is True)

    async def decline(raw_arguments: dict[str, Any]) -> Any:
        return await respond(None, "decline")

    return [
        function_tool(answer, raw_schema={
            "name": ANSWER_TOOL,
            "description": "Give a service the caller's answers to the question it asked during a tool call; "
                           "returns that tool's result.",
            "parameters": {"type": "object", "properties": {
                "answers": {"type": "object",
                            "description": "Each field the question named, by name, with the caller's answer."},
                "confirmed": {"type": "boolean", "description": "true once the caller said yes to the answers "
                                                                "read back to them (the same answers)."}},
                "required": ["answers"]}}),
        function_tool(decline, raw_schema={
            "name": DECLINE_TOOL,
            "description": "The caller refused to answer a service's question; returns that tool's result.",
            "parameters": {"type": "object", "properties": {}}}),
    ]
