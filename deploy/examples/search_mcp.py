"""A small MCP server over streamable HTTP for deploy/compose.yaml: the `search`
tool that agents.d/concierge.yaml uses, answering from a few canned hotel facts.

    python deploy/examples/search_mcp.py          # http://0.0.0.0:8931/mcp

Replace it with your own server; this one exists so `docker compose up` has
every part of the example running.
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

FACTS = {
    "breakfast": "Breakfast is served from 6:30 to 10:30 in the lobby restaurant.",
    "checkout": "Check-out is at 11:00; late check-out until 14:00 on request.",
    "parking": "Parking is in the garage under the hotel, 25 EUR a night.",
    "wifi": "Wi-Fi is free; the network is AcmeGuest, no password.",
}

server: MCPServer = MCPServer("search")


@server.tool(description="Search the hotel's facts (breakfast, checkout, parking, wifi).")
def search(query: str) -> str:
    words = query.lower()
    hits = [fact for key, fact in FACTS.items() if key in words]
    return "\n".join(hits) or "Nothing found; ask the front desk staff."


if __name__ == "__main__":
    server.run("streamable-http", host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "8931")))
