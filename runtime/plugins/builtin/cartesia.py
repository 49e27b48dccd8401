"""Cartesia text-to-speech."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from ... import hookimpl
from ._common import ApiKey, BaseUrl, ProviderOptions

if TYPE_CHECKING:
    from ..registry import ProviderRegistrar


class CartesiaTTSOptions(ProviderOptions):
    model: str = Field("sonic-2", description="Cartesia model, e.g. sonic-2 or sonic-3.")
    voice: str | None = Field(None, description="Voice id.")
    language: str | None = Field(None, description="Language, e.g. en.")
    speed: float | None = Field(None, description="Speaking speed multiplier.")
    sample_rate: int | None = Field(None, gt=0)
    api_version: str | None = None
    base_url: BaseUrl = None
    api_key: ApiKey = None


def make_tts(options: CartesiaTTSOptions) -> Any:
    from livekit.plugins import cartesia

    return cartesia.TTS(**options.constructor_kwargs())


@hookimpl
def voice_runtime_register_providers(register: ProviderRegistrar) -> None:
    register("tts", "cartesia", CartesiaTTSOptions, make_tts, api_key_env="CARTESIA_API_KEY")
