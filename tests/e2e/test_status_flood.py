"""A flood of /status, status page and /metrics requests on a real `voice-runtime
serve` with many agents: the requests that arrive together share one build of the
document (each answer still whole and correct, none older than its request), and
the probes are answered meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from helpers import write
from serve_harness import Serve, spec

AGENTS = 150
FLOOD = 240  # below the port's MAX_CONNECTIONS: none is closed to make room, none retried


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    agents = tmp_path_factory.mktemp("crowded") / "agents.d"
    for i in range(AGENTS):  # no call runs: the LLM is never asked
        write(agents / f"a{i:03}.yaml", spec(f"You are agent {i}.", "http://127.0.0.1:9/v1"))
    with Serve(agents) as serve:
        serve.wait_ready(timeout=120)
        yield serve


def _counter(serve: Serve, name: str, document: str) -> float:
    value = serve.metric(f'{name}_total{{document="{document}"}}')
    assert value is not None, f"{name} is not in /metrics"
    return value


async def _flood(serve: Serve, paths: list[str]) -> list[tuple[str, int, str]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def one(path: str) -> tuple[str, int, str]:
            async with http.get(serve.url(path), timeout=aiohttp.ClientTimeout(total=120)) as r:
                return path, r.status, await r.text()

        return await asyncio.gather(*(one(p) for p in paths))


def test_concurrent_status_requests_share_builds_and_each_gets_the_whole_document(crowded: Serve) -> None:
    before_requests = _counter(crowded, "voice_runtime_http_document_requests", "status")
    before_builds = _counter(crowded, "voice_runtime_http_document_builds", "status")
    answers = asyncio.run(_flood(crowded, ["/status"] * FLOOD))
    for _, code, body in answers:
        assert code == 200, body[:300]
        assert len(json.loads(body)["agents"]) == AGENTS
    requests = _counter(crowded, "voice_runtime_http_document_requests", "status") - before_requests
    builds = _counter(crowded, "voice_runtime_http_document_builds", "status") - before_builds
    assert requests == FLOOD
    # one build per request before; arrivals spread by a loaded machine still share most
    assert builds <= FLOOD / 3, f"{builds:g} builds for {requests:g} requests"


def test_filtered_unknown_and_whole_status_requests_in_one_flood_each_get_their_own_answer(crowded: Serve) -> None:
    paths = ["/status", "/status?agent=a007", "/status?agent=nobody", "/", "/metrics", "/healthz", "/readyz"] * 30
    for path, code, body in asyncio.run(_flood(crowded, paths)):
        if path == "/status":
            assert code == 200 and len(json.loads(body)["agents"]) == AGENTS
        elif path == "/status?agent=a007":
            assert code == 200 and [a["name"] for a in json.loads(body)["agents"]] == ["a007"]
        elif path == "/status?agent=nobody":
            assert code == 404 and "no agent named 'nobody' is served" in json.loads(body)["error"]
        elif path == "/":
            assert code == 200 and 'id="agent-a149"' in body
        elif path == "/metrics":
            assert code == 200 and "voice_runtime_agents_loaded 150.0" in body
        else:
            assert code == 200, (path, body)


def test_a_status_request_made_after_a_change_sees_it_even_during_a_flood(crowded: Serve) -> None:
    async def scenario() -> dict[str, object]:
        flood = asyncio.ensure_future(_flood(crowded, ["/status"] * FLOOD))
        await asyncio.sleep(0.05)
        write(crowded.agents / "late.yaml", spec("You came late.", "http://127.0.0.1:9/v1"))
        # once the reload accepted it, any later request must list it, however many builds are queued
        await asyncio.to_thread(crowded.wait_for, lambda: "agent late ready" in crowded.output()
                                or crowded.agent("late"), 60, "late served")
        async with aiohttp.ClientSession() as http, http.get(crowded.url("/status")) as r:
            after = json.loads(await r.text())
        await flood
        return after

    try:
        after = asyncio.run(scenario())
        assert "late" in [a["name"] for a in after["agents"]]
    finally:
        (crowded.agents / "late.yaml").unlink()
