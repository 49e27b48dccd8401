"""Fixtures several test files share. Test modules import their helpers directly
(`from helpers import ...`); only fixtures live here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_chat import FakeOpenAI


def _fake_openai_in_thread() -> Iterator[FakeOpenAI]:
    """The fake OpenAI server, in a thread, so CLI subprocesses and serve's job
    processes can reach it while the test blocks."""
    fake = FakeOpenAI()
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture(scope="session", autouse=True)
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every serve the tests start puts its default report spool (and any later user
    state) under a temporary XDG_STATE_HOME, not the user's ~/.local/state: a spool
    keyed by port there was found by the user's own serve on that port, which then
    reported a test's killed call as its own (new-user pass: 1,756 folders left)."""
    import os

    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    yield from _fake_openai_in_thread()


@pytest.fixture(scope="module")
def module_fake_openai() -> Iterator[FakeOpenAI]:
    """One for a module whose tests share one serve (a module-scoped fixture):
    starting serve costs seconds of CPU, and those tests only read from it."""
    yield from _fake_openai_in_thread()


@pytest.fixture(scope="module")
def module_serve(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 module_fake_openai: FakeOpenAI) -> Iterator[Any]:
    """The serve a module's tests share (see serve_harness.shared_serve), started with the
    module's ``SHARED_SERVE_ARGS``, ``SHARED_SERVE_PLUGINS``, ``SHARED_SERVE_ENV`` and
    ``SHARED_SERVE_UNREGISTERED`` (default True)."""
    from serve_harness import shared_serve

    module = request.module
    yield from shared_serve(tmp_path_factory.mktemp("shared-serve"), module_fake_openai.base_url,
                            *getattr(module, "SHARED_SERVE_ARGS", ()), plugins=getattr(module, "SHARED_SERVE_PLUGINS", None),
                            env=getattr(module, "SHARED_SERVE_ENV", None),
                            unregistered=getattr(module, "SHARED_SERVE_UNREGISTERED", True))


@pytest.fixture
def served(module_serve: Any) -> Iterator[Any]:
    """This test's turn on its module's shared serve: it adds its own agents (names no
    other test of the module uses) to ``served.agents``; they are gone after it."""
    with module_serve.turn() as serve:
        yield serve


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


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/e2e drives the real CLI or serve in a subprocess: marked
    `slow`, so `-m "not slow"` runs the unit and in-process layers alone.

    The tests sharing a module-scoped fixture (one serve, one built wheel, one run of
    `check` per parameter) go to one xdist worker (``--dist loadgroup``): spread over
    both, each worker would build the fixture again."""
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if e2e in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)
        group = _module_fixture_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def _module_fixture_group(item: pytest.Item) -> str | None:
    """The module and the module-scoped fixtures (with their parameter) ``item`` uses."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    shared = sorted(name for name, defs in info.name2fixturedefs.items() if defs and defs[-1].scope == "module")
    if not shared:
        return None
    indices = getattr(getattr(item, "callspec", None), "indices", {})
    return f"{item.nodeid.split('::')[0]}:" + ",".join(f"{name}{indices.get(name, '')}" for name in shared)
