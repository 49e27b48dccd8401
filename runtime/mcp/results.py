"""A tool result as the model reads it: text content as text, links and other
content described, capped with a marker. Used by a job's tool calls (toolset), serve's
gateway lending results, and prompts/resources read at call start (connection, context);
its own module so that the connection need not import the toolset, which imports it."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.types import CallToolResult


def result_text(result: CallToolResult) -> str:
    """Text content as text (livekit's default would hand the model the JSON of
    each content item), an embedded resource's text as text, a resource link as
    what the model needs to name or fetch it; other content is described briefly."""
    parts = []
    for item in result.content:
        text = getattr(item, "text", None)
        resource = getattr(item, "resource", None)  # an embedded resource: its text is the result
        if text is None and resource is not None:
            item, text = resource, getattr(resource, "text", None)
        if text is not None:
            parts.append(text)
        elif getattr(item, "type", None) == "resource_link":
            parts.append(_link(item))
        else:
            mime = getattr(item, "mime_type", None) or "no type"
            data = getattr(item, "blob", None) or getattr(item, "data", None)
            # base64: 4 characters per 3 bytes, "=" padding the last group
            size = f", {len(data) * 3 // 4 - data[-2:].count('=')} bytes" if isinstance(data, str) else ""
            parts.append(f"[{getattr(item, 'type', None) or 'resource'} content, {mime}{size}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, default=str))
    return "\n".join(parts)


def _link(link: Any) -> str:
    """``[resource link: Q3 report "Quarter 3" <file:///q3.pdf> (application/pdf, 1200
    bytes): The third quarter's figures]``"""
    title = f' "{link.title}"' if link.title and link.title != link.name else ""
    about = ", ".join(x for x in (link.mime_type, f"{link.size} bytes" if link.size is not None else None) if x)
    return (f"[resource link: {link.name}{title} <{link.uri}>" + (f" ({about})" if about else "")
            + (f": {link.description}" if link.description else "") + "]")


_CAPPED = re.compile(r"\n\[result truncated: \d+ characters, showing the first (\d+)\]")
# the runtime's own notes in a result's text (a model may repeat them in its reply)
_MARKER = re.compile(r"\[result truncated: \d+ characters, showing the first \d+\]"
                     r"|\[[a-z_]+ content, [^\]\n]{0,200}?(?:, \d+ bytes)?\]")


def without_markers(text: str) -> str:
    """``text`` without the markers this module writes into a result (truncation, content it
    could not show as text): they are the runtime's words, not a server's or a model's."""
    return _MARKER.sub(" ", text) if "[" in text else text


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
