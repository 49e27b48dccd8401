"""A server's ``tools/list`` answer, read tool by tool.

The mcp SDK (2.3.0) validates a listing as one piece: one tool whose schema is
not an object, or a field the protocol forbids, fails the whole ``list_tools``,
and a message nested deeper than pydantic's JSON parser goes (about 200 levels)
is not even parsed: the transport drops it, nobody answers the request, and the
connect waits out ``connect_timeout``. Every tool of the server is lost either way.

``ListingFilter`` sees each message on the read stream before the SDK does. An
unparseable too-deep message is parsed again with its deep parts cut off
(``shallow``); a listing's tools are checked one by one (protocol validation for
the negotiated version, depth, size, count); a tool that fails is taken out of
the message and kept in ``rejected`` with the reason, so the SDK accepts the rest
and ``check``/``tools`` say what was withheld and why. A too-deep answer to any
other request becomes a JSON-RPC error, so that call fails at once with a reason.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.terminal import printable

log = logging.getLogger("voice_runtime.mcp")

# JSON levels a tool's definition may take below its own object (inputSchema is 1):
# a hand-written or generated schema rarely needs 20; no model is helped by more.
MAX_DEFINITION_DEPTH = 64
# A tool whose definition is larger can never be offered (it alone is over the
# definitions budget toolset.MAX_TOOL_DEFINITIONS_CHARS), so it is not kept.
MAX_DEFINITION_CHARS = 256 * 1024
# Tools kept per server, over all pages: a listing of 100,000 would cost every
# session (and every job process the gateway hands them to) memory and time.
MAX_LISTED_TOOLS = 20_000
# A message nested deeper than this is cut here before it is parsed again; under
# pydantic-core's JSON recursion limit (200), above any tool's allowed depth.
MAX_MESSAGE_DEPTH = 128
MAX_REASON_CHARS = 300
_CUT = "\x00voice-runtime: nested too deep\x00"  # stands where a cut subtree was
_CUT_JSON = json.dumps(_CUT)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


@dataclass(frozen=True)
class Rejected:
    """A listed tool that is not kept, and why (one line, bounded, printable)."""

    name: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


def shallow(text: str, limit: int = MAX_MESSAGE_DEPTH) -> str:
    """``text`` (JSON) with every array or object that starts deeper than ``limit``
    replaced by a marker string: linear in the text, whatever its depth."""
    parts: list[str] = []
    depth = 0
    kept = 0  # text[:kept] is in parts
    cut_at: int | None = None
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            continue
        if token in "[{":
            depth += 1
            if depth > limit and cut_at is None:
                cut_at = match.start()
        else:
            depth -= 1
            if cut_at is not None and depth == limit:
                parts += [text[kept:cut_at], _CUT_JSON]
                kept, cut_at = match.end(), None
    parts.append(text[kept:])
    return "".join(parts)


def _too_deep(exc: BaseException) -> str | None:
    """The raw message a transport could not parse for its depth, or None."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return None
    try:
        first = errors()[0]
    except Exception:  # noqa: BLE001 - not a pydantic ValidationError after all
        return None
    raw = first.get("input")
    if first.get("type") != "json_invalid" or "recursion limit" not in str(first.get("msg", "")):
        return None
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", errors="replace")
    return raw if isinstance(raw, str) else None


class _QuietWhenRead(logging.Filter):
    """Drops the SDK transports' traceback for a message too deep to parse: the
    listing filter reads it anyway and the connection logs what it withheld."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or _too_deep(exc) is None


def install_log_filter() -> None:
    for name in ("mcp.client.stdio", "mcp.client.sse"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietWhenRead) for f in logger.filters):
            logger.addFilter(_QuietWhenRead())


def parse_shallow(text: str) -> Any:
    """A JSON-RPC message too deep for the SDK's parser, with its deep parts cut."""
    import mcp_types

    return mcp_types.jsonrpc_message_adapter.validate_json(shallow(text), by_name=False)


def _shape(value: Any, limit: int) -> tuple[int, int, bool]:
    """(depth, about how many characters, whether a part was cut) of a JSON value,
    without recursion; stops counting past ``limit`` levels."""
    depth = size = 0
    cut = False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        depth = max(depth, level)
        if level > limit:
            continue
        if isinstance(item, dict):
            size += 2
            for key, child in item.items():
                size += len(key) + 4
                stack.append((child, level + 1))
        elif isinstance(item, list):
            size += 2
            stack.extend((child, level + 1) for child in item)
        elif isinstance(item, str):
            size += len(item) + 2
            cut = cut or item == _CUT
        else:
            size += 5
    return depth, size, cut


def _reason(text: str) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _name(tool: Any, index: int) -> str:
    name = tool.get("name") if isinstance(tool, dict) else None
    return name[:200] if isinstance(name, str) and name else f"#{index + 1} (no name)"


def _validation_errors(exc: Any) -> dict[int, str]:
    """tool index -> its first protocol error, from a ValidationError of a listing."""
    found: dict[int, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        loc = error.get("loc") or ()
        if len(loc) >= 2 and loc[0] == "tools" and isinstance(loc[1], int) and loc[1] not in found:
            where = ".".join(str(p) for p in loc[2:]) or "the tool"
            found[loc[1]] = f"{where}: {error.get('msg', 'invalid')}"
    return found


class ListingFilter:
    """Called on every item the transport delivers (see ``transports.Watched``).
    ``version()`` is the negotiated protocol version (None before ``initialize``).
    The connection resets ``rejected`` and ``kept`` before it lists the tools."""

    def __init__(self, server: str, version: Callable[[], str | None]) -> None:
        self.server = server
        self.version = version
        self.rejected: list[Rejected] = []
        self.kept = 0  # tools kept over the pages of the current listing

    def reset(self) -> None:
        self.rejected, self.kept = [], 0

    def __call__(self, item: Any) -> Any:
        from mcp.shared.message import SessionMessage
        from mcp_types import JSONRPCError, JSONRPCResponse

        cut = False
        if isinstance(item, Exception):
            raw = _too_deep(item)
            if raw is None:
                return item
            try:
                message = parse_shallow(raw)
            except Exception:  # noqa: BLE001 - not JSON-RPC even when cut: the SDK reports it
                return item
            item, cut = SessionMessage(message), True
        message = getattr(item, "message", None)
        if not isinstance(message, JSONRPCResponse):
            return item
        result = message.result
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            self._check_tools(result)
        elif cut:
            from mcp_types import ErrorData

            return SessionMessage(JSONRPCError(jsonrpc="2.0", id=message.id, error=ErrorData(
                code=-32603, message=f"the answer is nested deeper than {MAX_MESSAGE_DEPTH} levels; not read")))
        return item

    def _check_tools(self, result: dict[str, Any]) -> None:
        tools: list[Any] = result["tools"]
        room = MAX_LISTED_TOOLS - self.kept
        if len(tools) > room:
            self.rejected.append(Rejected("", (
                f"{len(tools) - max(room, 0)} more tools not read (a server may list at most {MAX_LISTED_TOOLS})")))
            del tools[max(room, 0):]
        bad: dict[int, str] = {}
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict):
                bad[index] = f"not an object but {type(tool).__name__}"
                continue
            for field, value in tool.items():
                depth, _, cut = _shape(value, MAX_DEFINITION_DEPTH)
                if cut or depth >= MAX_DEFINITION_DEPTH:
                    bad[index] = f"{field} nested deeper than {MAX_DEFINITION_DEPTH} levels"
                    break
            else:
                size = _shape(tool, MAX_DEFINITION_DEPTH)[1]
                if size > MAX_DEFINITION_CHARS:
                    bad[index] = (f"its definition is about {size // 1024} KiB, over the "
                                  f"{MAX_DEFINITION_CHARS // 1024} KiB the model may be offered")
        version = self.version()
        if version is not None:
            bad |= {i: e for i, e in self._protocol_errors(result, version, bad).items() if i not in bad}
        for index in sorted(bad, reverse=True):
            self.rejected.append(Rejected(printable(_name(tools[index], index)), _reason(bad[index])))
            del tools[index]
        self.kept += len(tools)

    def _protocol_errors(self, result: dict[str, Any], version: str, skip: dict[int, str]) -> dict[int, str]:
        """The tools the SDK's validation of this listing would fail on; one pass."""
        from mcp_types import methods
        from pydantic import ValidationError

        trial = {**result, "tools": [t for i, t in enumerate(result["tools"]) if i not in skip]}
        index_of = [i for i in range(len(result["tools"])) if i not in skip]
        try:
            methods.validate_server_result("tools/list", version, trial)
        except (KeyError, ValueError) as exc:
            if not isinstance(exc, ValidationError):
                return {}  # a version or method this SDK does not check: nothing to add
            return {index_of[i]: error for i, error in _validation_errors(exc).items() if i < len(index_of)}
        return {}


class _ShallowOnDepth:
    """The SDK's message adapter, reading a message too deep for it with its deep
    parts cut (streamable HTTP turns a parse failure into a JSON-RPC error at
    once, so ``ListingFilter`` never sees the raw text there)."""

    def __init__(self, adapter: Any) -> None:
        self._adapter = adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def validate_json(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._adapter.validate_json(data, *args, **kwargs)
        except ValueError as exc:
            raw = _too_deep(exc)
            if raw is None:
                raise
            return self._adapter.validate_json(shallow(raw), *args, **kwargs)


def install_http() -> None:
    from . import compat

    adapter = compat.http_message_adapter()
    if not isinstance(adapter, _ShallowOnDepth):
        compat.set_http_message_adapter(_ShallowOnDepth(adapter))
