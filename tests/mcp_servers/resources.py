"""A stdio MCP server whose tools answer with resources instead of text content:
``read_text`` returns an embedded text resource (a file's contents), ``read_big`` one
of ``size`` characters, ``read_blob`` a binary one (base64 ``blob``), ``find_report``
a resource link (name, title, URI, description, type and size) and no text.
Run: ``python resources.py``."""

from __future__ import annotations

import base64

from mcp.server.mcpserver import MCPServer
from mcp.types import BlobResourceContents, EmbeddedResource, ResourceLink, TextResourceContents

PASSWD = "root:x:0:0:root:/root:/bin/bash"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(992)  # 1000 bytes

server: MCPServer = MCPServer("resources", log_level="WARNING")


@server.tool()
def read_text(path: str) -> EmbeddedResource:
    """Read a text file as a resource."""
    return EmbeddedResource(type="resource", resource=TextResourceContents(
        uri=f"file://{path}", mime_type="text/plain", text=PASSWD))


@server.tool()
def read_big(size: int) -> EmbeddedResource:
    """Read a text file of `size` characters as a resource."""
    return EmbeddedResource(type="resource", resource=TextResourceContents(
        uri="file:///big.txt", mime_type="text/plain", text="r" * size))


@server.tool()
def find_report(quarter: str) -> ResourceLink:
    """Find a quarter's report."""
    return ResourceLink(type="resource_link", name=f"{quarter}-report.pdf", title=f"Report for {quarter}",
                        uri=f"https://files.example.com/reports/{quarter}.pdf",
                        description=f"The figures of {quarter}, audited", mime_type="application/pdf", size=48213)


@server.tool()
def read_blob(path: str) -> EmbeddedResource:
    """Read a binary file as a resource."""
    return EmbeddedResource(type="resource", resource=BlobResourceContents(
        uri=f"file://{path}", mime_type="image/png", blob=base64.b64encode(PNG).decode()))


if __name__ == "__main__":
    server.run("stdio")
