"""The livekit objects a spec asks for: providers built by the plugins' factories,
fallback chains over them (livekit's FallbackAdapter), the models of one agent mode,
and the livekit ``Agent`` made from them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec

log = logging.getLogger("voice_runtime.build")


def import_livekit_plugins() -> None:
    """Import every installed ``livekit.plugins.*`` package. livekit requires
    plugins to register on the main thread, and console/serve build agents in
    job threads or processes; livekit's own ``download-files`` does the same."""
    import importlib
    import pkgutil

    import livekit.plugins

    for module in pkgutil.iter_modules(livekit.plugins.__path__):
        try:
            importlib.import_module(f"livekit.plugins.{module.name}")
        except Exception as exc:  # noqa: BLE001 - a broken optional plugin is not ours to fail on
            log.warning("livekit plugin %s failed to import: %s", module.name, exc)


def make_provider(plugins: Plugins, kind: str, options: Any) -> Any:
    """Build with the plugin's factory, handing it an instance of its own options
    model (the spec's copy also carries the ``provider`` discriminator)."""
    provider = plugins.registry.provider(kind, options.provider)
    own = provider.options.model_validate(options.model_dump(exclude_unset=True, exclude={"provider"}))
    return provider.factory(own)


def make_chain(plugins: Plugins, kind: str, chain: list[Any], *, vad: Any = None) -> Any:
    """One provider, or livekit's FallbackAdapter over a list of them."""
    made = [make_provider(plugins, kind, options) for options in chain]
    if len(made) == 1:
        return made[0]
    from livekit.agents import llm, stt, tts

    if kind == "llm":
        return llm.FallbackAdapter(made)
    if kind == "stt":
        return stt.FallbackAdapter(made, vad=vad)
    return tts.FallbackAdapter(made)


@dataclass
class Models:
    """The livekit objects one agent mode needs."""

    mode: str  # "realtime" or "pipeline"
    llm: Any
    stt: Any = None
    tts: Any = None
    vad: Any = None
    turn_detection: Any = None


def build_models(plugins: Plugins, loaded: LoadedSpec, mode: str, *, text_only: bool = False) -> Models:
    spec: Any = loaded.spec
    if mode == "realtime":
        options = spec.realtime
        if text_only and "modalities" in type(options).model_fields:
            options = options.model_copy(update={"modalities": ["text"]})
        if spec.pipeline is not None and getattr(options, "max_retry", 1) == 0:
            # a first failure must surface as a recoverable error for the
            # pipeline fallback to take over cleanly
            options = options.model_copy(update={"max_retry": 1})
        return Models("realtime", make_provider(plugins, "realtime", options))
    pipeline = spec.pipeline
    if text_only or pipeline.text_only:
        return Models("pipeline", make_chain(plugins, "llm", pipeline.llm))
    vad = make_provider(plugins, "vad", pipeline.vad) if pipeline.vad is not None else None
    return Models(
        "pipeline",
        llm=make_chain(plugins, "llm", pipeline.llm),
        stt=make_chain(plugins, "stt", pipeline.stt, vad=vad),
        tts=make_chain(plugins, "tts", pipeline.tts),
        vad=vad,
        turn_detection=_turn_detection(pipeline.turn_detection),
    )


def _turn_detection(value: str | None) -> Any:
    if value is None:
        return None
    if value == "model":
        from livekit.agents.inference import TurnDetector

        return TurnDetector()
    return value


def build_agent(loaded: LoadedSpec, models: Models, tools: list[Any], *, chat_ctx: Any = None,
                instructions: str | None = None) -> Any:
    from .handoffs import runtime_agent_class

    return runtime_agent_class()(**build_agent_kwargs(loaded, models, tools, chat_ctx=chat_ctx,
                                                      instructions=instructions))


def build_agent_kwargs(loaded: LoadedSpec, models: Models, tools: list[Any], *, chat_ctx: Any = None,
                       instructions: str | None = None) -> dict[str, Any]:
    from livekit.agents import NOT_GIVEN

    kwargs: dict[str, Any] = {
        "instructions": loaded.instructions if instructions is None else instructions,
        "tools": tools,
        "llm": models.llm,
        "stt": models.stt if models.stt is not None else NOT_GIVEN,
        "tts": models.tts if models.tts is not None else NOT_GIVEN,
        "vad": models.vad if models.vad is not None else NOT_GIVEN,
    }
    if models.turn_detection is not None:
        kwargs["turn_handling"] = {"turn_detection": models.turn_detection}
    if chat_ctx is not None:
        kwargs["chat_ctx"] = chat_ctx
    return kwargs
