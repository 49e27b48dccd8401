"""Regular expressions a user writes (a spec's ``claims.patterns``, a test's
``reply_matches``): bounded in size when read, in time when run.

Python's ``re`` backtracks for ever on patterns such as ``^(a+)+$`` and holds the
GIL while it does: one such test expectation froze a whole ``serve`` (health
checks, the MCP gateway, SIGTERM). The ``regex`` package reads the same syntax,
stops a match after ``timeout=`` seconds and lets other threads run meanwhile
(``concurrent=True``), so a bad pattern costs at most ``MATCH_TIMEOUT_S`` and
nobody else waits for it.

Compiling cannot be stopped, and counted repetitions make it slow with the GIL held
(``regex`` unrolls them: seconds for ``(a{1000}){1000}``, minutes for one more
level, 1.5 s for 150 separate ``{9999}``), so patterns whose repetitions add up to
too much, and very long ones, are refused when the file is read.
"""

from __future__ import annotations

import functools
from typing import Any

import regex

MATCH_TIMEOUT_S = 0.25  # one search; a reply a pattern has not decided on by then is a bad pattern
MAX_CHARS = 2000  # the built-in claim patterns are under 1000 characters each
MAX_REPEAT = 10_000  # counted repetitions, nested ones multiplied, all added: (a{100}){100} compiles in ~10 ms
MAX_DEPTH = 50  # nested groups and sets: regex's parser recurses, and ran out of stack near 150

_COUNT = regex.compile(r"\{(\d*)(?:,(\d*))?\}")
_SET_OPEN = regex.compile(r"(?<!\\)\[(?!:)")  # a set, or one nested in a set (not [:alpha:])


class TimedOut(Exception):
    """A search ran out of time: the pattern backtracks too much on this text."""

    def __init__(self, pattern: str, seconds: float, chars: int) -> None:
        super().__init__(f"timed out after {seconds:.2g} s on {chars} characters: the pattern backtracks "
                         "too much (nested quantifiers such as (a+)+ or (a|a)*)")
        self.pattern = pattern


def problem(text: str) -> str | None:
    """Why ``text`` is refused as a pattern, or None."""
    if len(text) > MAX_CHARS:
        return f"a pattern of {len(text)} characters; at most {MAX_CHARS}"
    repeats, depth = shape(text)
    if repeats > MAX_REPEAT:
        return (f"counted repetitions ({{n}}, nested ones multiplied, all added up) reach {repeats}; at most "
                f"{MAX_REPEAT} (compiling it would take seconds)")
    if depth > MAX_DEPTH:
        return f"groups and character sets nested {depth} deep; at most {MAX_DEPTH}"
    try:
        compiled(text)
    except regex.error as exc:
        return f"not a regular expression: {exc}"
    except RecursionError:  # what the depth count missed: never a traceback for a pattern
        return "nested too deeply to compile"
    return None


def shape(text: str) -> tuple[int, int]:
    """What makes ``regex`` slow or unable to compile ``text``: its counted
    repetitions (``{n}``, ``{m,n}``: each one's count times what it repeats, nested
    ones multiplied, all of a pattern's added up, as ``regex`` unrolls them: 150
    separate ``{9999}`` in one pattern took 1.5 s, though none was nested) and how
    deep its groups and character sets nest (``regex`` parses them recursively: 150
    levels raised RecursionError). Escapes are skipped; it errs towards counting a
    literal brace as a repetition and a literal ``[`` in a set as a nested set."""
    inside = [0]  # per open group: the repetitions counted within it so far
    last = 0  # those of the atom a following quantifier applies to
    depth = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i, last = i + 2, 0
        elif c == "[":
            end = _class_end(text, i)
            sets = sum(1 for _ in _SET_OPEN.finditer(text, i, end))
            depth = max(depth, len(inside) - 1 + sets)
            i, last = end, 0
        elif c == "(":
            inside.append(0)
            depth = max(depth, len(inside) - 1)
            i, last = i + 1, 0
        elif c == ")":
            last = inside.pop() if len(inside) > 1 else 0
            inside[-1] += last
            i += 1
        elif c == "{" and (m := _COUNT.match(text, i)) and any(m.groups()):
            count = max(int(n) for n in m.groups() if n)
            # the atom's own repetitions are already counted once: count the rest
            inside[-1] += max(last, 1) * count - last
            last = max(last, 1) * count
            i = m.end()
        else:
            i, last = i + 1, 0
    return sum(inside), depth


def _class_end(text: str, start: int) -> int:
    """The index after the ``]`` closing the character class opened at ``start``."""
    i = start + 1
    if text[i:i + 1] == "^":
        i += 1
    if text[i:i + 1] == "]":  # a leading ] is a literal
        i += 1
    while i < len(text) and text[i] != "]":
        i += 2 if text[i] == "\\" else 1
    return i + 1


@functools.lru_cache(maxsize=1024)
def compiled(text: str, ignore_case: bool = False) -> Any:
    """``text`` compiled by ``regex`` (call ``problem`` first: compiling is not bounded)."""
    return regex.compile(text, regex.IGNORECASE if ignore_case else 0)


def search(pattern: Any, text: str, timeout: float = MATCH_TIMEOUT_S, pos: int = 0, endpos: int | None = None) -> Any:
    """``pattern.search`` bounded by ``timeout`` seconds (``TimedOut`` then), other
    threads running meanwhile."""
    try:
        return pattern.search(text, pos, len(text) if endpos is None else endpos, concurrent=True,
                              timeout=max(timeout, 0.001))
    except TimeoutError:
        raise TimedOut(pattern.pattern, timeout, len(text)) from None


def finditer(pattern: Any, text: str, timeout: float = MATCH_TIMEOUT_S) -> Any:
    """``pattern.finditer`` whose whole iteration is bounded by ``timeout`` seconds."""
    try:
        yield from pattern.finditer(text, concurrent=True, timeout=max(timeout, 0.001))
    except TimeoutError:
        raise TimedOut(pattern.pattern, timeout, len(text)) from None
