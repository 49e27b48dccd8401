"""The tool plan: which MCP and plugin tools an agent's model is shown, under which
names, and one MCP tool call with its record (``call_tool``).

What livekit's own MCPToolset lacks and this adds: allow-lists on every transport,
prefixes (automatic on a name collision, which livekit turns into a ValueError),
results as plain text capped in size, failures as a sentence the model can say,
and a ToolCallRecord for every call. The livekit function tools made from the plan
are ``session.tools``: this package never imports livekit.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.terminal import printable
from ..observe.tool_calls import rpc_error
from .connection import McpUnavailable
from .pins import tool_digest
from .content import result_text
from .tasks import declares_task_calls

if TYPE_CHECKING:
    from mcp.types import CallToolResult

    from ..observe.tool_calls import CallRecorder
    from .connection import McpConnection


class ToolFailure(Exception):
    """A failed call, worded for the model to say to the caller; ``outcome`` as in
    its ToolCallRecord (error, timeout, unavailable)."""

    def __init__(self, message: str, outcome: str = "error") -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class McpTool:
    """One MCP tool as the model sees it."""

    exposed: str
    conn: McpConnection
    tool: Any  # mcp.types.Tool
    # arguments the spec pins (``tools.TOOL.arguments``, with the call's values): not
    # shown to the model, merged over whatever it sends
    pinned: Mapping[str, Any] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return self.conn.name

    @property
    def parameters(self) -> dict[str, Any]:
        schema = self.tool.input_schema or {"type": "object", "properties": {}}
        if not self.pinned:
            return schema
        properties = {k: v for k, v in (schema.get("properties") or {}).items() if k not in self.pinned}
        out = {**schema, "properties": properties}
        if isinstance(schema.get("required"), list):
            out["required"] = [k for k in schema["required"] if k not in self.pinned]
        return out


# What OpenAI accepts as a function name (chat completions and realtime alike);
# anything else makes the whole request fail, every turn of every session.
VALID_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# OpenAI refuses a request with more than 128 tools; a definition budget keeps the
# request (and the tokens a voice turn pays for on every request) bounded: 10,000
# tools made a request over 1 MiB.
MAX_TOOLS = 128
MAX_TOOL_DEFINITIONS_CHARS = 256 * 1024


SHOWN_NAMES = 3  # tools named in the one warning about tools over the limits


@dataclass(frozen=True)
class Withheld:
    """A tool the model is not shown, and why."""

    # duplicate, collision, invalid_name, not_approved, changed, over_limit,
    # invalid_definition (the listing's check refused it: listing.py), task_required
    kind: str
    source: str  # "mcp:<server>" or "plugin:<plugin>"
    original: str  # as the server or plugin names it
    name: str  # the name the model would have seen
    reason: str  # a sentence naming the servers involved
    servers: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "original": self.original, "name": self.name,
                "reason": self.reason, "servers": list(self.servers)}


@dataclass
class ToolPlan:
    """What the model is shown of an agent's tools, and what is withheld."""

    mcp: list[McpTool]
    plugin: list[Any]  # livekit function tools that survive
    withheld: list[Withheld]

    def warnings(self) -> list[str]:
        """One line per withheld tool; tools over the limits are one line per server."""
        lines: list[str] = []
        over: dict[str, list[str]] = {}
        for w in self.withheld:
            if w.kind == "over_limit":
                over.setdefault(w.source, []).append(_q(w.name))
            else:
                lines.append(w.reason)
        for source, names in over.items():
            count = len(names)  # a few names, so the operator knows which tools the model lacks
            shown = ", ".join(names[:SHOWN_NAMES]) + (f" and {count - SHOWN_NAMES} more" if count > SHOWN_NAMES else "")
            lines.append(
                f"{count} tool{'s' if count != 1 else ''} of {source} withheld ({shown}): the model is offered at most "
                f"{MAX_TOOLS} tools and {MAX_TOOL_DEFINITIONS_CHARS // 1024} KiB of tool definitions "
                "(narrow it with allowed_tools)"
            )
        return lines


def join_prefix(prefix: str | None, name: str) -> str:
    """``legacy`` + ``echo`` -> ``legacy_echo``; a prefix that already ends in ``_`` or
    ``-`` is used as is (as pydantic-ai's ``tool_prefix`` does)."""
    if not prefix:
        return name
    return f"{prefix}{name}" if prefix[-1] in "_-" else f"{prefix}_{name}"


def plan_tools(
    connections: dict[str, McpConnection],
    *,
    plugin_tools: Sequence[tuple[str, Any]] = (),
    lock: dict[str, dict[str, str]] | None = None,
    pins: Callable[[Any, str], Mapping[str, Any]] | None = None,
) -> ToolPlan:
    """Decide what the model sees, so that no server can make a session fail.

    livekit raises (and every session dies) on a name listed twice, and OpenAI
    refuses a request whose tool names or size are out of bounds; so a tool that
    would cause either is withheld with a reason naming the servers involved.
    ``plugin_tools``: (source, livekit tool or PluginFunction) pairs, in the spec's order; they win
    over MCP tools. ``lock``: the spec's tool lock (server -> tool -> digest), or
    None when there is none. ``pins(server block, tool name)``: the arguments pinned
    for that tool in this call."""
    withheld: list[Withheld] = []
    plugins: list[Any] = []
    plugin_names: dict[str, str] = {}  # exposed name -> source
    for source, lk_tool in plugin_tools:
        name = _plugin_info(lk_tool).name
        if name in plugin_names:
            withheld.append(Withheld("duplicate", source, name, name, (
                f"tool {_q(name)} of {source} withheld: {plugin_names[name]} already provides a tool of that name")))
            continue
        plugin_names[name] = source
        plugins.append(lk_tool)

    candidates: list[tuple[str, McpConnection, Any, str]] = []  # server, conn, tool, name with prefix
    for server, conn in connections.items():
        source = f"mcp:{server}"
        allowed = conn.server.allowed_tools
        for rejected in getattr(conn, "rejected", ()):
            if allowed is not None and rejected.name not in allowed:
                continue  # a tool the spec does not want: not worth a warning
            reason = (f"tool {_q(rejected.name)} of MCP server {server} withheld: {rejected.reason}" if rejected.name
                      else f"MCP server {server}: {rejected.reason}")
            withheld.append(Withheld("invalid_definition", source, rejected.name,
                                     join_prefix(conn.server.prefix, rejected.name) if rejected.name else "",
                                     reason, (server,)))
        listed = _allowed(conn)
        counts = Counter(t.name for t in listed)
        approved, since = conn.pins.approved(lock)
        reported: set[str] = set()
        for tool in listed:
            name = join_prefix(conn.server.prefix, tool.name)
            shown = _q(tool.name)
            if counts[tool.name] > 1:
                if tool.name not in reported:
                    reported.add(tool.name)
                    withheld.append(Withheld("duplicate", source, tool.name, name, (
                        f"tool {shown} of MCP server {server} withheld: the server lists it "
                        f"{counts[tool.name]} times"), (server,)))
                continue
            if approved is not None and tool.name not in approved:
                withheld.append(Withheld("not_approved", source, tool.name, name, (
                    f"tool {shown} of MCP server {server} withheld: new since {since}, not approved; "
                    "`voice-runtime tools --lock` approves it"), (server,)))
                continue
            if approved is not None and approved[tool.name] != tool_digest(tool):
                withheld.append(Withheld("changed", source, tool.name, name, (
                    f"MCP server {server} changed the definition of {shown} since {since}; withheld "
                    "until `voice-runtime tools --lock` approves it"), (server,)))
                continue
            if not VALID_TOOL_NAME.fullmatch(name):
                withheld.append(Withheld("invalid_name", source, tool.name, name, _invalid(name, server), (server,)))
                continue
            if task_only(tool) and not declares_task_calls(getattr(conn, "capabilities", None)):
                withheld.append(Withheld("task_required", source, tool.name, name, (
                    f"tool {shown} of MCP server {server} withheld: it runs only as an MCP task "
                    "(execution.taskSupport: required), and the server does not declare tasks for tool "
                    "calls (capabilities.tasks.requests.tools.call)"), (server,)))
                continue
            candidates.append((server, conn, tool, name))

    # names colliding across servers (or with a plugin tool) get `<server>_` in front
    counts = Counter([name for *_, name in candidates] + list(plugin_names))
    kept: list[McpTool] = []
    renamed: list[tuple[str, McpConnection, Any, str, str]] = []
    for server, conn, tool, name in candidates:
        if counts[name] > 1:
            renamed.append((server, conn, tool, name, f"{server}_{name}"))
        else:
            kept.append(McpTool(name, conn, tool))
    taken = {t.exposed: f"MCP server {t.server}" for t in kept}
    taken |= {n: s for n, s in plugin_names.items()}
    renamed_counts = Counter(new for *_, new in renamed)
    for server, conn, tool, name, new in renamed:
        source = f"mcp:{server}"
        others = sorted({s for s, _, t, n in candidates if n == name and s != server})
        clash = [f"MCP server{'s' if len(others) != 1 else ''} {', '.join(others)}"] if others else []
        if name in plugin_names:
            clash.append(plugin_names[name])
        if not VALID_TOOL_NAME.fullmatch(new):
            withheld.append(Withheld("invalid_name", source, tool.name, new, _invalid(new, server), (server,)))
        elif new in taken or renamed_counts[new] > 1:
            owner = taken.get(new) or "another renamed tool"
            withheld.append(Withheld("collision", source, tool.name, new, (
                f"tool {_q(tool.name)} of MCP server {server} withheld: {_q(name)} is also a tool of "
                f"{' and '.join(clash)}, and {_q(new)} is taken by {owner}"), (server, *others)))
        else:
            kept.append(McpTool(new, conn, tool))

    order = {(s, id(t)): i for i, (s, _, t, _) in enumerate(candidates)}
    kept.sort(key=lambda t: order[(t.server, id(t.tool))])
    if pins is not None:
        kept = [McpTool(t.exposed, t.conn, t.tool, pins(t.conn.server, t.tool.name)) for t in kept]
    mcp, over = _within_limits(kept, len(plugins), sum(_plugin_size(t) for t in plugins))
    withheld += [Withheld("over_limit", f"mcp:{t.server}", t.tool.name, t.exposed,
                          f"tool {_q(t.exposed)} of MCP server {t.server} withheld: over the tool limits",
                          (t.server,)) for t in over]
    return ToolPlan(mcp, plugins, withheld)


def task_only(tool: Any) -> bool:
    """A tool the server runs only as a task: a plain tools/call of it always fails."""
    execution = getattr(tool, "execution", None)
    return getattr(execution, "task_support", None) == "required"


def _q(name: str) -> str:
    """A server-supplied name for a message: as is when it is a valid tool name,
    else quoted with its control characters escaped."""
    return name if VALID_TOOL_NAME.fullmatch(name) else printable(repr(name))


def _invalid(name: str, server: str) -> str:
    return (f"tool {_q(name)} of MCP server {server} withheld: not a valid tool name for the model "
            "(1 to 64 letters, digits, _ or -)")


def definition_size(tool: McpTool) -> int:
    return len(json.dumps({"name": tool.exposed, "description": tool.tool.description or "",
                           "parameters": tool.parameters}, default=str))


def _plugin_info(tool: Any) -> Any:
    """What holds a plugin tool's name and description: a livekit tool's ``info``,
    or the PluginFunction itself (`tools` and `call` plan without livekit)."""
    return getattr(tool, "info", tool)


def _plugin_size(lk_tool: Any) -> int:
    info = _plugin_info(lk_tool)
    return len(info.name) + len(getattr(info, "description", "") or "") + 200


def _within_limits(tools: list[McpTool], count: int, size: int) -> tuple[list[McpTool], list[McpTool]]:
    kept, over = [], []
    for tool in tools:
        tool_size = definition_size(tool)
        if count < MAX_TOOLS and size + tool_size <= MAX_TOOL_DEFINITIONS_CHARS:
            kept.append(tool)
            count += 1
            size += tool_size
        else:
            over.append(tool)
    return kept, over


def _allowed(conn: McpConnection) -> list[Any]:
    allowed = conn.server.allowed_tools
    return [t for t in conn.tools if allowed is None or t.name in allowed]


def visible_tools(connections: dict[str, McpConnection], lock: dict[str, dict[str, str]] | None = None) -> list[McpTool]:
    return plan_tools(connections, lock=lock).mcp


# what the model is told of a failure's own text (the server's words): enough to
# explain it to the caller, never a second copy of a capped result
SAID_CHARS = 1000
# JSON-RPC's own codes (https://www.jsonrpc.org/specification#error_object), named
# in the sentence the model receives
RPC_ERRORS = {-32700: "parse error", -32600: "invalid request", -32601: "method not found",
              -32602: "invalid params", -32603: "internal error"}


async def call_tool(tool: McpTool, arguments: dict[str, Any], recorder: CallRecorder) -> str:
    """Call through the connection, traced; the result is capped text. Raises
    ToolFailure with a sentence the model can say, which may quote the server; the
    call's record gets a fixed description instead (see ``ToolCallRecord.error``)."""
    from mcp.shared.exceptions import MCPError

    conn, server, name = tool.conn, tool.server, tool.tool.name
    if tool.pinned:  # the spec's values win: the model cannot forge a pinned argument
        arguments = {**arguments, **tool.pinned}
    with recorder.call(server=server, tool=name, exposed_name=tool.exposed, arguments=arguments) as call:
        failure: ToolFailure
        try:
            result = await conn.call(name, arguments)
        except McpUnavailable:
            failure = ToolFailure(f"the {server} service is not available right now", "unavailable")
            call.fail("unavailable", "server down", str(failure))
            raise failure from None
        except asyncio.TimeoutError as exc:  # our own words: which limit ran out
            failure = ToolFailure(f"the {server} service did not answer in time", "timeout")
            call.fail("timeout", str(exc) or f"no answer within {conn.server.timeout:g}s", str(failure))
            raise failure from None
        except asyncio.CancelledError:
            raise  # the user interrupted; the SDK tells the server
        except MCPError as exc:  # the server refused the request: a JSON-RPC error
            meaning = RPC_ERRORS.get(exc.code, "server error")
            failure = ToolFailure(f"the {server} tool {name} could not run (error {exc.code}, {meaning}): "
                                  f"{cap_text(exc.message, SAID_CHARS)}")
            call.fail("error", rpc_error(exc.code), str(failure))
            raise failure from None
        except Exception as exc:  # our side of the call failed; its text may hold the arguments
            failure = ToolFailure(f"the {server} tool {name} failed")
            call.fail("error", f"client error ({type(exc).__name__})", str(failure))
            raise failure from None
        call.text = cap_text(result_text(result), conn.server.max_result_chars)
        if result.is_error:
            failure = ToolFailure(f"the {server} tool {name} failed: {cap_text(call.text, SAID_CHARS)}")
            call.fail("error", "tool error", str(failure))
            raise failure
        return call.text


_CAPPED = re.compile(r"\n\[result truncated: \d+ characters, showing the first (\d+)\]")


def cap_text(text: str, cap: int) -> str:
    """At most ``cap`` characters, and a marker saying how many there were. Capping
    capped text changes nothing (serve caps a result before lending it to a job,
    which caps it again)."""
    if len(text) <= cap:
        return text
    marker = _CAPPED.fullmatch(text, cap)
    if marker is not None and int(marker.group(1)) == cap:
        return text
    return text[:cap] + f"\n[result truncated: {len(text)} characters, showing the first {cap}]"
