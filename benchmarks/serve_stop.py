"""How long `serve` takes to exit after its second stop signal, and what it logs.

Each try starts a real `voice-runtime serve` (process executor, `--idle-processes 1`,
the fake OpenAI server) and stops it one of two ways:

- ``pool_starting``: SIGTERM as soon as the log says "agent desk ready" (livekit's
  forkserver is still importing, the pool not up), a second SIGTERM 0.1 s later;
- ``baseline``: one SIGTERM right after /readyz (nothing to drain): the plain stop.

Printed: per mode the seconds from the last signal to serve's exit (p50, max, each),
the exit codes, and the repeated error lines livekit wrote ("error initializing
process", "non-zero exit code", tracebacks); ``ratio_p50`` is pool_starting / baseline.

    python benchmarks/serve_stop.py [--tries 10]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from _common import emit, machine, percentile, progress

from fakes.openai_chat import FakeOpenAI
from serve_harness import Serve, spec

NOISE = ("error initializing process", "non-zero exit code", "Traceback")


def one(mode: str, fake: FakeOpenAI) -> dict[str, object]:
    with TemporaryDirectory(prefix="serve-stop-") as tmp:
        agents = Path(tmp) / "agents.d"
        agents.mkdir()
        (agents / "desk.yaml").write_text(spec("You are the desk.", fake.base_url))
        with Serve(agents, "--idle-processes", "1", env={"PROMETHEUS_MULTIPROC_DIR": None}) as serve:
            if mode == "baseline":
                serve.wait_ready()
                serve.proc.send_signal(signal.SIGTERM)
            else:
                serve.wait_for(lambda: "agent desk ready" in serve.output(), timeout=60, message="the agent")
                serve.proc.send_signal(signal.SIGTERM)
                time.sleep(0.1)
                serve.proc.send_signal(signal.SIGTERM)
            last = time.monotonic()
            try:
                rc: object = serve.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                rc = "still running after 120 s"
            seconds = time.monotonic() - last
            log = serve.output()
    return {"seconds": round(seconds, 2), "rc": rc, **{k: log.count(k) for k in NOISE}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tries", type=int, default=10)
    args = parser.parse_args()
    fake = FakeOpenAI()
    fake.start_in_thread()
    results: dict[str, list[dict[str, object]]] = {"baseline": [], "pool_starting": []}
    try:
        for i in range(args.tries):
            for mode in results:  # interleaved: the machine's other work weighs on both alike
                results[mode].append(one(mode, fake))
                progress(f"{mode} try {i + 1}: {results[mode][-1]}")
    finally:
        fake.stop_thread()
    out: dict[str, object] = {"machine": machine(), "tries": args.tries}
    for mode, runs in results.items():
        seconds = [float(r["seconds"]) for r in runs]  # type: ignore[arg-type]
        out[mode] = {"p50_s": round(percentile(seconds, 50), 2), "max_s": max(seconds), "each_s": seconds,
                     "exit_codes": sorted({str(r["rc"]) for r in runs}),
                     **{k: sum(int(r[k]) for r in runs) for k in NOISE}}  # type: ignore[call-overload]
    out["ratio_p50"] = round(out["pool_starting"]["p50_s"] / max(out["baseline"]["p50_s"], 0.01), 2)  # type: ignore[index]
    emit(out)
    expected = {"baseline": "0", "pool_starting": str(128 + signal.SIGTERM)}
    if any(out[m]["exit_codes"] != [code] for m, code in expected.items()):  # type: ignore[index]
        raise SystemExit(1)


if __name__ == "__main__":
    main()
