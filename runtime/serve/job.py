"""What runs in a LiveKit job process (or job thread) under `voice-runtime serve`.

Both functions are top-level so livekit can pickle them by reference (bound to an
agent with ``functools.partial``). With the thread executor nothing is pickled,
and the partial also carries serve's own MCP pool as ``shared_pool``. The spec is
read at job entry from what the parent published, never at prewarm: a prewarmed
process may be older than the newest generation (see notes/livekit-1.8.9.md,
"Getting runtime-changing config into a job").
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livekit.agents import JobContext, JobProcess

    from ..mcp.pool import McpPool

log = logging.getLogger("voice_runtime.job")

PREWARM_WAIT = 5.0  # seconds prewarm waits for MCP servers; slower ones finish in the background


def _accepted_plugins(state_dir: str, plugins_dir: str | None) -> Any:
    """The plugin files the serve process accepted, as it accepted them: never the
    folder as it is now, which may hold a file that hangs or exits at import."""
    from ..plugins import make_plugin_manager, published_files

    return make_plugin_manager(Path(plugins_dir) if plugins_dir else None,
                               files=published_files(Path(state_dir)), trial=False)


def prewarm(proc: JobProcess, agent: str, state_dir: str, plugins_dir: str | None,
            shared_pool: McpPool | None = None) -> None:
    """Load plugins and connect the agent's MCP servers before a call arrives
    (unless the job shares serve's pool, which serve keeps warm)."""
    from ..catalog import read_published
    from ..mcp.pool import PoolThread

    plugins = _accepted_plugins(state_dir, plugins_dir)
    proc.userdata["plugins"] = plugins
    if shared_pool is not None:
        return
    try:
        loaded, _ = read_published(Path(state_dir), agent, plugins)
    except Exception as exc:  # noqa: BLE001 - the job entry reports it properly
        log.warning("prewarm of %s: no accepted spec to warm (%s)", agent, exc)
        return
    pool = PoolThread()
    pool.warm([loaded], timeout=PREWARM_WAIT)
    proc.userdata["mcp"] = pool


async def entrypoint(ctx: JobContext, agent: str, state_dir: str, plugins_dir: str | None,
                     shared_pool: McpPool | None = None) -> None:
    from ..build import SessionRefused, SessionRunner
    from ..catalog import read_published, read_published_reachable

    plugins = ctx.proc.userdata.get("plugins") or _accepted_plugins(state_dir, plugins_dir)
    loaded, generation = read_published(Path(state_dir), agent, plugins)
    # handoff targets as they are now: the call keeps them for its whole length
    targets = read_published_reachable(Path(state_dir), loaded, plugins)
    warm = ctx.proc.userdata.get("mcp")
    pool = shared_pool if shared_pool is not None else (warm.pool if warm is not None else None)
    fake = ctx.is_fake_job()
    runner = SessionRunner(loaded, plugins, text_only=fake, pool=pool, session_id=ctx.job.id, specs=targets)
    log.info("job %s: agent %s generation %d (%s)", ctx.job.id, agent, generation, loaded.digest[:12],
             extra={"agent": agent, "generation": generation, "job_id": ctx.job.id})

    async def close() -> None:
        await runner.aclose()
        if warm is not None and shared_pool is None:
            await asyncio.to_thread(warm.close)

    ctx.add_shutdown_callback(close)
    try:
        if fake:
            await _simulated_call(ctx, runner, Path(state_dir), generation)
            return
        await ctx.connect()
        await runner.start(room=ctx.room)
    except SessionRefused as exc:
        log.error("job %s: agent %s refused the session: %s", ctx.job.id, agent, exc)
        ctx.shutdown(reason=str(exc))


async def _simulated_call(ctx: JobContext, runner: Any, state_dir: Path, generation: int) -> None:
    """A call with no LiveKit server (``POST /simulate``): text turns from the
    room's metadata, then hang up. How serve is tested offline. With ``report``
    the transcript, tool calls and errors go back to serve (``?wait=1``)."""
    from .simulate import MAX_CALL_S, RESULT_CHARS, write_result

    script = json.loads(ctx.job.room.metadata or "{}")
    room = ctx.job.room.name
    report: dict[str, Any] = {"ok": True, "agent": runner.name, "room": room, "generation": generation,
                              "turns": [], "error": None}
    calls: list[dict[str, Any]] = []

    def on_event(event: str, data: dict[str, Any]) -> None:
        if event == "tool_call":
            calls.append({"server": data["server"], "tool": data["tool"], "arguments": data["arguments"]})
        elif event == "tool_result" and calls:
            calls[-1].update(outcome=data["outcome"], latency_ms=data["latency_ms"],
                             result=str(data["result"])[:RESULT_CHARS])

    runner.listeners.append(on_event)
    try:
        async with asyncio.timeout(MAX_CALL_S):
            await _run_script(ctx, runner, script, report, calls)
    except BaseException as exc:
        report["ok"] = False
        report["error"] = (f"the simulated call took longer than {MAX_CALL_S:g}s" if isinstance(exc, TimeoutError)
                           else str(exc) if type(exc).__name__ == "SessionRefused"
                           else f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, TimeoutError):
            raise
    finally:
        if script.get("report"):
            try:
                write_result(state_dir, room, report)
            except OSError as exc:  # serve's wait then says the job ended without a result
                log.warning("job %s: could not report the simulated call: %s", ctx.job.id, exc)
    ctx.shutdown(reason="simulated call finished")


async def _run_script(ctx: JobContext, runner: Any, script: dict[str, Any], report: dict[str, Any],
                      calls: list[dict[str, Any]]) -> None:
    from ..loopback import SpeechLoop, SpeechUnavailable

    await runner.start()
    # "speech": each turn also through the pipeline's own STT and TTS (see loopback)
    try:
        speech = SpeechLoop.build(runner.loaded, runner.plugins) if script.get("speech") else None
    except SpeechUnavailable as exc:
        report["ok"], report["error"] = False, str(exc)
        log.error("job %s: simulated speech refused: %s", ctx.job.id, exc)
        return
    if script.get("speech") and speech is None:
        log.warning("job %s: agent %s has no pipeline STT and TTS; simulated speech is text only",
                    ctx.job.id, runner.name)
    try:
        for i, turn in enumerate(script.get("turns", [])):
            if i:
                await asyncio.sleep(float(script.get("gap_s", 0)))
            calls.clear()
            entry: dict[str, Any] = {"user": turn, "reply": "", "tool_calls": [], "error": None}
            try:
                if speech is not None:
                    turn = entry["heard"] = await speech.hear(turn)
                result = await runner.run_turn(turn)
            except Exception as exc:  # noqa: BLE001 - the call goes on after a failed turn, as in chat
                entry["error"] = f"{type(exc).__name__}: {exc}"
                report["ok"] = False
                log.warning("job %s: simulated turn %r failed: %s", ctx.job.id, turn, entry["error"])
            else:
                replies = [e.item.text_content for e in result.events
                           if getattr(e, "type", "") == "message" and getattr(e.item, "role", "") == "assistant"]
                entry["reply"] = " ".join(r or "" for r in replies)
                log.info("job %s: simulated turn %r -> %r", ctx.job.id, turn, entry["reply"])
                if speech is not None and entry["reply"].strip():
                    await speech.speak(entry["reply"])
            entry["tool_calls"] = list(calls)
            report["turns"].append(entry)
    finally:
        if speech is not None:
            await speech.aclose()
