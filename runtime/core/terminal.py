"""Text from MCP servers and specs, made safe to print on a terminal.

A tool name, description, result or a server's stderr is written by someone else.
Printed raw, its control characters drive the terminal: ESC sequences clear the
screen, set the window title or plant OSC 8 hyperlinks, and bidi overrides make
text read differently from what it is. Every print site of such text goes through
``printable``; JSON output needs nothing more (``json.dumps`` escapes these with
its default ``ensure_ascii=True``).
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (0x9b is a one-byte CSI), the bidi embeddings,
# overrides and isolates (U+202A-202E, U+2066-2069), the marks U+200E, U+200F and
# U+061C, and the Unicode line and paragraph separators.
# Lone surrogates too: no character, a UTF-8 stream cannot write one (chat crashed on it).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_KEEPING_LINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# A "\udfff" JSON or YAML escape, or an environment variable's bytes that are not
# UTF-8 (Python reads them as "\udce9"): in text sent anywhere (an LLM request, a log
# line, a report) it raises UnicodeEncodeError.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def as_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, as a UTF-8 decoder would."""
    return LONE_SURROGATE.sub("\ufffd", text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with every terminal control character shown as an escape (``\\x1b``,
    ``\\u202e``). ``lines=True`` keeps newlines and tabs, for multi-line output
    such as a tool's result. Idempotent: escaping escaped text changes nothing."""
    return (_UNSAFE_KEEPING_LINES if lines else _UNSAFE).sub(_escape, text)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns for a terminal; every cell made printable (names and errors come from
    MCP servers and specs)."""
    rows = [[printable(str(c)) for c in row] for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def shortened(text: str, width: int) -> str:
    """One line of at most ``width`` characters: whitespace runs made one space, the
    rest cut with "..." (a description in a table column)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
