"""``claims: {judge: {llm: ...}}``: a model asked after each agent turn, off the
speech path, whether the reply asserts an action or a looked-up fact that the
turn's tool calls do not support. Its ``llm`` is declared as the pipeline's is
(one provider or a fallback list), so the model types depend on the providers
the plugins register: the Claims model is made per registry, in ``spec_model``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, create_model

JUDGE_TIMEOUT_S = 20.0


def claims_model(base: type, strict: type, llm: Any) -> type:
    """``base`` (the spec's Claims) with a ``judge`` whose ``llm`` is ``llm`` (the
    registry's provider union, one or a list); ``base`` itself when no provider is known."""
    if llm is None:
        return base
    judge = create_model(
        "ClaimsJudge", __base__=strict, __doc__="A model that reads each reply for claims no tool call backs.",
        llm=(llm, Field(description="The judge's model, declared like pipeline.llm (a list is a fallback chain).")),
        timeout_s=(float, Field(JUDGE_TIMEOUT_S, gt=0, le=120,
                                description="Seconds one verdict may take; a judge that takes longer is logged.")),
    )
    return create_model(
        "Claims", __base__=base, __doc__=base.__doc__,
        judge=(judge | None, Field(None, description="Ask a model after each turn (never delaying the caller) "
                                   "whether the reply claims what no tool call backs; its verdict is logged, "
                                   "counted and in the call report.")),
    )
