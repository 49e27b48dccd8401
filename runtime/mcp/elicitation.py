"""A server's ``elicitation/create``: its question read into plain fields, answered
by whoever holds the call (an ``Elicitor``), the answer checked against the question.

The MCP spec allows a form of top-level primitive fields only (string, number,
integer, boolean, enums of strings, multi-select enums of strings); anything else is
refused before anyone is asked, as is a form of more than ``MAX_FIELDS`` fields or a
message longer than ``MAX_MESSAGE_CHARS`` (a caller on the phone cannot be read a page),
a schema longer than ``MAX_FORM_CHARS`` as JSON, or a name, title, description or enum value
longer than ``MAX_TEXT_CHARS``.
URL mode is declined: a phone caller cannot open a link.

Who answers: the caller whose tool call is in flight on the connection. A connection
may be shared by many calls (a pooled block, lent through serve's gateway), and the
MCP wire does not say which request a question belongs to (the SDK hands the callback
only the question's own id; stdio carries nothing else), so ``Callers`` keeps the
connection's tool calls in flight, each with the elicitor its call set (``asking``),
and a question goes to the one call that can have asked it: the only call in flight,
or the only one not already waiting for the answer to its own question (a tool
handler awaits its question before asking again). Anything else is cancelled with
the reason logged, never put to a guessed caller. With no call in flight the holder
of the connection answers (``voice-runtime call`` takes ``--elicit
accept-defaults|decline``); a connection with no elicitor declines. The question
waits at most the server's ``elicitation_timeout``, then it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ..core.terminal import printable
from ..observe import tracing

if TYPE_CHECKING:
    from mcp.client.session import ClientRequestContext
    from mcp.types import ElicitRequestParams, ElicitResult, ErrorData

log = logging.getLogger("voice_runtime.mcp")

MAX_FIELDS = 20
MAX_MESSAGE_CHARS = 2000
MAX_ENUM_VALUES = 50
MAX_FORM_CHARS = 16_000  # the whole requestedSchema as JSON: each field, title, enum value goes to the model
MAX_TEXT_CHARS = 500  # one field name, title, description or enum value: said to a caller on the phone

Action = Literal["accept", "decline", "cancel"]
Value = str | int | float | bool | list[str]


class BadForm(ValueError):
    """The server's form is outside what the MCP spec allows (or our bounds)."""


@dataclass(frozen=True)
class FormField:
    name: str
    type: Literal["string", "number", "integer", "boolean", "array"]
    title: str | None
    description: str | None
    required: bool
    default: Value | None = None
    choices: tuple[str, ...] | None = None  # enum values (single or multi-select)
    labels: tuple[str, ...] | None = None  # titled enums (SEP-1330): what the caller hears
    secret: bool = False  # never read back aloud (format password, writeOnly, or a name like pin)

    @property
    def label(self) -> str:
        return self.title or self.description or self.name


@dataclass(frozen=True)
class Question:
    server: str
    message: str
    fields: tuple[FormField, ...]
    confirm: bool = True  # the block's elicitation_confirm: answers are read back before they go

    def as_wire(self) -> dict[str, Any]:
        """As JSON, for serve's gateway to put it to a job process (``from_wire``)."""
        return asdict(self)

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Question:
        """What ``as_wire`` made; raises ValueError (KeyError, TypeError) when it is not."""
        def tupled(value: Any) -> Any:
            return tuple(value) if isinstance(value, list) else value

        fields = tuple(FormField(**{k: tupled(v) if k in ("choices", "labels") else v for k, v in f.items()})
                       for f in raw["fields"])
        return cls(str(raw["server"]), str(raw["message"]), fields, bool(raw.get("confirm", True)))


@dataclass(frozen=True)
class Answer:
    action: Action
    content: dict[str, Value] | None = None
    reason: str = ""  # for our log only; the MCP result has no room for it

    def as_wire(self) -> dict[str, Any]:
        return {"action": self.action, "content": self.content, "reason": self.reason}

    @classmethod
    def from_wire(cls, raw: Any) -> Answer:
        """A job's answer as serve reads it: anything malformed is a cancel saying so
        (the values are checked against the form afterwards, as any answer's are)."""
        if not isinstance(raw, dict) or raw.get("action") not in ("accept", "decline", "cancel") \
                or not isinstance(raw.get("content"), (dict, type(None))):
            return cls("cancel", reason="the call's process sent an answer that is not one")
        # the reason reaches serve's log: one printable line, short
        return cls(raw["action"], raw["content"], printable(str(raw.get("reason") or ""))[:200])


Elicitor = Callable[[Question], Awaitable[Answer]]

# the elicitor of the call whose tool call runs in this context: set around a call's
# tool call (``asking``), read by the connection when it sends the call (``current``)
_ASKING: contextvars.ContextVar[Elicitor | None] = contextvars.ContextVar("voice_runtime_elicitor", default=None)


@contextlib.contextmanager
def asking(elicitor: Elicitor | None) -> Iterator[None]:
    """Tool calls started (tasks created) inside this block are ``elicitor``'s: a
    server's question during one of them is put to it."""
    token = _ASKING.set(elicitor)
    try:
        yield
    finally:
        _ASKING.reset(token)


def current() -> Elicitor | None:
    return _ASKING.get()


def in_loop(loop: asyncio.AbstractEventLoop | None, elicitor: Elicitor) -> Elicitor:
    """``elicitor`` run in ``loop`` (a call's, the gateway's), awaited from any other:
    a connection's callbacks run in the loop that owns its transport."""

    async def ask(question: Question) -> Answer:
        if loop is not None and loop is not asyncio.get_running_loop() and not loop.is_closed():
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(elicitor(question), loop))
        return await elicitor(question)

    return ask


@dataclass(eq=False)  # each is one tool call: removed by identity, never by an equal one
class _Caller:
    elicitor: Elicitor | None
    asking: bool = False  # its question is with it now: a second question is not its (see Callers)


CUT_MEMORY_S = 30.0  # a tool call cut short (hang-up, barge-in, timeout): its handler may still ask


@dataclass
class Callers:
    """The tool calls in flight on one connection, each with its call's elicitor (or
    None: then whoever holds the connection answers). Used in the connection's loop.

    Nothing on the wire says which tool call a question belongs to (mcp gives the
    callback only the question's own id), so a question is put to a caller only when
    no other caller can have caused it: every tool call in flight is that caller's, and
    no other caller's call was cut short in the last CUT_MEMORY_S (its handler may go on
    and ask). Anything else is cancelled, never put to a guessed caller: a handler that
    asks twice at once, or after its caller hung up, would otherwise reach a stranger."""

    _calls: list[_Caller] = field(default_factory=list)
    _cut: list[tuple[float, Elicitor | None]] = field(default_factory=list)  # (when, whose)

    @contextlib.contextmanager
    def calling(self, elicitor: Elicitor | None) -> Iterator[None]:
        caller = _Caller(elicitor)
        self._calls.append(caller)
        try:
            yield
        except BaseException:
            self._cut.append((time.monotonic(), elicitor))
            raise
        finally:
            self._calls.remove(caller)

    @contextlib.contextmanager
    def attribute(self, holder: Elicitor | None) -> Iterator[Elicitor | Answer | None]:
        """Who answers a question arriving now: the one caller every tool call in flight
        belongs to (marked as asking until the block ends), ``holder`` when no call is in
        flight, or the ``Answer`` (cancel) when more than one caller can have caused it."""
        now = time.monotonic()
        self._cut = [(at, who) for at, who in self._cut if now - at < CUT_MEMORY_S]
        if not self._calls:
            yield holder
            return
        owners = {id(c.elicitor or holder) for c in self._calls}
        recent = {id(who or holder) for _, who in self._cut} - owners
        free = [c for c in self._calls if not c.asking]
        if len(owners) > 1 or recent or not free:
            why = (f"tool calls of {len(owners)} callers are in flight on this shared connection"
                   if len(owners) > 1 else
                   "another caller's tool call on this shared connection was cut short moments ago"
                   if recent else "every tool call in flight is already waiting for its own answer")
            yield Answer("cancel", reason=f"{why}; the question could be theirs and is put to no caller")
            return
        caller = free[0]
        caller.asking = True
        try:
            yield caller.elicitor or holder
        finally:
            caller.asking = False


def read_form(server: str, message: str, schema: Any) -> Question:
    """The server's ``requestedSchema`` as fields; raises BadForm saying what is refused."""
    if len(message) > MAX_MESSAGE_CHARS:
        raise BadForm(f"message of {len(message)} characters (at most {MAX_MESSAGE_CHARS})")
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise BadForm("requestedSchema is not an object schema")
    size = len(json.dumps(schema, default=str))
    if size > MAX_FORM_CHARS:  # a 5 MB enum would go to the model in the tool result and fail the turn
        raise BadForm(f"requestedSchema of {size} characters (at most {MAX_FORM_CHARS})")
    properties = schema.get("properties") or {}
    if not isinstance(properties, dict):
        raise BadForm("requestedSchema.properties is not an object")
    if len(properties) > MAX_FIELDS:
        raise BadForm(f"{len(properties)} fields (at most {MAX_FIELDS})")
    required = set(schema.get("required") or [])
    fields = tuple(_field(name, prop, name in required) for name, prop in properties.items())
    return Question(server, message, fields)


def _field(name: str, prop: Any, required: bool) -> FormField:
    if not isinstance(prop, dict):
        raise BadForm(f"field {name!r} is not a schema")
    for what, text in (("name", name), ("title", prop.get("title")), ("description", prop.get("description"))):
        if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
            raise BadForm(f"field {printable(name[:40])!r}: its {what} has {len(text)} characters "
                          f"(at most {MAX_TEXT_CHARS})")
    kind = prop.get("type")
    choices = labels = None
    if "oneOf" in prop or "anyOf" in prop:  # titled single-select enum (SEP-1330)
        options = prop.get("oneOf") or prop.get("anyOf")
        choices, labels = _titled(name, options)
        kind = "string"
    elif kind == "array":  # multi-select enum: only arrays of enumerated strings
        items = prop.get("items") or {}
        if "enum" in items:
            choices = _strings(name, items["enum"])
        elif "anyOf" in items or "oneOf" in items:
            choices, labels = _titled(name, items.get("anyOf") or items.get("oneOf"))
        else:
            raise BadForm(f"field {name!r} is an array of something other than enumerated strings")
    elif "enum" in prop:
        choices = _strings(name, prop["enum"])
        names = prop.get("enumNames")
        labels = tuple(str(n) for n in names) if isinstance(names, list) and len(names) == len(choices) else None
        kind = "string"
    if kind not in ("string", "number", "integer", "boolean", "array"):
        raise BadForm(f"field {name!r} has type {kind!r}: only string, number, integer, boolean and enums are allowed")
    f = FormField(name, kind, _text(prop.get("title")), _text(prop.get("description")), required,
                  choices=choices, labels=labels, secret=_is_secret(name, prop))
    if "default" in prop:
        try:
            f = FormField(**{**f.__dict__, "default": check_value(f, prop["default"])})
        except ValueError as exc:
            raise BadForm(f"field {name!r}: its default {exc}") from None
    return f


# a field whose value must not be said aloud: JSON Schema's format password / writeOnly,
# or a name that says it is one (a server may not mark its PIN field at all)
SECRET_WORDS = {"password", "passcode", "passphrase", "secret", "token", "pin", "cvv", "cvc", "ssn", "otp"}


def _is_secret(name: str, prop: dict[str, Any]) -> bool:
    if prop.get("format") == "password" or prop.get("writeOnly") is True:
        return True
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    return bool(SECRET_WORDS & set(words))


def read_back(question: Question, content: dict[str, Value]) -> str:
    """The checked answers as one sentence the caller hears before they are sent:
    each field by its label and value in words; a secret field's value is not said."""
    parts = [f"{f.label} {_spoken(f, content[f.name])}" for f in question.fields if f.name in content]
    return f"So that is: {'; '.join(parts) or 'nothing'}. Is that right?"


def _spoken(f: FormField, value: Value) -> str:
    if f.secret:
        return "the value you gave"
    if isinstance(value, bool):
        return "yes" if value else "no"
    names = dict(zip(f.choices or (), f.labels or f.choices or ()))
    if isinstance(value, list):
        return ", ".join(names.get(v, v) for v in value) or "none"
    if isinstance(value, str):
        return names.get(value, value)
    # 3.0 is said "3"; :g would turn a large amount into exponent notation
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _titled(name: str, options: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(options, list) or not options or len(options) > MAX_ENUM_VALUES:
        raise BadForm(f"field {name!r} has no options or more than {MAX_ENUM_VALUES}")
    values = _strings(name, [o.get("const") if isinstance(o, dict) else None for o in options])
    return values, tuple(str(o.get("title") or o["const"]) for o in options)


def _strings(name: str, values: Any) -> tuple[str, ...]:
    if not isinstance(values, list) or not values or len(values) > MAX_ENUM_VALUES:
        raise BadForm(f"field {name!r}: an enum needs 1 to {MAX_ENUM_VALUES} values")
    if not all(isinstance(v, str) for v in values):
        raise BadForm(f"field {name!r}: enum values must be strings")
    if any(len(v) > MAX_TEXT_CHARS for v in values):
        raise BadForm(f"field {name!r}: an enum value is longer than {MAX_TEXT_CHARS} characters")
    return tuple(values)


def _text(value: Any) -> str | None:
    return printable(value) if isinstance(value, str) and value else None


def check_value(f: FormField, value: Any) -> Value:
    """``value`` as the field's type; raises ValueError saying why not."""
    if f.type == "boolean":
        if isinstance(value, bool):
            return value
    elif f.type == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif f.type == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif f.type == "array":
        if isinstance(value, list) and all(isinstance(v, str) and (f.choices is None or v in f.choices) for v in value):
            return list(value)
    elif isinstance(value, str):
        if f.choices is None or value in f.choices:
            return value
        raise ValueError(f"{value!r} is not one of {', '.join(f.choices)}")
    raise ValueError(f"{value!r} is not {'an integer' if f.type == 'integer' else 'a ' + f.type}")


YES = {"y", "yes", "true", "1", "yeah", "sure", "ok"}
NO = {"n", "no", "false", "0", "nope"}


def parse_typed(f: FormField, said: str) -> Value:
    """What a person typed or said for field ``f``, as its type: yes/no words for a
    boolean, a choice by its value or label (case-insensitive), commas between the
    choices of a multi-select. Raises ValueError saying what is expected."""
    said = said.strip()
    if f.type == "boolean":
        if said.lower() in YES | NO:
            return said.lower() in YES
        raise ValueError("say yes or no")
    if f.type in ("integer", "number"):
        try:
            return check_value(f, float(said) if f.type == "number" or "." in said else int(said))
        except ValueError:
            raise ValueError("a whole number" if f.type == "integer" else "a number") from None
    if f.choices is not None:
        names = dict(zip(f.choices, f.labels or f.choices))
        pick = {v.lower(): v for v in f.choices} | {label.lower(): v for v, label in names.items()}
        words = [w.strip().lower() for w in said.split(",")] if f.type == "array" else [said.lower()]
        if all(w in pick for w in words):
            return [pick[w] for w in words if w] if f.type == "array" else pick[words[0]]
        raise ValueError("one of " + ", ".join(names.values()))
    return said


def check_answer(question: Question, content: dict[str, Any]) -> dict[str, Value]:
    """The accepted content with every value of the field's type, omitted fields given
    their defaults and every required field present; raises ValueError naming the field."""
    known = {f.name: f for f in question.fields}
    unknown = sorted(set(content) - set(known))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    out: dict[str, Value] = {}
    for f in question.fields:
        if f.name in content and content[f.name] is not None:
            try:
                out[f.name] = check_value(f, content[f.name])
            except ValueError as exc:
                raise ValueError(f"field {f.name}: {exc}") from None
        elif f.default is not None:  # SEP-1034: an omitted field takes its default
            out[f.name] = f.default
        elif f.required:
            raise ValueError(f"field {f.name} is required")
    return out


# -- the non-interactive answers (`voice-runtime call --elicit ...`) -----------------


async def accept_defaults(question: Question) -> Answer:
    """Accept with each field's default (SEP-1034); decline when a required field has none."""
    missing = [f.name for f in question.fields if f.required and f.default is None]
    if missing:
        return Answer("decline", reason=f"no default for required field(s) {', '.join(missing)}")
    return Answer("accept", {f.name: f.default for f in question.fields if f.default is not None})


async def decline(question: Question) -> Answer:
    return Answer("decline", reason="no one to ask")


ELICITORS: dict[str, Elicitor] = {"accept-defaults": accept_defaults, "decline": decline}


# -- the SDK's callback -------------------------------------------------------------


def sdk_callback(server: str, timeout: float, elicitor: Callable[[], Elicitor | None],
                 confirm: bool = True, callers: Callers | None = None) -> Callable[..., Any]:
    """The mcp ``ClientSession``'s ``elicitation_callback`` for one connection: the
    question goes to the call ``callers`` attributes it to; ``elicitor()`` (the holder
    of the connection, looked up at each question) answers when no call is in flight.
    ``confirm``: the call's answers are read back to the caller before they are sent."""
    callers = callers if callers is not None else Callers()

    async def callback(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        from mcp.types import INVALID_PARAMS, ElicitResult, ErrorData

        if getattr(params, "mode", "form") == "url":
            log.info("MCP server %s asked for a URL to be opened; declined (a caller cannot open a link)", server)
            _count(server, "decline")
            return ElicitResult(action="decline")
        try:
            question = replace(read_form(server, params.message, params.requested_schema), confirm=confirm)
        except BadForm as exc:
            log.warning("MCP server %s asked a question we refuse: %s", server, exc)
            _count(server, "refused")
            return ErrorData(code=INVALID_PARAMS, message=f"elicitation refused: {exc}")
        with callers.attribute(elicitor()) as who:
            answer = await answer_question(question, who, timeout)
        return ElicitResult(action=answer.action, content=answer.content if answer.action == "accept" else None)

    return callback


async def answer_question(question: Question, elicitor: Elicitor | Answer | None, timeout: float) -> Answer:
    """Ask ``elicitor`` within ``timeout``: cancel when time runs out, decline when
    nobody can answer, cancel when the answer does not fit the form; an ``Answer``
    given instead of an elicitor is the outcome already decided. Traced as
    ``mcp.elicitation`` (the server, the number of fields, the outcome; never the values)."""
    with tracing.span("mcp.elicitation", {"mcp.server": question.server, "mcp.elicitation.fields":
                                          len(question.fields)}) as span:
        answer = await _answer(question, elicitor, timeout)
        span.set_attribute("mcp.elicitation.action", answer.action)
    log.info("MCP server %s asked %d field(s): %s%s", question.server, len(question.fields), answer.action,
             f" ({answer.reason})" if answer.reason else "")
    _count(question.server, answer.action)
    return answer


async def _answer(question: Question, elicitor: Elicitor | Answer | None, timeout: float) -> Answer:
    if isinstance(elicitor, Answer):
        answer = elicitor
    elif elicitor is None:
        answer = Answer("decline", reason="no one to ask here")
    else:
        try:
            async with asyncio.timeout(timeout):
                answer = await elicitor(question)
        except TimeoutError:
            answer = Answer("cancel", reason=f"no answer within {timeout:g}s")
        if answer.action == "accept":
            try:
                answer = Answer("accept", check_answer(question, answer.content or {}))
            except ValueError as exc:
                answer = Answer("cancel", reason=f"the answer does not fit the form: {exc}")
    return answer


def _count(server: str, outcome: str) -> None:
    # prometheus_client only once a server really asks (as mcp.direct does for tool calls)
    from ..observe.metrics import observe_server_request

    observe_server_request(server, "elicitation", outcome)
