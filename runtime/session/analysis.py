"""Post-call analysis (``analysis:`` in the spec, ``spec/analysis.py``): after the
call, the spec's pipeline LLM (or the model ``analysis.llm`` names, on the same
provider) is asked to fill the schema from the transcript. The answer is validated
against the schema (in a thread, its patterns bounded: ``spec/analysis.py``) and goes into the report as ``analysis.result``; whatever goes
wrong (no model, the provider down, a timeout, invalid JSON, an answer that does not
match) is ``analysis.error`` in the report, never a report dropped. Bounded by
``timeout_s`` for the whole attempt, retries included."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

log = logging.getLogger("voice_runtime.analysis")
MAX_ANSWER_CHARS = 64 * 1024  # of the model's answer; past it the answer is refused
MAX_TRANSCRIPT_CHARS = 100_000  # the call's end is kept: a summary needs how it ended

SYSTEM = ("{instructions}\n\nAnswer with one JSON object and nothing else (no prose, no code fence). "
          "It must match this JSON Schema:\n{schema}")


def transcript_text(transcript: list[dict[str, Any]]) -> str:
    lines = [f"{t['role']}: {t['text']}" for t in transcript if t.get("text")]
    text = "\n".join(lines)
    return text[-MAX_TRANSCRIPT_CHARS:]


def _model(plugins: Any, spec: Any) -> Any:
    from .providers import make_provider

    pipeline = getattr(spec, "pipeline", None)
    chain = getattr(pipeline, "llm", None) if pipeline is not None else None
    if not chain:
        raise LookupError("the spec has no pipeline llm to run the analysis with")
    options = chain[0] if isinstance(chain, list) else chain
    if spec.analysis.llm:
        options = options.model_copy(update={"model": spec.analysis.llm})
    return make_provider(plugins, "llm", options)


async def with_analysis(plugins: Any, spec: Any, report: dict[str, Any], budget_s: float | None = None
                        ) -> dict[str, Any]:
    """``report`` with its ``analysis`` (None when the spec asks for none); ``budget_s``
    shortens its time limit (a job being closed by serve has only seconds left)."""
    report["analysis"] = await analyze(plugins, spec, report.get("transcript") or [], budget_s) \
        if getattr(spec, "analysis", None) is not None else None
    return report


async def finished_report(plugins: Any, report: Any, detail: str, error: str | None = None, *,
                          analyze: bool = True) -> dict[str, Any]:
    """A local call's report (``chat --json``, a test case) as serve delivers it:
    ``report`` (a CallReport) finished, redacted, with the spec's post-call analysis
    (``analyze=False``: marked not run, for runs that must stay offline)."""
    ended = report.redact(report.finish(detail, error))
    if not analyze:
        ended["analysis"] = {"error": "not run: this run is offline"} \
            if getattr(report.spec, "analysis", None) is not None else None
        return ended
    return report.redact(await with_analysis(plugins, report.spec, ended))


async def analyze(plugins: Any, spec: Any, transcript: list[dict[str, Any]], budget_s: float | None = None
                  ) -> dict[str, Any]:
    """``{"result": {...}, "model", "duration_s"}`` or ``{"error": "...", "duration_s"}``."""
    from ..spec.analysis import validate_answer

    analysis = spec.analysis
    limit = min(analysis.timeout_s, budget_s) if budget_s is not None else analysis.timeout_s
    started = time.perf_counter()
    model_name = ""
    llm = None
    try:
        llm = _model(plugins, spec)
        model_name = str(getattr(llm, "model", "") or type(llm).__name__)
        text = await asyncio.wait_for(_ask(llm, analysis, transcript), limit)
        deadline = time.monotonic() + limit - (time.perf_counter() - started)
        # off the event loop (the job's session, serve's heartbeats go on) and within the same bound
        try:
            result = await asyncio.wait_for(asyncio.to_thread(validate_answer, analysis.schema_, text, deadline),
                                            max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise ValueError(f"schema validation took too long: no verdict within {limit:g}s") from None
        out: dict[str, Any] = {"result": result}
    except asyncio.TimeoutError:
        out = {"error": f"timeout: no answer within {limit:g}s"}
    except Exception as exc:  # noqa: BLE001 - any failure is the report's to say
        out = {"error": _why(exc)}
    finally:
        if llm is not None and hasattr(llm, "aclose"):
            try:
                await llm.aclose()
            except Exception:  # noqa: BLE001 - closing must not fail the report
                log.debug("closing the analysis model failed", exc_info=True)
    out.update(model=model_name or None, duration_s=round(time.perf_counter() - started, 3))
    if "error" in out:
        log.warning("post-call analysis failed: %s", out["error"])
    return out


async def _ask(llm: Any, analysis: Any, transcript: list[dict[str, Any]]) -> str:
    from livekit.agents import APIConnectOptions
    from livekit.agents.llm import ChatContext

    said = transcript_text(transcript)
    ctx = ChatContext.empty()
    ctx.add_message(role="system", content=SYSTEM.format(instructions=analysis.instructions,
                                                         schema=json.dumps(analysis.schema_)))
    ctx.add_message(role="user", content=f"The call's transcript:\n{said or '(nothing was said)'}")
    extra = {"response_format": {"type": "json_object"}} \
        if type(llm).__module__.startswith("livekit.plugins.openai") else {}
    parts: list[str] = []
    # one retry at most: the whole attempt is bounded by timeout_s anyway
    options = APIConnectOptions(max_retry=1, retry_interval=0.5, timeout=analysis.timeout_s)
    async with llm.chat(chat_ctx=ctx, conn_options=options, extra_kwargs=extra) as stream:
        async for chunk in stream:
            if chunk.delta is not None and chunk.delta.content:
                parts.append(chunk.delta.content)
                if sum(map(len, parts)) > MAX_ANSWER_CHARS:
                    raise ValueError(f"the answer is longer than {MAX_ANSWER_CHARS} characters")
    return "".join(parts)


def _why(exc: BaseException) -> str:
    """A short reason without the provider's own text where it may echo a key."""
    name = type(exc).__name__
    if isinstance(exc, (ValueError, LookupError)):
        return str(exc)
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"provider error: HTTP {status} ({name})"
    return f"provider error: {name}"
