"""A YAML syntax error in plain words, at the place a person fixes it.

ruamel (the parser ``check`` uses) words its errors as PyYAML did ("while scanning a
quoted scalar ... found unexpected end of stream") and marks two places: where it
gave up (``problem_mark``) and what it was reading then (``context_mark``). For an
unclosed quote or bracket the first is the end of the file, far from the mistake;
the second is where the quote or bracket opens, so that is the place shown, and
the message says where the parser gave up.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import Loc

# ruamel's names of what it found, as a person would say them
_FOUND = {
    "<stream end>": "the end of the file",
    "<document end>": "the end of the document",
    "<scalar>": "a value",
    "<block end>": "the end of an indented block",
    "<block mapping start>": "an indented key",
    "<block sequence start>": "an indented list",
    "<block entry>": "a list item ('-')",
    "<key>": "a key",
    "?": "a key",
    "<value>": "':'",
    "<flow mapping start>": "'{'",
    "<flow sequence start>": "'['",
    "<anchor>": "an anchor ('&')",
    "<alias>": "an alias ('*')",
    "<tag>": "a tag ('!')",
}
_EXPECTED_BUT = re.compile(r"expected (?P<expected>.+?), but (?:got|found) (?P<found>.+)\Z")
_FLOW = {"flow sequence": ("list", "[", "]"), "flow mapping": ("mapping", "{", "}")}


def plain(exc: Any) -> tuple[Loc, str]:
    """Where ``exc`` (a ruamel ``MarkedYAMLError``) is to be fixed, and what is wrong."""
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    at, opened = _loc(exc.problem_mark), _loc(exc.context_mark)
    expected = _EXPECTED_BUT.match(problem)
    if "quoted scalar" in context and opened is not None:
        quote = _char_at(exc.context_mark) or '"'
        if problem in ("found unexpected end of stream", "found unexpected document separator"):
            until = "the end of the file" if problem.endswith("stream") else f"the '---' at line {at and at[0]}"
            return opened, f"the string opened here with {quote} is never closed: no closing {quote} before {until}"
        escape = re.match(r"found unknown escape character (.+)\Z", problem)
        if escape is not None:
            shown = escape.group(1).strip("'")
            return at or opened, (f"'\\{shown}' is not an escape a double-quoted string can hold: write '\\\\{shown}' "
                                  "for a backslash, or quote the value with ' instead")
    for name, (what, opener, closer) in _FLOW.items():
        if context.endswith(name) and expected is not None and opened is not None:
            found = _said(expected.group("found"))
            if found == "the end of the file":
                return opened, f"the {what} opened here with '{opener}' is never closed: no '{closer}' before the end of the file"
            return opened, (f"the {what} opened here with '{opener}' is not closed: at line {at[0]} col {at[1]} there "
                            f"is {found} where ',' or '{closer}' was expected" if at else
                            f"the {what} opened here with '{opener}' is not closed")
    if expected is not None and expected.group("expected") == "the node content" and at is not None:
        return at, f"a value is missing: {_said(expected.group('found'))} here where a value should be"
    if "block scalar" in context and expected is not None and at is not None:
        return at, (f"{_said(expected.group('found'))} after '|' or '>': only a digit, '+' or '-' may follow them "
                    "on their line; the text goes on the next lines, indented")
    if problem == "sequence entries are not allowed here" and at is not None:
        return at, "a list item ('- ') cannot start here: put it on its own line, indented under its key"
    if expected is not None and expected.group("expected") == "<block end>" and at is not None:
        block = "list" if "sequence" in context or "collection" in context else "mapping"
        start = f" that starts at line {opened[0]}" if opened else ""
        return at, (f"{_said(expected.group('found'))} here is unexpected: the {block}{start} has no place for it "
                    "(check this line's indentation, or a bracket or quote too many)")
    if problem == "mapping values are not allowed here" and at is not None:
        return at, ("a ':' here, inside a value: quote a value that holds ': ' (\"...\"), or if this is a nested "
                    "key, indent it under a key that has no value on its own line")
    if context == "while scanning a simple key" and opened is not None:
        return opened, "this line is not 'key: value' nor a list item ('- ...'): put ': ' after the key, or quote the text"
    bad_start = re.match(r"found character (.+) that cannot start any token\Z", problem)
    if bad_start is not None and at is not None:
        if bad_start.group(1) == "'\\t'":
            return at, "a tab here: YAML does not allow tabs for indentation; use spaces"
        return at, f"a value cannot start with {bad_start.group(1)}: quote the value (\"...\")"
    alias = re.match(r"found undefined alias '(.+)'\Z", problem)
    if alias is not None and at is not None:
        name = alias.group(1)
        return at, f"'*{name}' names an anchor '&{name}' that is defined nowhere above; quote the value if '*' is text"
    # anything else in ruamel's words, with what it was reading and where that began
    reading = re.sub(r"^while (?:scanning|parsing) ", "", context)
    where = f" (reading {reading} from line {opened[0]} col {opened[1]})" if context and opened is not None \
        and opened != at else ""
    return at or opened or (1, 1), f"{problem or context or 'invalid YAML'}{where}"


def _loc(mark: Any) -> Loc | None:
    return None if mark is None else (mark.line + 1, mark.column + 1)


def _char_at(mark: Any) -> str | None:
    buffer, index = getattr(mark, "buffer", None), getattr(mark, "index", None)
    if isinstance(buffer, str) and isinstance(index, int) and 0 <= index < len(buffer):
        return buffer[index]
    return None


def _said(found: str) -> str:
    return _FOUND.get(found.strip("'\""), found)
