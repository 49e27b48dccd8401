"""A run of test files against a set of specs: what `voice-runtime test` and
`serve --require-tests` share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .run import CaseResult, Verdict

if TYPE_CHECKING:
    from ...plugins.manager import Plugins
    from ...spec.errors import SpecError
    from ...spec.loader import LoadedSpec


@dataclass
class Suite:
    results: list[CaseResult] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)  # invalid test files

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.verdict is Verdict.FAILED]


async def run_suite(specs: dict[str, LoadedSpec], paths: list[Path], plugins: Plugins, *,
                    agents: set[str] | None = None, offline_only: bool = False) -> Suite:
    """Every case of ``paths`` whose agent is in ``agents`` (default: all), one after
    the other, sharing one MCP pool (a server is connected once for all cases).
    An invalid test file runs nothing: its errors are the result."""
    from ...mcp.pool import McpPool
    from .cases import load_tests
    from .run import run_case

    suite = Suite()
    loaded, suite.errors = load_tests(paths, plugins, set(specs))
    if suite.errors:
        return suite
    pool = McpPool(retry_in_background=False)
    try:
        for tests in loaded:
            if agents is not None and tests.tests.agent not in agents:
                continue
            for index in range(len(tests.tests.cases)):
                suite.results.append(await run_case(tests, index, specs, plugins, offline_only=offline_only,
                                                    pool=pool))
    finally:
        await pool.aclose()
    return suite
