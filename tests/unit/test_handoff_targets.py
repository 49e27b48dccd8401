"""What `serve` accepts of handoffs, on the catalog it reloads from: the same rule
as `check` (a target that will not be served, or the agent itself, rejects the
spec at its `file:line:col`), and a rejected spec keeps its last good version."""

from __future__ import annotations

from pathlib import Path

from helpers import write
from voice_runtime.serve.catalog import Catalog, Outcome
from voice_runtime.plugins.manager import make_plugin_manager

BASE = ("apiVersion: voice-runtime/v1\ninstructions: hi\n"
        "pipeline: {llm: {provider: openai, model: m, api_key: x}, text_only: true}\n")


def test_a_reload_rejects_a_handoff_to_an_agent_not_served_or_to_itself_and_keeps_the_last_good(tmp_path: Path) -> None:
    agents = tmp_path / "agents.d"
    write(agents / "front.yaml", BASE + "handoffs:\n  - {agent: billing, when: bills}\n")
    write(agents / "billing.yaml", BASE + "handoffs:\n  - {agent: front, when: the rest}\n")  # a cycle is fine
    catalog = Catalog(agents, make_plugin_manager(None, entry_points=False), tmp_path / "state")
    assert catalog.reload().outcome is Outcome.APPLIED and sorted(catalog.agents) == ["billing", "front"]
    first = catalog.agents["front"]

    write(agents / "front.yaml", BASE + "handoffs:\n  - {agent: biling, when: bills}\n  - {agent: front, when: x}\n")
    result = catalog.reload()
    assert result.outcome is Outcome.REJECTED
    assert [str(e) for e in result.errors] == [
        f"{agents}/front.yaml:5:6: handoffs[0].agent: no valid agent named 'biling' in this folder; available: billing",
        f"{agents}/front.yaml:6:6: handoffs[1].agent: an agent cannot hand off to itself",
    ]
    assert catalog.agents["front"] is first  # the last good version keeps serving
