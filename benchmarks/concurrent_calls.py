"""How many simultaneous voice calls one machine holds before the caller hears the
agent slow down: `voice-runtime serve` against a hand-built livekit-agents program
(`handbuilt_worker.py`), under the same load, in the same run.

Calls enter each side the way a browser call does: a WebSocket carrying 16-bit PCM
at 16 kHz in real time (20 ms messages, silence between turns, as a page's
microphone), answered with the agent's 24 kHz PCM. For serve that is `/talk`
(`POST /talk/desk/calls`, then the call's WebSocket; serve relays it to a job
process: the default process executor, one prewarmed process, or the options
given with ``--ours``); for the hand-built program its `GET /call` (relayed the same
way to a livekit job process, one per call). Both run the real silero VAD and the
real deepgram, openai and cartesia plugins against the fakes of `tests/fakes`,
which run in a process of their own (`_call_fakes.py`; their CPU is reported
apart, and their speech is rendered before the first call). Every other turn the
model calls the `echo` tool of the real recorder MCP server over stdio (serve: its
one warm connection, lent to the job processes; hand-built: livekit's
`MCPServerStdio`, a server per call as its documentation shows).

For each N, N callers connect at once, wait until their agent is there, then each
speaks ``--turns`` espeak-ng turns ("Do you have a room for tonight?"), starting
spread over one turn's length so they do not speak in lockstep; after each turn a
caller waits for the answer to end (no audio for 1 s) and pauses 1 s.

- ``p50_ms``/``p95_ms``: turn latency, from the caller's last loud frame (a sample
  above 0.05 full scale) sent to the agent's first audio frame received;
- ``failed_turns``: no answer within 20 s, or a call that never started;
- ``cpu_per_call``: CPU time of the side's process tree (serve or the worker, the
  forkserver, the job processes, the MCP servers) over the turns, in cores, / the
  calls that started (``calls_started``);
- ``pss_mb_per_call``: the side's whole tree's PSS (``/proc/PID/smaps_rollup`` of
  every process under serve or the hand-built worker: the main process, livekit's
  forkserver and resource tracker, the job processes, the MCP servers; sampled every
  2 s during the turns, averaged) / the calls that started: the same rule for both
  sides, each paying for everything it runs; ``pss_mb_marginal`` is (that - the idle
  tree's) / the calls; ``pss_per_call_ratio`` compares the sides at the largest N
  where neither failed a turn; with ``--smaps`` each point also holds ``smaps``, the
  tree by process role and mapping kind (``_smaps.py``);
- ``knee``: the largest N whose p95 stays within 1.2 x the side's own N=1 p95,
  with no failed turn (every smaller N passing too).

    python benchmarks/concurrent_calls.py                 # N = 1,2,4,8,12,16; ~10 min
    python benchmarks/concurrent_calls.py --quick         # N = 1,2, 2 turns (what the test runs)
    python benchmarks/concurrent_calls.py --n 4 --ours "--executor thread"

Prints one JSON object on stdout; progress goes to stderr; exits 1 on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import _common  # noqa: F401 - puts tests/ on sys.path
import psutil
from _common import REPO, emit, machine, percentile, progress
from _smaps import breakdown
from density import tree, tree_cpu_seconds
from reload_latency import BenchError, Serve
from voice_turn import INPUT_RATE, UTTERANCE, pipeline_yaml

KNEE_RATIO = 1.2
FRAME_S = 0.02  # one WebSocket message of microphone audio
LOUD = 0.05 * 32768
ANSWER_TIMEOUT_S = 20.0
ANSWER_END_S = 1.0  # no agent audio this long: the answer has ended
PAUSE_S = 1.0
READY_TIMEOUT_S = 150.0
TARGETS = {"knee_ratio": 2.0, "pss_per_call_ratio": 0.5, "p50_ratio_n1": 1.05}


# -- the process trees --------------------------------------------------------------


def pss_mb(pid: int) -> float:
    """PSS of ``pid``, from /proc/PID/smaps_rollup (0 for a process gone meanwhile)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_pss(root: int) -> float:
    return sum(pss_mb(p.pid) for p in tree(root))


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


# -- one caller -----------------------------------------------------------------------


def frames_of(pcm: bytes) -> tuple[list[bytes], int]:
    """The utterance in FRAME_S messages, and the index of its last loud one."""
    import numpy as np

    step = int(INPUT_RATE * FRAME_S) * 2
    frames = [pcm[i:i + step].ljust(step, b"\0") for i in range(0, len(pcm), step)]
    loud = [i for i, f in enumerate(frames) if np.abs(np.frombuffer(f, dtype="<i2")).max() > LOUD]
    return frames, loud[-1]


@dataclass
class Caller:
    """One call: a microphone sending in real time, and the agent's audio received."""

    ws: Any
    utterance: list[bytes]
    last_loud: int
    heard: list[float] = field(default_factory=list)  # when each agent audio frame arrived
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _speech: list[bytes] = field(default_factory=list)
    _spoken: asyncio.Future[float] | None = None

    async def listen(self) -> None:
        from aiohttp import WSMsgType

        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                self.heard.append(time.monotonic())
            elif msg.type == WSMsgType.TEXT:
                message = json.loads(msg.data)
                if message.get("type") == "ready":
                    self.ready.set()
                elif message.get("type") == "error":
                    self.errors.append(str(message.get("message"))[:300])

    async def microphone(self) -> None:
        """A frame every FRAME_S on the wall clock: the utterance while speaking, else silence."""
        silence = bytes(len(self.utterance[0]))
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while not self.ws.closed:
            if self._speech:
                index = len(self.utterance) - len(self._speech)
                await self.ws.send_bytes(self._speech.pop(0))
                if index == self.last_loud and self._spoken is not None:
                    self._spoken.set_result(time.monotonic() + FRAME_S)
            else:
                await self.ws.send_bytes(silence)
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * FRAME_S - loop.time()))

    async def turn(self) -> None:
        heard_before = len(self.heard)
        self._spoken = asyncio.get_running_loop().create_future()
        self._speech = list(self.utterance)
        spoke_until = await self._spoken
        deadline = spoke_until + ANSWER_TIMEOUT_S
        while (first := bisect.bisect_left(self.heard, spoke_until, lo=heard_before)) >= len(self.heard):
            if time.monotonic() > deadline or self.ws.closed:
                self.failed += 1
                return
            await asyncio.sleep(0.01)
        self.latencies_ms.append((self.heard[first] - spoke_until) * 1000)
        end = time.monotonic() + 30
        while time.monotonic() - self.heard[-1] < ANSWER_END_S and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await asyncio.sleep(PAUSE_S)


# -- the two sides ---------------------------------------------------------------------


@dataclass
class Side:
    name: str
    root: int  # the process whose tree is measured
    open_call: Callable[[Any], Awaitable[Any]]  # an aiohttp ClientSession -> the call's WebSocket
    stop: Callable[[], None]
    idle_processes: int | None = None  # the tree's size at rest, measured before the first call
    idle_pss_mb: float = 0.0
    curve: list[dict[str, Any]] = field(default_factory=list)


def start_ours(tmp: Path, urls: dict[str, str], mcp: list[str], options: list[str], name: str = "voice-runtime",
               env: dict[str, str] | None = None) -> Side:
    fakes = SimpleNamespace(deepgram=SimpleNamespace(listen_url=urls["stt"]),
                            chat=SimpleNamespace(base_url=urls["llm"]), cartesia=SimpleNamespace(root_url=urls["tts"]))
    agents = tmp / "agents"
    agents.mkdir()
    server = json.dumps({"command": mcp[0], "args": mcp[1:]})
    (agents / "desk.yaml").write_text(pipeline_yaml(fakes, f"mcp_servers:\n  desk: {server}\n"), encoding="utf-8")
    serve = Serve(agents, tmp, None, options=("--idle-processes", "1", "--max-browser-calls", "64", *options),
                  env={"LIVEKIT_URL": "", "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": "", **(env or {})})
    serve.wait_ready(READY_TIMEOUT_S)
    base = f"http://127.0.0.1:{serve.port}"

    async def open_call(session: Any) -> Any:
        async with session.post(f"{base}/talk/desk/calls") as response:
            body = await response.json()
            if response.status != 201:
                raise BenchError(f"serve refused the call: {response.status} {body}")
        return await session.ws_connect(f"ws://127.0.0.1:{serve.port}{body['socket']}", max_msg_size=0)

    return Side(name, serve.proc.pid, open_call, serve.kill)


def start_handbuilt(tmp: Path, urls: dict[str, str], mcp: list[str]) -> Side:
    from mcp_servers.harness import free_port

    port = free_port()
    log = open(tmp / "handbuilt.log", "w")  # noqa: SIM115 - lives as long as the worker
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "handbuilt_worker.py"), "--port", str(port),
                             "--stt", urls["stt"], "--llm", urls["llm"], "--tts", urls["tts"], "--mcp", json.dumps(mcp)],
                            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("ready"):
        raise BenchError(f"the hand-built worker did not start:\n{(tmp / 'handbuilt.log').read_text()[-3000:]}")

    async def open_call(session: Any) -> Any:
        return await session.ws_connect(f"ws://127.0.0.1:{port}/call", max_msg_size=0)

    def stop() -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    return Side("handbuilt", proc.pid, open_call, stop)


def settle(side: Side, timeout: float = 90.0) -> None:
    """Until the calls' job processes (and the hand-built side's MCP servers) are gone;
    before the first call (no idle count yet), until the side is at rest: the same
    processes for 2 s, using under 5 % of a core (a forkserver still importing is not)."""
    deadline = time.monotonic() + timeout
    if side.idle_processes is None:
        while time.monotonic() < deadline:
            before = tree(side.root)
            cpu = sum(cpu_seconds(p.pid) for p in before)
            time.sleep(2.0)
            after = tree(side.root)
            if {p.pid for p in after} == {p.pid for p in before} \
                    and sum(cpu_seconds(p.pid) for p in after) - cpu < 0.1:
                return
        return
    while len(tree(side.root)) > side.idle_processes and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)


# -- one N on one side ---------------------------------------------------------------


async def run_calls(side: Side, n: int, turns: int, utterance: tuple[list[bytes], int],
                    fakes_pid: int, smaps: bool = False) -> dict[str, Any]:
    import aiohttp

    frames, last_loud = utterance
    cycle = len(frames) * FRAME_S + 3.5  # speech, the answer's start, its length, the pause: roughly
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        callers: list[Caller | None] = []
        tasks: list[asyncio.Future[Any]] = []

        async def connect() -> Caller | None:
            try:
                ws = await asyncio.wait_for(side.open_call(session), READY_TIMEOUT_S)
            except (aiohttp.ClientError, TimeoutError, BenchError) as exc:
                progress(f"  {side.name} N={n}: a call did not connect: {exc}")
                return None
            caller = Caller(ws, frames, last_loud)
            tasks.extend([asyncio.ensure_future(caller.listen()), asyncio.ensure_future(caller.microphone())])
            try:
                await asyncio.wait_for(caller.ready.wait(), READY_TIMEOUT_S)
            except TimeoutError:
                progress(f"  {side.name} N={n}: a call's agent never said ready: {caller.errors}")
                return None
            return caller

        callers = list(await asyncio.gather(*(connect() for _ in range(n))))
        setup_s = time.monotonic() - started
        live = [c for c in callers if c is not None]
        cpu0, fakes0, t0 = tree_cpu_seconds(side.root), cpu_seconds(fakes_pid), time.monotonic()
        samples: list[float] = []
        where: dict[str, Any] = {}

        async def sample() -> None:
            while True:
                samples.append(await asyncio.to_thread(tree_pss, side.root))
                if smaps and len(samples) == 3:  # every call in its turns by then
                    where.update(await asyncio.to_thread(breakdown, side.root))
                await asyncio.sleep(2.0)

        sampler = asyncio.ensure_future(sample())

        async def talk(caller: Caller, delay: float) -> None:
            await asyncio.sleep(delay)
            for _ in range(turns):
                await caller.turn()

        await asyncio.gather(*(talk(c, i * cycle / max(1, len(live))) for i, c in enumerate(live)))
        window = time.monotonic() - t0
        cpu = (tree_cpu_seconds(side.root) - cpu0) / window
        fakes_cpu = (cpu_seconds(fakes_pid) - fakes0) / window
        processes = len(tree(side.root))
        sampler.cancel()
        for caller in live:
            await caller.ws.close()
        for task in tasks:
            task.cancel()
    latencies = [ms for c in live for ms in c.latencies_ms]
    failed = sum(c.failed for c in live) + turns * (n - len(live))
    pss = sum(samples) / len(samples) if samples else tree_pss(side.root)
    held = max(1, len(live))  # per call that ran: a call that never started holds nothing
    point = {
        "n": n,
        "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
        "turns": len(latencies) + failed,
        "failed_turns": failed,
        "calls_started": len(live),
        "cpu_per_call": round(cpu / held, 3),
        "cpu_total": round(cpu, 3),
        "fakes_cpu": round(fakes_cpu, 3),
        "pss_mb_per_call": round(pss / held, 1),
        "pss_mb_marginal": round((pss - side.idle_pss_mb) / held, 1),
        "pss_mb_total": round(pss, 1),
        "processes": processes,
        "setup_s": round(setup_s, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if where:
        point["smaps"] = where
    errors = sorted({e for c in live for e in c.errors})
    if errors:
        point["errors"] = errors[:5]
    progress(f"  {side.name} N={n}: p50 {point['p50_ms']} ms, p95 {point['p95_ms']} ms, failed {failed}, "
             f"CPU/call {point['cpu_per_call']}, PSS/call {point['pss_mb_per_call']} MiB, setup {point['setup_s']} s, "
             f"load {point['load_average']}")
    return point


def knee(curve: list[dict[str, Any]]) -> int | None:
    """The largest N, every smaller one passing too, whose p95 is within KNEE_RATIO
    of the N=1 p95 with no failed turn."""
    base = next((p["p95_ms"] for p in curve if p["n"] == 1), None)
    best = None
    for point in sorted(curve, key=lambda p: p["n"]):
        if base is None or point["failed_turns"] or point["p95_ms"] is None or point["p95_ms"] > KNEE_RATIO * base:
            break
        best = point["n"]
    return best


# -- the run ---------------------------------------------------------------------------


def start_fakes(tmp: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    log = open(tmp / "fakes.log", "w")  # noqa: SIM115 - lives as long as the fakes
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "_call_fakes.py"), UTTERANCE],
                            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("{"):
        raise BenchError(f"the fakes did not start:\n{(tmp / 'fakes.log').read_text()[-3000:]}")
    return proc, json.loads(line)


async def measure(sides: list[Side], ns: list[int], turns: int, warmup: int, fakes_pid: int,
                  smaps: bool = False) -> None:
    from fakes import espeak

    utterance = frames_of(espeak.speak(UTTERANCE, INPUT_RATE))
    for side in sides:
        settle(side)
        side.idle_processes = len(tree(side.root))
        if warmup:  # the first call of a process and of the fakes (imports, caches)
            await run_calls(side, 1, warmup, utterance, fakes_pid)
            settle(side)
        side.idle_pss_mb = await asyncio.to_thread(tree_pss, side.root)
    for i, n in enumerate(ns):
        for side in sides if i % 2 == 0 else sides[::-1]:
            side.curve.append(await run_calls(side, n, turns, utterance, fakes_pid, smaps))
            await asyncio.to_thread(settle, side)


def summary(ours: Side, base: Side) -> dict[str, Any]:
    ours_knee, base_knee = knee(ours.curve), knee(base.curve)
    at = {p["n"]: p for p in base.curve if not p["failed_turns"]}
    # memory compared where both sides held every call
    common = [p for p in ours.curve if p["n"] in at and not p["failed_turns"]]
    largest = common[-1] if common else None
    out: dict[str, Any] = {"knee": ours_knee, "handbuilt_knee": base_knee}
    out["knee_ratio"] = round(ours_knee / base_knee, 2) if ours_knee and base_knee else None
    if largest is not None:
        out["pss_per_call_ratio"] = round(largest["pss_mb_per_call"] / at[largest["n"]]["pss_mb_per_call"], 3)
        out["pss_per_call_ratio_at_n"] = largest["n"]
        # what one more call adds (the idle tree left out): the fixed cost of serve aside
        out["pss_marginal_ratio"] = round(largest["pss_mb_marginal"] / at[largest["n"]]["pss_mb_marginal"], 3)
    one, base_one = next((p for p in ours.curve if p["n"] == 1), None), at.get(1)
    if one and base_one and one["p50_ms"] and base_one["p50_ms"]:
        out["p50_ratio_n1"] = round(one["p50_ms"] / base_one["p50_ms"], 3)
    out["meets_target"] = {
        "knee_ratio": out["knee_ratio"] is not None and out["knee_ratio"] >= TARGETS["knee_ratio"],
        "pss_per_call_ratio": out.get("pss_per_call_ratio") is not None
        and out["pss_per_call_ratio"] <= TARGETS["pss_per_call_ratio"],
        "p50_ratio_n1": out.get("p50_ratio_n1") is not None and out["p50_ratio_n1"] <= TARGETS["p50_ratio_n1"],
    }
    return out


def parse_variant(text: str, parser: argparse.ArgumentParser) -> tuple[str, dict[str, str], list[str]]:
    """'NAME:[VAR=VALUE ...] [serve options]' -> (name, environment, options)."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip() or not name.replace("-", "").replace("_", "").isalnum():
        parser.error(f"--variant {text!r}: write NAME:[VAR=VALUE ...] [serve options] (NAME of letters, digits, - or _)")
    words = shlex.split(rest)
    env: dict[str, str] = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        var, _, value = words.pop(0).partition("=")
        env[var] = value
    return name.strip(), env, words


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="1,2,4,8,12,16", help="concurrent calls, comma-separated (default 1,2,4,8,12,16)")
    p.add_argument("--turns", type=int, default=4, help="timed turns per call (default 4)")
    p.add_argument("--warmup", type=int, default=2, help="turns of one untimed call per side first (default 2)")
    p.add_argument("--quick", action="store_true", help="N = 1,2, one turn per call, no warm-up: that it works, not a figure")
    p.add_argument("--ours", default="", help="extra serve options for our side, e.g. '--executor thread'")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:[VAR=VALUE ...] [OPTIONS]",
                   help="another serve measured in the same run, e.g. 'thread:--executor thread' or "
                   "'before:PYTHONPATH=/tmp/base' (the code of another checkout); repeatable")
    p.add_argument("--no-handbuilt", action="store_true", help="measure serve alone")
    p.add_argument("--smaps", action="store_true",
                   help="add each point's memory by process role and mapping kind (key 'smaps', see _smaps.py)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.turns, args.warmup = "1,2", 1, 0
    try:
        ns = sorted({int(x) for x in args.n.split(",") if x.strip()})
    except ValueError:
        p.error(f"--n: not a comma-separated list of numbers: {args.n!r}")
    if not ns or ns[0] < 1 or ns[-1] > 64:
        p.error("--n: each N must be 1 to 64 (serve takes at most 64 browser calls at once)")
    variants = [parse_variant(v, p) for v in args.variant]
    from mcp_servers.harness import stdio_command

    started = time.perf_counter()
    command, mcp_args = stdio_command()
    mcp = [command, *mcp_args]
    sides: list[Side] = []
    with tempfile.TemporaryDirectory(prefix="concurrent-calls-") as folder:
        tmp = Path(folder)
        fakes, urls = start_fakes(tmp)
        try:
            (tmp / "ours").mkdir()
            sides.append(start_ours(tmp / "ours", urls, mcp, shlex.split(args.ours)))
            for i, (name, env, options) in enumerate(variants):
                (tmp / f"variant-{i}").mkdir()
                sides.append(start_ours(tmp / f"variant-{i}", urls, mcp, options, name, env))
            if not args.no_handbuilt:  # last: the summary compares the first side with it
                (tmp / "handbuilt").mkdir()
                sides.append(start_handbuilt(tmp / "handbuilt", urls, mcp))
            asyncio.run(measure(sides, ns, args.turns, args.warmup, fakes.pid, args.smaps))
        except BenchError as exc:
            progress(f"concurrent_calls failed: {exc}")
            return 1
        finally:
            for side in sides:
                side.stop()
            fakes.send_signal(signal.SIGTERM)
            fakes.wait(10)
    result: dict[str, Any] = {"benchmark": "concurrent_calls"}
    ours, others = sides[0], sides[1:]
    handbuilt = others.pop() if not args.no_handbuilt else None
    if handbuilt is not None:
        result.update(summary(ours, handbuilt))
    else:
        result["knee"] = knee(ours.curve)
    result.update({
        "ours": ours.curve,
        **({"handbuilt": handbuilt.curve} if handbuilt is not None else {}),
        "variants": {s.name: {"knee": knee(s.curve), "curve": s.curve, "options": options}
                     for s, (_, _, options) in zip(others, variants)},
        "idle_pss_mb": {s.name: round(s.idle_pss_mb, 1) for s in sides},
        "ours_options": f"--idle-processes 1 --max-browser-calls 64 {args.ours}".strip(),
        "n": ns, "turns_per_call": args.turns, "knee_rule": f"p95 <= {KNEE_RATIO} x own N=1 p95, no failed turn",
        "targets": TARGETS, "wall_s": round(time.perf_counter() - started, 1), "machine": machine(),
    })
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
