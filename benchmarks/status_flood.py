"""/healthz during a flood of /status on a `voice-runtime serve` with many agents,
this code against a baseline copy of the package, in the same run.

Each side is a real `voice-runtime serve DIR --unregistered --simulate` serving
``--agents`` specs (default 400; no call runs). Once it is ready and quiet,
``--flood`` concurrent GET /status (default 600, over ``--connections`` connections,
default 200: the port closes idle connections past 256) are sent at once while one probe sends GET /healthz every 20 ms over its own
connection; figures per side:

- ``healthz_max_ms``, ``healthz_p50_ms``: the probe's latency while the flood runs
  (issue 20's hostile pass: 7.5 s with 400 agents and 600 requests, one /status
  build per request on serve's event loop);
- ``flood_s``: from the first request sent to the last answer;
- ``status_builds``: builds of /status for the flood (``voice_runtime_http_document_builds_total``,
  null where serve does not count them: one per request);
- ``answers_ok``: answers that are 200 with every agent listed.

``ratio_healthz_max`` = this / baseline. Sides take turns (``--rounds``, default 2,
the worst round kept) so load from elsewhere falls on both.

    python benchmarks/status_flood.py --baseline /tmp/base/pkg   # a folder holding a voice_runtime package
    python benchmarks/status_flood.py                            # this code alone

Prints one JSON object on stdout; progress goes to stderr; exits 1 if an answer is
not 200 with the whole document.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts tests/ on sys.path
import aiohttp
from helpers import write
from serve_harness import Serve, spec

from _common import emit, machine, percentile, progress

BUILDS = 'voice_runtime_http_document_builds_total{document="status"}'


def probe(port: int, done: threading.Event, latencies: list[float]) -> None:
    """GET /healthz every 20 ms over one keep-alive connection, in its own thread
    (the flood's client loop must not delay the probe's own reads)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    while not done.is_set():
        started = time.perf_counter()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    conn.close()


async def flood(serve: Serve, n: int, agents: int, connections: int) -> dict[str, Any]:
    latencies: list[float] = []
    done = threading.Event()
    prober = threading.Thread(target=probe, args=(serve.port, done, latencies))
    limit = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), timeout=limit) as client:
        async def one() -> bool:
            async with client.get(serve.url("/status")) as r:
                body = await r.text()
            # every agent listed (one "digest" each), without decoding 600 large documents here
            return r.status == 200 and body.count('"digest"') == agents

        prober.start()
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        answers = await asyncio.gather(*(one() for _ in range(n)))
        flood_s = time.perf_counter() - started
        done.set()
        await asyncio.to_thread(prober.join)
    return {"healthz_max_ms": round(max(latencies), 1), "healthz_p50_ms": round(percentile(latencies, 50), 1),
            "healthz_probes": len(latencies), "flood_s": round(flood_s, 2), "answers_ok": sum(answers)}


def side_round(serve: Serve, args: argparse.Namespace) -> dict[str, Any]:
    before = serve.metric(BUILDS)
    out = asyncio.run(flood(serve, args.flood, args.agents, args.connections))
    after = serve.metric(BUILDS)
    out["status_builds"] = None if after is None or before is None else int(after - before)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=400)
    parser.add_argument("--flood", type=int, default=600)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", help="a folder with the baseline's voice_runtime package (its PYTHONPATH)")
    args = parser.parse_args(argv)
    sides = {"this": None, **({"baseline": args.baseline} if args.baseline else {})}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        agents = Path(tmp) / "agents.d"
        for i in range(args.agents):
            write(agents / f"a{i:04}.yaml", spec(f"You are agent {i}.", "http://127.0.0.1:9/v1"))
        serves = {}
        try:
            for name, path in sides.items():
                env = {"PYTHONPATH": path} if path else None
                serves[name] = Serve(agents, env=env, log_dir=Path(tmp))
            for serve in serves.values():
                serve.wait_ready(timeout=300)
            time.sleep(3)  # the job pools' prewarm and first scans are over
            for r in range(args.rounds):
                for name, serve in serves.items():
                    progress(f"round {r + 1}: {name}")
                    results[name].append(side_round(serve, args))
        finally:
            for serve in serves.values():
                serve.stop()

    def worst(rounds: list[dict[str, Any]]) -> dict[str, Any]:
        return max(rounds, key=lambda x: x["healthz_max_ms"])

    out: dict[str, Any] = {"benchmark": "status_flood", "machine": machine(), "agents": args.agents, "flood": args.flood, "rounds": args.rounds,
                           "load_avg": round(os.getloadavg()[0], 2)}
    for name, rounds in results.items():
        out[name] = {**worst(rounds), "healthz_max_ms_rounds": [x["healthz_max_ms"] for x in rounds]}
    if "baseline" in out:
        out["ratio_healthz_max"] = round(out["this"]["healthz_max_ms"] / max(out["baseline"]["healthz_max_ms"], 0.1), 3)
    emit(out)
    ok = all(x["answers_ok"] == args.flood for rounds in results.values() for x in rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
