"""What livekit's forkserver loads before it forks serve's job processes, decided from
the agents serve has when it starts.

livekit preloads its local end-of-turn model (``turn-detector-v1-mini``, ~244 MiB of
weights) in the forkserver unless ``LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE`` is falsy:
with the process executor every job process is forked with it, and the tree holds it
once, shared (benchmarks/README.md, concurrent_calls.py: a third of the tree's memory at
8 calls). Only a voice pipeline whose turn detection is livekit's default or ``model``
uses it; serve knows its agents, so it leaves the weights out when none does. An agent
that needs the model and arrives later still works: its job loads the weights itself (its
own ~244 MiB and ~0.6 s of CPU per call), and serve says so once in its log. An operator's
own setting of the variable wins either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, MutableMapping
from typing import Any

log = logging.getLogger("voice_runtime.serve")

LOCAL_INFERENCE_ENV = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"
_FALSY = ("0", "false", "no", "off")  # as livekit reads the variable (ipc/_preload.py)


def uses_turn_model(loaded: Any) -> bool:
    """The agent's calls run livekit's local end-of-turn model: a voice pipeline whose
    turn detection is ``model`` or not set (livekit's default, ``inference.TurnDetector()``,
    is that model off LiveKit Cloud)."""
    pipeline = getattr(loaded.spec, "pipeline", None)
    if pipeline is None or pipeline.text_only:
        return False
    return pipeline.turn_detection in (None, "model")


def choose_local_models(specs: Iterable[Any], environ: MutableMapping[str, str] = os.environ) -> bool:
    """Whether the forkserver will preload livekit's local models; when no agent in
    ``specs`` uses them and the operator did not choose, sets the variable (before the
    forkserver starts, which inherits it) so that it does not."""
    chosen = environ.get(LOCAL_INFERENCE_ENV)
    if chosen is not None:
        return chosen.strip().lower() not in _FALSY
    users = sorted(loaded.name for loaded in specs if uses_turn_model(loaded))
    if users:
        log.info("job processes share livekit's local end-of-turn model (used by %s)", ", ".join(users[:5]))
        return True
    environ[LOCAL_INFERENCE_ENV] = "0"
    log.info("livekit's local end-of-turn model is not preloaded: no agent uses it (~244 MiB saved)")
    return False


SILERO_MODULE = "voice_runtime.serve.forkserver_silero"


def uses_silero(loaded: Any) -> bool:
    """The agent's calls run a silero VAD (a voice pipeline naming it)."""
    pipeline = getattr(loaded.spec, "pipeline", None)
    vad = getattr(pipeline, "vad", None) if pipeline is not None and not pipeline.text_only else None
    return getattr(vad, "provider", None) == "silero"


PLUGINS_MODULE = "voice_runtime.serve.forkserver_plugins"  # job.FORKSERVER_PLUGINS


def forkserver_modules(specs: Iterable[Any]) -> list[str]:
    """What the forkserver imports beyond ``job.CALL_MODULES`` (process executor): the
    built-in plugins' manager and spec model, and silero's session when an agent in
    ``specs`` uses it (an agent added later makes it in its job)."""
    return [PLUGINS_MODULE, *([SILERO_MODULE] if any(uses_silero(loaded) for loaded in specs) else [])]


class TurnModelWatch:
    """Tells, once per agent, that an agent accepted after the start uses the local
    end-of-turn model the job processes were forked without."""

    def __init__(self, preloaded: bool) -> None:
        self.preloaded = preloaded
        self._told: set[str] = set()

    def check(self, loaded: Any) -> None:
        if self.preloaded or loaded.name in self._told or not uses_turn_model(loaded):
            return
        self._told.add(loaded.name)
        log.warning("agent %s uses livekit's local end-of-turn model (turn_detection: %s), which serve's job "
                    "processes were started without (no agent used it then): each of its calls loads it in its "
                    "own process (~244 MiB, ~0.6 s). Restart serve to share one copy, or set "
                    "turn_detection: vad", loaded.name, loaded.spec.pipeline.turn_detection or "livekit's default")
