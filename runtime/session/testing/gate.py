"""``serve --require-tests``: a new or changed agent is served only if its
conversation tests pass. Only scripted cases without a judge run (no network, no
key); the others are skipped. An agent whose tests fail is rejected like an
invalid spec: its last good version keeps serving, and the failure is in the
log, ``/status`` and the reload metric, reported at the spec's file."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...plugins.manager import Plugins
    from ...spec.loader import LoadedSpec

log = logging.getLogger("voice_runtime.reload")


class TestsGate:
    """Called by the catalog (in its reload thread) with the specs a reload would
    serve and the names it would add or change; returns why each failing one may not."""

    __test__ = False  # not a pytest class

    def __init__(self, tests_dir: Path) -> None:
        self.tests_dir = tests_dir
        # (agent, spec digest, test files digest) -> verdict: a rejected spec is offered
        # again by every periodic scan; its tests are not run again until something changes
        self._verdicts: dict[tuple[str, str, str], list[str]] = {}

    def __call__(self, specs: dict[str, LoadedSpec], changed: set[str], plugins: Plugins) -> dict[str, list[str]]:
        from .cases import find_test_files

        paths = find_test_files(self.tests_dir)
        if not isinstance(paths, list) or not paths or not changed:
            return {}
        tests_digest = _digest(paths)
        key = {name: (name, specs[name].digest, tests_digest) for name in changed}
        todo = {name for name in changed if key[name] not in self._verdicts}
        if todo:
            refused = asyncio.run(self._run(specs, todo, paths, plugins))
            for name in todo:
                self._verdicts[key[name]] = refused.get(name, [])
        return {name: self._verdicts[key[name]] for name in changed if self._verdicts[key[name]]}

    async def _run(self, specs: dict[str, LoadedSpec], changed: set[str], paths: list[Path],
                   plugins: Plugins) -> dict[str, list[str]]:
        from .suite import run_suite

        suite = await run_suite(specs, paths, plugins, agents=changed, offline_only=True)
        if suite.errors:  # an invalid test file: what it tests is unknown, so nothing new is served
            why = f"the conversation tests cannot be read: {suite.errors[0]}"
            return {name: [why] for name in changed}
        out: dict[str, list[str]] = {}
        for r in suite.failed:
            detail = "; ".join(r.failures)
            out.setdefault(r.agent, []).append(f"conversation test {r.name!r} failed ({r.where}): {detail}")
        ran = sum(1 for r in suite.results if r.verdict.value != "skipped")
        log.info("require-tests: %d case(s) run for %s, %d failed", ran, ", ".join(sorted(changed)),
                 len(suite.failed))
        return out


def _digest(paths: list[Path]) -> str:
    from ...core.filesystem import read_regular
    from ...spec.loader import MAX_SPEC_BYTES

    h = hashlib.sha256()
    for path in paths:
        h.update(str(path).encode() + b"\0")
        # what the suite would read: a FIFO or device is never opened (it froze the reload
        # thread waiting for a writer), and its reason is hashed instead of its bytes
        raw = read_regular(path, MAX_SPEC_BYTES)
        h.update(raw if isinstance(raw, bytes) else raw.encode())
    return h.hexdigest()
