"""`voice-runtime serve`: every accepted spec a livekit AgentServer, one operator port.

The rooms: ``options`` (what the CLI hands over), ``supervisor`` (lifecycle,
signals, and the one place reload outcomes are handled), ``reload`` (file watching,
one callback), ``catalog`` (the last good spec of each file, reload outcomes,
publishing to the private state folder), ``agents`` (the AgentServers), ``status``
(what /status, /readyz and /metrics show), ``http`` (the operator port, behind the
``Operator`` interface), ``job`` (what runs in a job process), ``simulate`` (POST
/simulate requests) and ``children`` (no MCP server outlives serve).

May import: ``session`` and everything below it. Only ``commands`` imports serve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .supervisor import run_serve

__all__ = ["run_serve"]


def __getattr__(name: str) -> Any:
    # imported on first use: the CLI reads serve.options to declare its flags, and
    # job processes import serve.job, neither of which needs the supervisor
    if name == "run_serve":
        from .supervisor import run_serve

        return run_serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
