"""Linear-time, size-bounded reading of a stdio MCP server's messages.

The mcp SDK's stdio reader (2.3.0) re-joins and re-splits its whole buffer for
every 64 KiB chunk, so one 50 MB line costs minutes of CPU on the event loop that
every session shares. ``install()`` swaps the text stream the SDK reads from for
one that hands it whole lines only (its buffer then stays empty) and refuses a
line over ``MAX_LINE_CHARS``: that line is skipped as it streams by, never held,
and the request it answered gets a JSON-RPC error instead, so the call fails at
once with a reason rather than after its timeout.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

MAX_LINE_CHARS = 128 * 1024 * 1024
_ID = re.compile(r'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')
_installed = False


def too_large_reply(head: str, limit: int) -> str | None:
    """A JSON-RPC error for the response whose first characters are ``head``."""
    match = _ID.search(head)
    if match is None:
        return None  # a notification or a request from the server: nobody waits for it
    return json.dumps({
        "jsonrpc": "2.0", "id": json.loads(match.group(1)),
        "error": {"code": -32603, "message": f"message too large (over {limit // (1024 * 1024)} MiB); not read"},
    })


async def whole_lines(chunks: AsyncIterator[str], limit: int = MAX_LINE_CHARS) -> AsyncIterator[str]:
    """Re-chunk text so every piece ends with a newline (but a final unterminated
    one); a line longer than ``limit`` is replaced by ``too_large_reply``."""
    parts: list[str] = []
    size = 0
    dropping: str | None = None  # the head of an over-long line whose rest is being skipped
    async for chunk in chunks:
        if dropping is not None:
            end = chunk.find("\n")
            if end < 0:
                continue
            reply = too_large_reply(dropping, limit)
            dropping = None
            if reply is not None:
                yield reply + "\n"
            chunk = chunk[end + 1 :]
        last = chunk.rfind("\n")
        if last < 0:
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                dropping, parts, size = "".join(parts)[:512], [], 0
            continue
        parts.append(chunk[: last + 1])
        yield "".join(parts)
        rest = chunk[last + 1 :]
        parts, size = ([rest], len(rest)) if rest else ([], 0)
    if parts and dropping is None:
        yield "".join(parts)


def install() -> None:
    global _installed
    if _installed:
        return
    from . import compat

    original = compat.stdio_text_stream()

    class WholeLineStream:
        def __init__(self, stream: Any, *args: Any, **kwargs: Any) -> None:
            self._text = original(stream, *args, **kwargs)

        def __aiter__(self) -> AsyncIterator[str]:
            return whole_lines(self._text.__aiter__())

    compat.set_stdio_text_stream(WholeLineStream)
    _installed = True
