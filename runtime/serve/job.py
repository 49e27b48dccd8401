"""What runs in a LiveKit job process (or job thread) under `voice-runtime serve`.

Both functions are top-level so livekit can pickle them by reference (bound with
``functools.partial`` to serve's state folder). A job process belongs to no agent
until a call arrives: the entrypoint routes the job to its agent (routing.py) and
reads that agent's spec as the parent published it, never at prewarm (a
prewarmed process may be older than the newest generation; see
notes/livekit-1.8.9.md, "Getting runtime-changing config into a job"). Its MCP
tools are serve's warm connections, borrowed through the gateway. With the
thread executor nothing is pickled, and the partial carries serve's own MCP pool
as ``shared_pool``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.error_text import error_text

if TYPE_CHECKING:
    from livekit.agents import JobContext, JobProcess

    from ..mcp.pool import McpPool
    from .options import Route

log = logging.getLogger("voice_runtime.job")

def _accepted_plugins(state_dir: str, plugins_dir: str | None) -> Any:
    """The plugin files the serve process accepted, as it accepted them: never the
    folder as it is now, which may hold a file that hangs or exits at import."""
    from ..plugins.manager import make_plugin_manager, published_files

    files = published_files(Path(state_dir))
    if not files.sources and not files.errors:  # the built-ins alone: the forkserver's, if it made them
        shared = getattr(sys.modules.get(FORKSERVER_PLUGINS), "PLUGINS", None)
        if shared is not None:
            return shared
    return make_plugin_manager(Path(plugins_dir) if plugins_dir else None, files=files, trial=False)


# made in the forkserver under the process executor only (serve/preload.py): one process, one call
FORKSERVER_PLUGINS = "voice_runtime.serve.forkserver_plugins"


def prewarm(proc: JobProcess, state_dir: str, plugins_dir: str | None, shared_pool: McpPool | None = None) -> None:
    """Ready a job process for a call of any agent: the accepted plugins loaded and
    the modules a call needs imported. No agent's spec is read here (the process
    may serve any agent, and the spec may change before it does), and no MCP
    server is connected: serve holds those and lends them (mcp/gateway.py)."""
    proc.userdata["plugins_stamp"] = _plugins_stamp(state_dir)
    plugins = proc.userdata["plugins"] = _accepted_plugins(state_dir, plugins_dir)
    _warm_up(plugins)


def _plugins_stamp(state_dir: str) -> tuple[int, int, int] | None:
    """Which publication of the accepted plugin files this is (serve replaces the
    file whole, so a new one is a new inode)."""
    from ..plugins.manager import PUBLISHED

    try:
        st = os.stat(os.path.join(state_dir, PUBLISHED))
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _current_plugins(proc: Any, state_dir: str, plugins_dir: str | None) -> Any:
    """The plugins prewarm loaded, unless serve accepted other plugin code since
    (a process still warming up when serve recycled the idle ones): then the
    accepted files now (only changed files run again)."""
    stamp = _plugins_stamp(state_dir)
    plugins = proc.userdata.get("plugins")
    if plugins is None or proc.userdata.get("plugins_stamp") != stamp:
        plugins = _accepted_plugins(state_dir, plugins_dir)
        proc.userdata["plugins"], proc.userdata["plugins_stamp"] = plugins, stamp
    return plugins


# The modules a call needs (mcp.types alone is about 0.5 s of CPU; claims compiles
# its patterns on import). serve's process executor imports them once in livekit's
# forkserver (``preload_modules``), so each job process forked from it starts with
# them; prewarm imports them again, which costs nothing there and is the import
# under the thread executor. None of them is plugin code, which may change while
# serve runs and is loaded in each job (``_accepted_plugins``).
CALL_MODULES = (
    "mcp.types",
    "livekit.agents.llm",
    "voice_runtime.spec.models",
    "voice_runtime.spec.call_context",
    "voice_runtime.mcp.gateway",
    "voice_runtime.mcp.toolset",
    "voice_runtime.session.runner",
    "voice_runtime.session.claims",
    "voice_runtime.session.call_report",
    "voice_runtime.session.browser_audio",
    "voice_runtime.serve.catalog",
    "voice_runtime.serve.routing",
    "voice_runtime.serve.talk_job",
    "voice_runtime.serve.simulate",
    "voice_runtime.observe.report_spool",
    # imported on first use in a call (sys.modules at a browser call's end, less before it);
    # observe.metrics is imported by _warm_up instead (JOB_MODULES)
    "anyio._backends._asyncio",  # httpx's connection pool, at the first request
    "openai.resources.chat.chat",  # the OpenAI client's chat resource and its streams, at the first completion
    "livekit.agents.voice.report",
    "livekit.agents.llm.async_toolset",
    "voice_runtime.mcp.context",
    "voice_runtime.observe.call_journal",
    "voice_runtime.observe.logs",
    "voice_runtime.session.fillers",
    "voice_runtime.session.phone",
    "voice_runtime.spec.handoffs",
    "voice_runtime.spec.reports_file",
    "voice_runtime.serve.forkserver_calls",  # the mock room and TLS contexts, made once
)
# imported in each job process, after the fork: its unlabeled gauges make their value
# files (PROMETHEUS_MULTIPROC_DIR) under the importing process's pid (1.5 ms of CPU)
JOB_MODULES = ("voice_runtime.observe.metrics",)


def _warm_up(plugins: Any) -> None:
    """Pay here, once per process, what a call's first use costs: imports
    (``CALL_MODULES``), the spec model with the plugins' providers, and livekit's
    function-tool and the MCP types' first builds (5-20 ms on this machine's call)."""
    import importlib

    for name in (*CALL_MODULES, *JOB_MODULES):
        importlib.import_module(name)
    import mcp.types
    from livekit.agents.llm import function_tool

    from ..spec.models import spec_model

    spec_model(plugins.registry)

    async def warm_up(text: str) -> str:
        """Warm-up."""
        return text

    async def warm_up_raw(raw_arguments: dict[str, Any]) -> str:
        return str(raw_arguments)

    function_tool(warm_up)
    function_tool(warm_up_raw, raw_schema={"name": "warm_up", "description": "Warm-up.",
                                           "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}})
    mcp.types.Tool.model_validate({"name": "warm_up", "inputSchema": {"type": "object"}})
    mcp.types.CallToolResult.model_validate({"content": [{"type": "text", "text": "warm"}]})


async def entrypoint(ctx: JobContext, state_dir: str, plugins_dir: str | None, route: Route,
                     shared_pool: McpPool | None = None) -> None:
    from ..session.runner import SessionRefused, SessionRunner
    from ..spec.call_context import ContextRefused
    from .catalog import read_published, read_published_reachable
    from ..mcp.gateway import GatewayPool
    from .routing import Unroutable, agent_of
    from .talk_job import BrowserCall

    entered = time.perf_counter()
    try:
        agent = agent_of(ctx.job, route)
    except Unroutable as exc:  # serve refuses these before they start; a job from elsewhere
        log.error("job %s: %s", ctx.job.id, exc)
        ctx.shutdown(reason=str(exc))
        return
    plugins = _current_plugins(ctx.proc, state_dir, plugins_dir)

    def read() -> tuple[Any, int, dict[str, Any]]:
        loaded, generation = read_published(Path(state_dir), agent, plugins)
        # handoff targets as they are now: the call keeps them for its whole length
        return loaded, generation, read_published_reachable(Path(state_dir), loaded, plugins)

    # off the job's loop: validating specs compiles their users' patterns (up to a few
    # seconds for an agent and its handoff targets), while livekit's pings wait
    loaded, generation, targets = await asyncio.to_thread(read)
    spec_read = time.perf_counter()
    # a thread executor's job uses serve's pool itself; a job process borrows it
    borrowed = None if shared_pool is not None else GatewayPool.from_state_dir(Path(state_dir), ctx.job.id)
    pool = shared_pool if shared_pool is not None else borrowed
    fake = ctx.is_fake_job()
    # a browser call (GET /talk) is a fake job too, with the page's audio as the room's
    browser = BrowserCall.of(ctx, loaded) if fake else None
    if browser is not None:
        await browser.connect()
    try:
        values = await _call_context(ctx, loaded, simulated=fake and browser is None, fake=fake)
        # the spec made for this call: a value that cannot go into a header refuses it here
        from ..session.phone import PhoneLine

        # a LiveKit room's phone line (transfers, DTMF, hang-up); a fake job has none
        runner = SessionRunner(loaded, plugins, text_only=fake and not (browser and browser.audio), pool=pool,
                               session_id=ctx.job.id, specs=targets, call_context=values,
                               line=None if fake else PhoneLine.of_job(ctx), **(browser.io() if browser else {}))
    except ContextRefused as exc:
        await _refuse(ctx, loaded, plugins, Path(state_dir), generation, exc, fake and browser is None)
        if borrowed is not None:
            await borrowed.aclose()
        return
    log.info("job %s: agent %s generation %d (%s)", ctx.job.id, agent, generation, loaded.digest[:12],
             extra={"agent": agent, "generation": generation, "job_id": ctx.job.id})
    from ..session.call_report import CallReport, redactor

    call_report = CallReport(runner, generation=generation, call_id=ctx.job.id, room=ctx.job.room.name,
                             redact=redactor(loaded, runner.call_context).redact_data)
    call_report.checkpoint = _checkpoint(Path(state_dir), loaded, ctx.job.id)
    runner.call_report = call_report

    async def close(reason: str = "") -> None:
        if not call_report.done:  # a LiveKit call (a simulated one reported already), however it ended
            await runner.claims_settled()  # the last reply's findings and verdict (bounded) are in its report
            ended = call_report.finish(runner.end_reason or reason or "job shutdown",
                                       draining=draining(Path(state_dir)))
            await _report_out(Path(state_dir), loaded, plugins, runner.call_context, ended, call_report)
        await runner.aclose()
        if borrowed is not None:
            await borrowed.aclose()

    ctx.add_shutdown_callback(close)
    try:
        if browser is not None:
            await browser.run(ctx, runner)
            return
        if fake:
            await _simulated_call(ctx, runner, Path(state_dir), generation, (entered, spec_read))
            return
        if not ctx.room.isconnected():  # _call_context connected for a participant's attributes
            await ctx.connect()
        await runner.start(room=ctx.room)
    except SessionRefused as exc:
        log.error("job %s: agent %s refused the session: %s", ctx.job.id, agent, exc)
        call_report.end_reason = f"refused: {exc}"
        ctx.shutdown(reason=str(exc))


def _checkpoint(state_dir: Path, loaded: Any, job_id: str) -> tuple[Path, list[dict[str, Any]]] | None:
    """Where the call's report so far is kept while it runs (serve reports a killed
    job's call from it), with the targets it goes to."""
    from ..observe.report_spool import spool_of
    from ..session.call_report import targets

    found = spool_of(state_dir)
    if found is None:
        return None
    spool, serve_wide = found
    return spool.checkpoint_path(job_id), targets(loaded, serve_wide)


async def _report_out(state_dir: Path, loaded: Any, plugins: Any, values: dict[str, str], report: dict[str, Any],
                      call_report: Any = None, *, analyze: bool = True) -> dict[str, Any]:
    """The call's report, redacted (the spec's ${VAR} values, the call's secret context
    values), with its post-call analysis, told to the plugins' voice_runtime_call_report
    and into serve's durable spool, one entry per target (the spec's and serve's). The
    redacted report is returned: what /simulate answers is what receivers get."""
    from ..observe.report_spool import spool_of
    from ..plugins.manager import notify
    from ..session.analysis import with_analysis
    from ..session.call_report import redactor, targets

    redact = redactor(loaded, values).redact_data
    report = redact(report)
    if analyze:
        # serve closing its job processes gives each 10 s (livekit's close timeout): an
        # analysis past that would be killed with the job, and the call reported job_killed
        budget = DRAINING_ANALYSIS_S if draining(state_dir) else None
        report = redact(await with_analysis(plugins, loaded.spec, report, budget))
    else:
        report["analysis"] = None
    notify(plugins, "voice_runtime_call_report", report=report)
    found = spool_of(state_dir)
    where = targets(loaded, found[1] if found else None)
    if where and found is None:
        log.warning("agent %s: no report spool (serve named none); the call's report is not delivered", loaded.name)
    elif where and found is not None:
        try:
            found[0].add(report, where)
        except OSError as exc:
            log.error("agent %s: could not spool the report of call %s: %s", loaded.name, report.get("call_id"), exc)
    if call_report is not None:
        call_report.drop_checkpoint()
    return report


def draining(state_dir: Path) -> bool:
    """Serve is stopping (it marks its state folder): a call cut now ends by the drain."""
    return (state_dir / DRAINING_MARK).exists()


async def _cut_at_drain_end(state_dir: Path, script: asyncio.Task[None]) -> None:
    """Cancel a simulated call's ``script`` when serve's drain ends (the mark's
    ``cut_at``). Serve stops a job by closing livekit's pool after its drain, and
    livekit then waits 15 s for the entrypoint: a simulated call between turns ran on
    that long and ended as hang_up, past --drain-timeout (a LiveKit call's entrypoint
    has returned by then: its shutdown callback ends it at once)."""
    mark = state_dir / DRAINING_MARK
    while True:
        try:
            cut_at = float(json.loads(mark.read_text(encoding="utf-8"))["cut_at"])
            break
        except (OSError, ValueError, KeyError, TypeError):  # not stopping yet (or a mark being written)
            await asyncio.sleep(DRAIN_POLL_S)
    await asyncio.sleep(max(0.0, cut_at - time.time()))
    script.cancel()


DRAINING_MARK = "draining"  # in serve's state folder once it stops: calls cut after it end by the drain
DRAIN_POLL_S = 0.5  # how often a simulated call looks for the mark: a cut comes at most this late
DRAINING_ANALYSIS_S = 5.0
PARTICIPANT_WAIT_S = 15.0  # for the caller whose attributes (sip.*) the context reads


async def _call_context(ctx: JobContext, loaded: Any, *, simulated: bool, fake: bool) -> dict[str, str]:
    """The call's declared context from where LiveKit carries it (dispatch metadata,
    room metadata, the caller's attributes) or, for a simulated call, from its script.
    Secret values are added to the log redaction before anything can log them."""
    from ..observe.logs import add_secrets
    from ..observe import tracing
    from ..spec.call_context import gather, resolve, secret_values

    declared = loaded.spec.context
    if not declared:
        return {}
    given = None
    attributes: dict[str, str] = {}
    if simulated:
        script = json.loads(ctx.job.room.metadata or "{}")
        given = script.get("context") if isinstance(script.get("context"), dict) else {}
    elif fake:  # a browser call: the page's query, checked by serve when it was reserved
        talk = json.loads(ctx.job.room.metadata or "{}").get("talk") or {}
        given = talk.get("context") if isinstance(talk.get("context"), dict) else {}
    elif not fake and any(d.from_.startswith("participant:") for d in declared.values()):
        # a browser call (a fake job too) has no LiveKit participant: its declared
        # defaults apply, and a required participant value refuses it
        if ctx.job.HasField("participant"):
            attributes = dict(ctx.job.participant.attributes)
        else:
            await ctx.connect()
            try:
                participant = await asyncio.wait_for(ctx.wait_for_participant(), PARTICIPANT_WAIT_S)
                attributes = dict(participant.attributes)
            except asyncio.TimeoutError:
                log.warning("job %s: no participant joined within %gs; its attributes give no context",
                            ctx.job.id, PARTICIPANT_WAIT_S)
    raw = gather(declared, dispatch=ctx.job.metadata, room=None if simulated else ctx.job.room.metadata,
                 attributes=attributes, given=given)
    # redacted first: even a refused value (too long, wrong pattern) never reaches a log
    hidden = secret_values(declared, {k: str(v) for k, v in raw.items()})
    add_secrets(hidden)
    tracing.add_secret_values(hidden)
    values = resolve(declared, raw)
    add_secrets(secret_values(declared, values))
    return values


async def _refuse(ctx: JobContext, loaded: Any, plugins: Any, state_dir: Path, generation: int,
                  exc: Exception, simulated: bool) -> None:
    """A call whose context is refused: said in the log and counted; a simulated
    call's waiting request is told why."""
    from ..observe.metrics import observe_call_refused
    from .simulate import mark_ended, write_result

    from ..session.call_report import refused_report

    reason = getattr(exc, "reason", "invalid")
    log.error("job %s: agent %s refused the call: %s", ctx.job.id, loaded.name, exc,
              extra={"agent": loaded.name, "job_id": ctx.job.id, "refused": reason})
    observe_call_refused(loaded.name, reason)
    report = await _report_out(state_dir, loaded, plugins, {},
                               refused_report(loaded, generation, ctx.job.id, ctx.job.room.name, f"refused: {exc}"),
                               analyze=False)
    if simulated:
        script = json.loads(ctx.job.room.metadata or "{}")
        if script.get("report"):
            with contextlib.suppress(OSError):
                write_result(state_dir, ctx.job.room.name, {
                    "ok": False, "agent": loaded.name, "room": ctx.job.room.name, "generation": generation,
                    "turns": [], "error": f"call refused: {exc}", "refused": reason, "call_report": report})
        with contextlib.suppress(OSError):
            mark_ended(state_dir, ctx.job.id)
    ctx.shutdown(reason=f"call refused: {exc}")


async def _simulated_call(ctx: JobContext, runner: Any, state_dir: Path, generation: int,
                          entered: tuple[float, float]) -> None:
    """A call with no LiveKit server (``POST /simulate``): text turns from the
    room's metadata, then hang up. How serve is tested offline. With ``report``
    the transcript, tool calls and errors go back to serve (``?wait=1``)."""
    from .simulate import MAX_CALL_S, RESULT_CHARS, mark_ended, write_result

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
    timed_out = cancelled = False
    turns = asyncio.ensure_future(_run_script(ctx, runner, script, report, calls, entered))
    drain = asyncio.ensure_future(_cut_at_drain_end(state_dir, turns))
    try:
        async with asyncio.timeout(min(MAX_CALL_S, float(script.get("max_call_s") or MAX_CALL_S))):
            await turns
    except BaseException as exc:
        timed_out = isinstance(exc, TimeoutError)
        cancelled = isinstance(exc, asyncio.CancelledError)  # the job shut down (serve draining, a hang-up)
        report["ok"] = False
        limit = min(MAX_CALL_S, float(script.get("max_call_s") or MAX_CALL_S))
        report["error"] = (f"the simulated call took longer than {limit:g}s" if isinstance(exc, TimeoutError)
                           else str(exc) if type(exc).__name__ == "SessionRefused"
                           else error_text(exc))
        if not isinstance(exc, TimeoutError) and not drain.done():  # cut by the drain: reported below
            raise
    finally:
        drain.cancel()
        call_report = getattr(runner, "call_report", None)
        if call_report is not None:
            await runner.claims_settled()  # the last reply's findings and verdict (bounded) are in its report
            detail = "job shutdown" if cancelled else runner.end_reason or (
                "timeout" if timed_out else "error" if report["error"] else "simulated call finished")
            failed = [f"turn {n + 1}: {t['error']}" for n, t in enumerate(report["turns"]) if t.get("error")]
            error = None if cancelled else report["error"] or ("; ".join(failed) if failed else None)
            ended = call_report.finish(detail, error, draining=draining(state_dir))
            report["call_report"] = await _report_out(state_dir, call_report.loaded, runner.plugins,
                                                      runner.call_context, ended, call_report)
        if runner.call_context:
            # the turns' tool arguments hold pinned values, a secret one included
            from ..spec.call_context import secret_values
            from ..spec.secrets import SecretSet

            report.update(SecretSet(secret_values(runner.loaded.spec.context, runner.call_context))
                          .redact_data({k: v for k, v in report.items() if k != "call_report"}))
        if script.get("report"):
            try:
                write_result(state_dir, room, report)
            except OSError as exc:  # serve's wait then says the job ended without a result
                log.warning("job %s: could not report the simulated call: %s", ctx.job.id, exc)
        # after the report: once serve stops counting the call, its wait finds the
        # report; without the mark the call counts until its process exits
        with contextlib.suppress(OSError):
            mark_ended(state_dir, ctx.job.id)
    ctx.shutdown(reason="simulated call finished")


async def _run_script(ctx: JobContext, runner: Any, script: dict[str, Any], report: dict[str, Any],
                      calls: list[dict[str, Any]], entered: tuple[float, float]) -> None:
    from ..session.speech_loop import SpeechLoop, SpeechUnavailable

    await runner.start()
    # how long this call waited for its agent (spec, MCP tools, session) on this process
    entry, spec_read = entered
    marks = runner.marks

    def ms(a: float, b: float) -> float:
        return round((b - a) * 1000, 2)

    report["session_ready_ms"] = ms(entry, time.perf_counter())
    report["tools_ready_ms"] = ms(entry, runner.tools_ready_at)
    report["timings_ms"] = {"spec": ms(entry, spec_read), "mcp": ms(marks["start"], marks["mcp"]),
                            "tools": ms(marks["mcp"], marks["tools"])}
    report["pid"] = os.getpid()
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
                entry["error"] = error_text(exc)
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
