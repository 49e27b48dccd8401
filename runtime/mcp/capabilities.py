"""What a server offers (from its ``initialize`` answer) and what our side lets it ask
(from its spec block), in words for `check` and `tools`."""

from __future__ import annotations

from typing import Any

from ..spec.describe import allows as allowed

# the server capabilities shown, in the MCP spec's order
SERVED = ("tools", "prompts", "resources", "tasks", "logging", "completions")


def served(capabilities: Any) -> list[str]:
    """The features the server declares: ``tools``, ``prompts``... (``tasks`` only
    when it runs tool calls as tasks, which is the use we make of it)."""
    from .tasks import declares_task_calls

    if capabilities is None:
        return []
    return [name for name in SERVED
            if (declares_task_calls(capabilities) if name == "tasks" else getattr(capabilities, name, None) is not None)]


def summary(capabilities: Any, server: Any) -> str:
    """``tools, tasks, logging; may ask: elicitation`` (``-`` for nothing)."""
    offers = ", ".join(served(capabilities)) or "-"
    asks = allowed(server)
    return offers + (f"; may ask: {', '.join(asks)}" if asks else "")
