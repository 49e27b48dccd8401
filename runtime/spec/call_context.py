"""Call context: what one call carries (who is calling, their account, their token),
declared by a spec's ``context:`` and used as ``${call.NAME}``.

Where a value may be used is fixed: ``instructions`` (and its file), ``greeting``, an
HTTP MCP server's ``headers`` and ``url``, and pinned tool arguments
(``mcp_servers.X.tools.TOOL.arguments``). ``check_uses`` refuses any other place and
any undeclared name, at the file position of the value.

Values are data: substitution is one pass over the spec's text, so a value holding
``${OPENAI_API_KEY}`` or ``${call.other}`` stays literal text (environment variables
were expanded when the file was loaded, before any call). ``resolve`` refuses a call
whose value is missing (``required``), too long, fails its ``pattern`` (user regexes
run through ``core.user_regex`` with its timeout), or is not text.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from .errors import KeyPath
    from .models import ContextValue

CALL_REF = re.compile(r"\$\{call\.([^}]*)\}")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
SOURCES = ("dispatch", "room", "participant")
# metadata is read only this far: LiveKit allows 64 KiB, more would be hostile
MAX_METADATA_CHARS = 64 * 1024
PLACES = ("instructions, greeting, an HTTP MCP server's headers and url, mcp_servers.X.tools.TOOL.arguments "
          "and instructions_from.arguments")


class ContextRefused(Exception):
    """The call cannot start with the context it brought; ``reason`` is the metric
    label (missing, too_long, pattern, invalid), the message names the value, never
    its text."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def names_in(text: str) -> list[str]:
    return [m.group(1) for m in CALL_REF.finditer(text)]


def _allowed_place(path: KeyPath) -> bool:
    if path in (("instructions",), ("greeting",)):
        return True
    if len(path) == 3 and path[:2] == ("instructions_from", "arguments"):
        return True
    if len(path) >= 3 and path[0] == "mcp_servers":
        rest = path[2:]
        return rest == ("url",) or (len(rest) == 2 and rest[0] == "headers") \
            or (len(rest) >= 4 and rest[0] == "tools" and rest[2] == "arguments")
    return False


def check_uses(data: Any, declared: Mapping[str, Any], instructions_file_text: str | None = None
               ) -> list[tuple[KeyPath, str]]:
    """Every ``${call.NAME}`` of a spec's plain data: (key path, problem) for a name
    not declared under ``context:`` or a place where nothing is substituted."""
    problems: list[tuple[KeyPath, str]] = []
    known = ", ".join(sorted(declared)) or "none declared"

    def check(text: str, path: KeyPath, where_ok: bool) -> None:
        names = names_in(text)
        if not names:
            return
        if not where_ok:
            problems.append((path, f"${{call.{names[0]}}} is not substituted here; call context is used in {PLACES}"))
            return
        for name in names:
            if name not in declared:
                problems.append((path, f"${{call.{name}}} names no declared context value (context: {known})"))

    def walk(value: Any, path: KeyPath) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if path == () and key == "context":
                    continue
                walk(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i))
        elif isinstance(value, str):
            if path and path[0] == "mcp_servers" and len(path) >= 3 and path[2] == "url" \
                    and CALL_REF.search(urlsplit_host(value)):
                problems.append((path, "${call.*} may be used in a URL's query only, not its scheme, host or path"))
                return
            check(value, path, _allowed_place(path))

    walk(data, ())
    if instructions_file_text is not None:
        check(instructions_file_text, ("instructions_file",), True)
    return problems


def urlsplit_host(url: str) -> str:
    """The part of a URL before its query: a caller's value must not choose where
    the request goes."""
    return url.split("?", 1)[0]


# -- where the values come from ---------------------------------------------------------

def metadata_json(text: str | None) -> dict[str, Any]:
    """Dispatch or room metadata as a JSON object; anything else (not JSON, a list,
    too long, too deep) holds no context."""
    if not text or len(text) > MAX_METADATA_CHARS:
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def gather(declared: Mapping[str, ContextValue], *, dispatch: str | None = None, room: str | None = None,
           attributes: Mapping[str, str] | None = None, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The raw value of each declared name from its ``from:`` source; ``given`` (a
    local call's values by name: /simulate, chat --context, a test case) wins."""
    sources = {"dispatch": metadata_json(dispatch), "room": metadata_json(room), "participant": dict(attributes or {})}
    out: dict[str, Any] = {}
    for name, decl in declared.items():
        kind, _, key = decl.from_.partition(":")
        value = sources.get(kind, {}).get(key)
        if given is not None and name in given:
            value = given[name]
        if value is not None:
            out[name] = value
    return out


def resolve(declared: Mapping[str, ContextValue], raw: Mapping[str, Any]) -> dict[str, str]:
    """The call's values, checked; ``ContextRefused`` says why a call cannot start."""
    from ..core.terminal import LONE_SURROGATE
    from ..core.user_regex import TimedOut, compiled, search

    values: dict[str, str] = {}
    for name, decl in declared.items():
        value = raw.get(name)
        if value is None or value == "":
            if decl.default is not None:
                values[name] = decl.default
            elif decl.required:
                raise ContextRefused("missing", f"required call context {name} is missing (from {decl.from_})")
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ContextRefused("invalid", f"call context {name} must be text or a number, "
                                            f"not {type(value).__name__}")
        text = value if isinstance(value, str) else json.dumps(value)
        if LONE_SURROGATE.search(text):
            # JSON lets metadata escape one ("\udfff"); as no character, it failed every
            # LLM request of the call (UnicodeEncodeError, retried 4 times per turn)
            raise ContextRefused("invalid", f"call context {name} is not text: it holds a lone surrogate")
        if len(text) > decl.max_length:
            raise ContextRefused("too_long", f"call context {name} has {len(text)} characters; "
                                             f"at most {decl.max_length}")
        if decl.pattern is not None:
            try:
                match = search(compiled(decl.pattern), text)
            except TimedOut:
                match = None
            if match is None or match.span() != (0, len(text)):
                raise ContextRefused("pattern", f"call context {name} does not match its pattern")
        values[name] = text
    return values


def local_values(declared: Mapping[str, ContextValue], given: Mapping[str, str]) -> dict[str, str]:
    """A local call's values (chat --context, a test case's ``context:``), checked as a
    LiveKit call's are; a name the spec does not declare is refused."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ContextRefused("invalid", f"no context value named {', '.join(unknown)} is declared "
                                        f"(context: {', '.join(sorted(declared)) or 'none'})")
    return resolve(declared, gather(declared, given=given))


def dispatch_values(declared: Mapping[str, ContextValue], given: Mapping[str, str]) -> dict[str, str]:
    """An outbound call's dispatch metadata (dial --context, POST /calls) checked before
    anything rings, as the job will check it: each key must be the KEY of a declared
    ``from: dispatch:KEY``, and those values pass ``local_values``. Values from the room
    or a participant (the callee's SIP attributes) arrive with the call: the job checks them."""
    by_key = {d.from_.partition(":")[2]: name for name, d in declared.items() if d.from_.startswith("dispatch:")}
    unknown = sorted(set(given) - set(by_key))
    if unknown:
        raise ContextRefused("invalid", f"no context value is read from dispatch:{', dispatch:'.join(unknown)} "
                                        + (f"(the agent's context reads dispatch:{', dispatch:'.join(sorted(by_key))})" if by_key
                                         else "(the agent's context reads no dispatch value)"))
    return local_values({name: declared[name] for name in by_key.values()},
                        {by_key[key]: value for key, value in given.items()})


# -- using them -----------------------------------------------------------------------

def substitute(text: str, values: Mapping[str, str], encode: Any = None) -> str:
    """One pass: a value is inserted as text and never read again for ``${...}``."""
    return CALL_REF.sub(lambda m: (encode or str)(values.get(m.group(1), "")), text)


def _header_safe(name: str, text: str) -> str:
    if not text.isascii() or any(c < " " and c != "\t" or c == "\x7f" for c in text):
        raise ContextRefused("invalid", f"a call context value used in header {name} has a line break, "
                                        "a control character or non-ASCII text")
    return text


def uses_call(server: Any) -> bool:
    """A server block authenticated or addressed per call: never shared across calls."""
    return any(CALL_REF.search(v) for v in getattr(server, "headers", {}).values()) \
        or bool(CALL_REF.search(getattr(server, "url", "") or ""))


def for_call(loaded: Any, values: Mapping[str, str]) -> Any:
    """``loaded`` (a ``loader.LoadedSpec``, untyped here: the loader imports this
    module to check uses) with this call's values in its instructions, greeting and per-call
    MCP blocks. A block using ``${call.*}`` becomes ``shared: false``: its connection
    is this call's own, so one caller's credentials are never lent to another call.
    Pinned tool arguments stay templates here (``pinned_arguments`` fills them per
    tool), so a shared block's identity in the pool does not change per call."""
    spec = loaded.spec
    servers = dict(spec.mcp_servers)
    for name, server in spec.mcp_servers.items():
        if not uses_call(server):
            continue
        headers = {k: _header_safe(k, substitute(v, values)) for k, v in server.headers.items()}
        url = substitute(server.url, values, encode=lambda v: quote(v, safe=""))
        servers[name] = server.model_copy(update={"headers": headers, "url": url, "shared": False})
    update: dict[str, Any] = {"mcp_servers": servers}
    if spec.greeting:
        update["greeting"] = substitute(spec.greeting, values)
    if spec.instructions:
        update["instructions"] = substitute(spec.instructions, values)
    return dataclasses.replace(loaded, spec=spec.model_copy(update=update),
                               instructions=substitute(loaded.instructions, values))


def pinned_arguments(server: Any, tool: str, values: Mapping[str, str]) -> dict[str, Any]:
    """The arguments the spec pins for ``tool`` of this server block, with the call's
    values: the model is not shown them and cannot override them."""
    voice = getattr(server, "tools", {}).get(tool)
    pinned = getattr(voice, "arguments", None) or {}

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return substitute(value, values)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return {k: fill(v) for k, v in pinned.items()}


def public(declared: Mapping[str, ContextValue], values: Mapping[str, str]) -> dict[str, str]:
    """The values a report or a log may show (``secret: true`` left out)."""
    return {k: v for k, v in values.items() if k in declared and not declared[k].secret}


def secret_values(declared: Mapping[str, ContextValue], values: Mapping[str, str]) -> dict[str, str]:
    """value -> the text shown instead, for the process's SecretSet."""
    return {v: f"${{call.{k}}}" for k, v in values.items() if k in declared and declared[k].secret}
