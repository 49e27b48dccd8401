"""Which event loop serve and its job processes run (serve/event_loop.py)."""

from __future__ import annotations

import asyncio

import pytest

from voice_runtime.serve.event_loop import LOOP_ENV, loop_factory, loop_kind


def test_serve_and_its_calls_run_on_uvloop_unless_the_operator_chooses_asyncio() -> None:
    assert loop_kind({}) == "uvloop"
    assert loop_kind({LOOP_ENV: "uvloop"}) == "uvloop"
    assert loop_kind({LOOP_ENV: " AsyncIO "}) == "asyncio"
    assert loop_factory({LOOP_ENV: "asyncio"}) is None


def test_the_loop_serve_makes_runs_a_coroutine_as_asyncio_run_does() -> None:
    async def answer() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    with asyncio.Runner(loop_factory=loop_factory({})) as runner:
        assert runner.run(answer()).startswith("uvloop")


def test_without_uvloop_installed_serve_keeps_asyncios_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an import of a missing package raises
    assert loop_kind({}) == "asyncio"
    assert loop_factory({}) is None
