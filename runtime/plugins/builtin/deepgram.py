"""Deepgram speech-to-text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from ... import hookimpl
from ._common import ApiKey, BaseUrl, ProviderOptions

if TYPE_CHECKING:
    from ..registry import ProviderRegistrar


class DeepgramSTTOptions(ProviderOptions):
    model: str = Field("nova-3", description="Deepgram model, e.g. nova-3.")
    language: str | None = Field(None, description="Language, e.g. en or en-US; multi for code-switching.")
    interim_results: bool | None = None
    punctuate: bool | None = None
    smart_format: bool | None = None
    endpointing_ms: int | None = Field(None, ge=0)
    filler_words: bool | None = None
    profanity_filter: bool | None = None
    numerals: bool | None = None
    keyterms: list[str] | None = Field(None, description="Words to boost (nova-3).")
    base_url: BaseUrl = None
    api_key: ApiKey = None


def make_stt(options: DeepgramSTTOptions) -> Any:
    from livekit.plugins import deepgram

    return deepgram.STT(**options.constructor_kwargs(rename={"keyterms": "keyterm"}))


@hookimpl
def voice_runtime_register_providers(register: ProviderRegistrar) -> None:
    register("stt", "deepgram", DeepgramSTTOptions, make_stt, api_key_env="DEEPGRAM_API_KEY")
