"""The load serve reports to LiveKit, and exports as ``voice_runtime_load``.

livekit's default is the machine's CPU use (a moving average over 2.5 s), and
LiveKit sends a worker no new job once its load passes ``--load-threshold``. CPU
alone says a replica is free while calls are still starting (a call costs little
CPU until its caller speaks) and lets one replica take calls past what it holds
before the CPU average catches up. With ``--full-load-calls N`` the load is the
larger of the CPU use and the calls running / N, so LiveKit spreads calls over the
replicas before one saturates (it stops sending at ``--load-threshold`` x N calls),
and an autoscaler reading ``voice_runtime_load`` (deploy/kubernetes/autoscaler)
adds replicas on the same figure. N comes from a measure: the knee of
``benchmarks/concurrent_calls.py`` on the machine type the replicas run on.
"""

from __future__ import annotations

from typing import Any


class Load:
    """livekit's ``load_fnc`` for the hub (its registrations read the hub's value)."""

    def __init__(self, full_load_calls: int) -> None:
        self.full_load_calls = full_load_calls

    def __call__(self, server: Any) -> float:
        from livekit.agents.worker import _DefaultLoadCalc

        cpu = float(_DefaultLoadCalc.get_load(server))
        if self.full_load_calls <= 0:
            return cpu
        return max(cpu, min(1.0, len(server.active_jobs) / self.full_load_calls))
