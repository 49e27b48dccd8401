"""The reconnect backoff, as a specification: jittered doubling up to a ceiling, and
a fresh start only after a server had been stable. (The same shape against a real
crash-looping server: test_mcp_faults.py.)"""

from __future__ import annotations

import random

import pytest

from voice_runtime.mcp.backoff import BACKOFF_MAX, BACKOFF_START, KEEP_DELAYS, STABLE_AFTER, Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def no_jitter(low: float, high: float) -> float:
    return 1.0


def test_waits_double_from_half_a_second_up_to_thirty_seconds() -> None:
    backoff = Backoff(jitter=no_jitter)
    assert (BACKOFF_START, BACKOFF_MAX) == (0.5, 30.0)
    assert [backoff.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_each_wait_is_jittered_within_twenty_percent_so_crash_loops_are_not_retried_in_step() -> None:
    rng = random.Random(7)
    backoffs = [Backoff(jitter=rng.uniform) for _ in range(2)]
    waits = [[b.next_delay() for _ in range(8)] for b in backoffs]
    bases = [0.5, 1, 2, 4, 8, 16, 30, 30]
    for row in waits:
        assert all(0.8 * base <= wait <= 1.2 * base for wait, base in zip(row, bases, strict=True))
    assert waits[0] != waits[1]


def test_a_server_lost_after_being_stable_is_retried_quickly_again() -> None:
    clock = Clock()
    backoff = Backoff(jitter=no_jitter, clock=clock)
    for _ in range(5):
        backoff.next_delay()
    backoff.up()
    clock.now += STABLE_AFTER
    backoff.lost()
    assert backoff.delays == []  # a new outage: its first retries are logged again
    assert backoff.next_delay() == 0.5


def test_a_server_that_dies_right_after_coming_up_keeps_slowing_down() -> None:
    clock = Clock()
    backoff = Backoff(jitter=no_jitter, clock=clock)
    waits = []
    for _ in range(4):
        waits.append(backoff.next_delay())
        backoff.up()
        clock.now += STABLE_AFTER - 0.1  # a crash loop: never stable
        backoff.lost()
    assert waits == [0.5, 1, 2, 4]
    assert backoff.delays == waits


@pytest.mark.parametrize("scale", [(0.05, 0.4), (1.0, 3.0)])
def test_the_scale_is_configurable_and_the_shape_stays(scale: tuple[float, float]) -> None:
    start, ceiling = scale
    backoff = Backoff(start, ceiling, jitter=no_jitter)
    waits = [backoff.next_delay() for _ in range(6)]
    assert waits[0] == start and max(waits) == ceiling
    assert all(b == min(2 * a, ceiling) for a, b in zip(waits, waits[1:]))


def test_only_the_latest_waits_are_kept() -> None:
    backoff = Backoff(jitter=no_jitter)
    for _ in range(KEEP_DELAYS + 50):
        backoff.next_delay()
    assert len(backoff.delays) == KEEP_DELAYS
