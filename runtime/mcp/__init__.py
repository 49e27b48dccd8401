"""MCP servers owned by the runtime: connections (transports, backoff, pins, a state
enum), the warm pool, the tool plan (``toolset``: allow-lists, prefixes, what is
withheld, one call with its record), the gateway job processes borrow serve's
connections through, tools listed and called outside a session (``direct``), and every
private part of the mcp SDK the runtime reads (``compat``).

May import: ``plugins``, ``observe``, ``spec``, ``core``, and the mcp SDK. Never livekit:
the livekit tools made from the plan are ``session.tools``.
"""
