"""Shared pieces of the built-in provider plugins."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr
from pydantic_core import PydanticCustomError

from ...core.mounted import BOM, header_trouble, mounted_secret

def _header_safe(value: SecretStr | None) -> SecretStr | None:
    """The key travels in an HTTP header: a character one cannot carry would fail
    every request (after the SDK's retries) with UnicodeEncodeError. The value is
    never echoed; a mounted secret file's trailing newline is dropped."""
    if value is None:
        return None
    text = mounted_secret(value.get_secret_value())
    trouble = header_trouble(text, tab=False)
    if trouble is not None and BOM in text:
        raise PydanticCustomError("api_key", "the API key {trouble}", {"trouble": trouble})
    if trouble is not None:
        raise PydanticCustomError(
            "api_key", "the API key has a character HTTP headers cannot carry (non-ASCII, a line break "
            "or another control character); check the variable it comes from")
    return SecretStr(text)


ApiKey = Annotated[
    SecretStr | None,
    AfterValidator(_header_safe),
    Field(description="API key; write it as ${VAR} so it never lands in git. Default: the provider's env var."),
]
BaseUrl = Annotated[str | None, Field(description="Override the API endpoint (proxies, gateways, tests).")]


class ProviderOptions(BaseModel):
    """Base of every provider options model: strict, so a typo is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def constructor_kwargs(self, *, rename: dict[str, str] | None = None) -> dict[str, Any]:
        """The options as keyword arguments for the livekit constructor.

        Options that are None are left out so livekit's own defaults apply; every
        other value, defaults included, is passed, so what runs is what `check`
        reports. Secrets are unwrapped only here, at the last moment.
        """
        rename = rename or {}
        out: dict[str, Any] = {}
        for key in type(self).model_fields:
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            out[rename.get(key, key)] = value
        return out
