"""Speech in a simulated call (``POST /simulate`` with ``"speech": true``).

A simulated call has no room and no microphone, so its turns are text. With
``speech`` each turn also goes through the agent's own pipeline STT and TTS, built
from the spec with the same plugins and keys a real call uses: the user's line is
spoken by the TTS and heard by the STT, the transcript is the turn the agent
answers, and the reply is spoken by the TTS. An operator sees from a deployed
``serve``, without LiveKit, that every provider accepts its key; the one-shot APIs
(``synthesize``, ``recognize``) are used, where a real call streams.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..plugins.manager import Plugins
    from ..spec.loader import LoadedSpec

log = logging.getLogger("voice_runtime.job")


class SpeechUnavailable(ValueError):
    """The spec's STT or TTS cannot be built; the message says why."""


@dataclass
class SpeechLoop:
    stt: Any
    tts: Any

    @classmethod
    def build(cls, loaded: LoadedSpec, plugins: Plugins) -> SpeechLoop | None:
        """The spec's pipeline STT and TTS; None when it has none (realtime only,
        ``text_only``). Raises SpeechUnavailable, in our words, for a provider
        without its key (the SDKs' own errors come with a traceback)."""
        from .providers import make_chain
        from ..plugins.registry import missing_api_keys

        pipeline: Any = loaded.spec.pipeline
        if pipeline is None or pipeline.stt is None or pipeline.tts is None:
            return None
        missing = missing_api_keys(loaded, plugins.registry, kinds=("stt", "tts"))
        if missing:
            raise SpeechUnavailable(f"{loaded.name}: " + "; ".join(missing))
        vad = None
        if pipeline.vad is not None and len(pipeline.stt) > 1:
            from .providers import make_provider

            vad = make_provider(plugins, "vad", pipeline.vad)  # an STT fallback chain needs it
        return cls(make_chain(plugins, "stt", pipeline.stt, vad=vad), make_chain(plugins, "tts", pipeline.tts))

    async def speak(self, text: str) -> list[Any]:
        """The TTS's audio frames for ``text``."""
        frames = []
        async with self.tts.synthesize(text) as stream:
            async for audio in stream:
                frames.append(audio.frame)
        return frames

    async def hear(self, text: str) -> str:
        """``text`` spoken by the TTS, then transcribed by the STT."""
        event = await self.stt.recognize(await self.speak(text))
        heard = event.alternatives[0].text if event.alternatives else ""
        log.info("simulated speech: said %r, heard %r", text, heard)
        return heard

    async def aclose(self) -> None:
        for model in (self.stt, self.tts):
            try:
                await model.aclose()
            except Exception:  # noqa: BLE001 - closing must not fail the call
                log.debug("closing %r raised", model, exc_info=True)
