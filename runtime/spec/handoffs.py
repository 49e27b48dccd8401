"""The handoff graph over accepted specs: every agent a session can reach."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .loader import LoadedSpec

log = logging.getLogger("voice_runtime.handoffs")


def reachable(start: LoadedSpec, lookup: Callable[[str], LoadedSpec | None]) -> dict[str, LoadedSpec]:
    """Every agent a session of ``start`` can reach through handoffs, ``start`` included,
    each read once (``lookup`` returns None for one that is not there)."""
    found = {start.name: start}
    todo = [start]
    while todo:
        source = todo.pop()
        for handoff in source.spec.handoffs:
            if handoff.agent in found:
                continue
            target = lookup(handoff.agent)
            if target is None:
                log.warning("agent %s hands off to %s, which is not being served; its transfer tool is left out",
                            source.name, handoff.agent)
                continue
            found[target.name] = target
            todo.append(target)
    return found
