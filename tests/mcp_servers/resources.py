"""A stdio MCP server whose tools answer with embedded resources instead of text
content: ``read_text`` returns a text resource (a file's contents), ``read_blob`` a
binary one (base64 ``blob``). Run: ``python resources.py``."""

from __future__ import annotations

import base64

from mcp.server.mcpserver import MCPServer
from mcp.types import BlobResourceContents, EmbeddedResource, TextResourceContents

PASSWD = "root:x:0:0:root:/root:/bin/bash"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(992)  # 1000 bytes

server: MCPServer = MCPServer("resources", log_level="WARNING")


@server.tool()
def read_text(path: str) -> EmbeddedResource:
    """Read a text file as a resource."""
    return EmbeddedResource(type="resource", resource=TextResourceContents(
        uri=f"file://{path}", mime_type="text/plain", text=PASSWD))


@server.tool()
def read_blob(path: str) -> EmbeddedResource:
    """Read a binary file as a resource."""
    return EmbeddedResource(type="resource", resource=BlobResourceContents(
        uri=f"file://{path}", mime_type="image/png", blob=base64.b64encode(PNG).decode()))


if __name__ == "__main__":
    server.run("stdio")
