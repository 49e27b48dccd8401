"""Fixtures several test files share. Test modules import their helpers directly
(`from helpers import ...`); only fixtures live here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.openai_chat import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """The fake OpenAI server, in a thread, so CLI subprocesses and serve's job
    processes can reach it while the test blocks."""
    fake = FakeOpenAI()
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture
def agents(tmp_path: Path) -> Path:
    folder = tmp_path / "agents.d"
    folder.mkdir()
    return folder


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.needs_tool(name, how)`: the test fails at once, naming the package
    to install, when a system tool it drives is missing (never a skip)."""
    from helpers import require_tool

    for mark in item.iter_markers("needs_tool"):
        require_tool(*mark.args)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/e2e drives the real CLI or serve in a subprocess: marked
    `slow`, so `-m "not slow"` runs the unit and in-process layers alone."""
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if e2e in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)
