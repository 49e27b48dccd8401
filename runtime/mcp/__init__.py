"""MCP servers owned by the runtime: connections (timeouts, reconnect, health) and
the livekit tools made from them (allow-list, prefixes, caps, tracing)."""
