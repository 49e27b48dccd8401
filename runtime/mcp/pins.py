"""Tool pinning: what a model is told about a tool must not change under it.

A tool's definition is summed up as a digest. Each connection remembers the
digests of its first listing (``ToolPins``) and names the tools changed since; a
spec's tool lock (``<spec>.tools.lock``, written by `voice-runtime tools --lock`)
holds the digests an operator approved. ``toolset.plan_tools`` withholds what
either does not approve.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.terminal import printable

MAX_LOCK_BYTES = 4 * 1024 * 1024  # a lock lists tool digests: far below this for any real server

if TYPE_CHECKING:
    from mcp.types import Tool

    from ..spec.loader import LoadedSpec

log = logging.getLogger("voice_runtime.mcp")

# server -> tool -> digest
ToolLock = dict[str, dict[str, str]]


def tool_digest(tool: Tool) -> str:
    """What a model is told about a tool; a change after the first listing is a
    possible "rug pull" (a server swapping in new instructions mid-deployment)."""
    text = json.dumps(
        {"name": tool.name, "description": tool.description or "", "schema": tool.input_schema or {}},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def first_digests(tools: Iterable[Tool]) -> dict[str, str]:
    """name -> digest; a name listed twice keeps its first definition."""
    digests: dict[str, str] = {}
    for tool in tools:
        digests.setdefault(tool.name, tool_digest(tool))
    return digests


class ToolPins:
    """One server's tool definitions as first listed, and the tools changed since."""

    def __init__(self, server: str, *, pin_tools: bool) -> None:
        self.server = server
        self.pin_tools = pin_tools  # the spec's `pin_tools`: changed tools are withheld
        self.pinned: dict[str, str] | None = None  # None until the first listing
        self.changed: list[str] = []

    def compare(self, tools: Iterable[Tool]) -> None:
        """Pin the first listing; on later ones, name (and log once) the tools whose
        definition differs from it."""
        tools = list(tools)
        if self.pinned is None:
            self.pinned = first_digests(tools)
            return
        digests = {t.name: tool_digest(t) for t in tools}
        changed = sorted(n for n, d in digests.items() if n in self.pinned and self.pinned[n] != d)
        if changed and changed != self.changed:
            log.warning(
                "MCP server %s changed the definition of %s since it was first listed%s",
                self.server, printable(", ".join(changed)),
                "; withheld from the model (pin_tools)" if self.pin_tools else "",
            )
        self.changed = changed

    def approved(self, lock: ToolLock | None) -> tuple[dict[str, str] | None, str]:
        """The definitions approved for this server and since when, or None when tools
        are not pinned. A lock file pins every server of its spec: a server it does not
        name has no approved tools."""
        if lock is not None:
            return lock.get(self.server, {}), "the tool lock was written"
        if self.pin_tools:
            return self.pinned, "it was first listed"
        return None, ""


def tool_lock_path(loaded: LoadedSpec) -> Path:
    """``agents.d/support.yaml`` -> ``agents.d/support.tools.lock``."""
    return loaded.path.with_suffix(".tools.lock")


def read_tool_lock(loaded: LoadedSpec) -> ToolLock | None:
    """server -> tool -> definition digest, as approved by `voice-runtime tools --lock`;
    None when the spec has no lock. An unreadable lock approves nothing: the operator
    asked for pinning, so a damaged file must not switch it off."""
    from ..core.filesystem import read_regular

    path = tool_lock_path(loaded)
    # never open()ed as it is: a FIFO named *.tools.lock froze serve's MCP gateway (and
    # every command that lists tools) waiting for a writer
    if not os.path.lexists(path):
        return None
    raw = read_regular(path, MAX_LOCK_BYTES)
    try:
        if isinstance(raw, str):
            raise OSError(raw)
        data = json.loads(raw.decode("utf-8"))
        return {str(s): {str(t): str(d) for t, d in tools.items()} for s, tools in data["servers"].items()}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        log.warning("unreadable tool lock %s (%s): no MCP tool of agent %s is approved until "
                    "`voice-runtime tools --lock` rewrites it", path, exc, loaded.name)
        return {}


def write_tool_lock(loaded: LoadedSpec, listed: Mapping[str, Iterable[Tool] | None]) -> Path:
    """Approve every tool listed now (server -> its tools, None for a server that is
    down: it keeps what the previous lock approved for it)."""
    servers = {name: tools for name, tools in (read_tool_lock(loaded) or {}).items() if name in listed}
    for name, tools in listed.items():
        if tools is not None:
            servers[name] = first_digests(tools)
    data = {"agent": loaded.name, "servers": dict(sorted(servers.items()))}
    path = tool_lock_path(loaded)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
