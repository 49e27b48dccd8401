"""Silero voice activity detection (runs locally, ships its model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ... import hookimpl
from ._common import ProviderOptions

if TYPE_CHECKING:
    from ..registry import ProviderRegistrar


class SileroVADOptions(ProviderOptions):
    min_speech_duration: float | None = Field(None, ge=0, description="Seconds of speech to start a turn.")
    min_silence_duration: float | None = Field(None, ge=0, description="Seconds of silence to end a turn.")
    prefix_padding_duration: float | None = Field(None, ge=0)
    activation_threshold: float | None = Field(None, gt=0, lt=1)
    sample_rate: Literal[8000, 16000] | None = None
    force_cpu: bool | None = None


def make_vad(options: SileroVADOptions) -> Any:
    # not silero.VAD.load: that makes an ONNX session per VAD; this one runs on the
    # process's session, which serve's job processes inherit from the forkserver
    from ...core.livekit_compat import silero_vad

    return silero_vad(**options.constructor_kwargs())


@hookimpl
def voice_runtime_register_providers(register: ProviderRegistrar) -> None:
    register("vad", "silero", SileroVADOptions, make_vad)
