"""A server's content (a tool result, a prompt's messages, a resource's contents) as
the text the model gets."""

from __future__ import annotations

import json
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
