"""OpenAI: chat LLM, Realtime speech-to-speech, STT and TTS."""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ... import hookimpl
from ._common import ApiKey, BaseUrl, ProviderOptions

if TYPE_CHECKING:
    from ..registry import ProviderRegistrar


class OpenAILLMOptions(ProviderOptions):
    model: str = Field("gpt-4.1-mini", description="Chat model, e.g. gpt-4.1-mini.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_completion_tokens: int | None = Field(None, gt=0)
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    max_retries: int | None = Field(None, ge=0)
    base_url: BaseUrl = None
    api_key: ApiKey = None


class OpenAIRealtimeOptions(ProviderOptions):
    model: str = Field("gpt-realtime", description="Realtime model, e.g. gpt-realtime.")
    voice: str = Field("marin", description="Voice, e.g. marin, cedar, alloy.")
    modalities: list[Literal["text", "audio"]] | None = Field(
        None, description="Output modalities; default audio. [text] for text-only agents."
    )
    temperature: float | None = Field(None, ge=0, le=2)
    speed: float | None = Field(None, gt=0)
    max_retry: int = Field(3, ge=0, description="Reconnect attempts before the session falls back.")
    retry_interval: float = Field(2.0, ge=0, description="Seconds between reconnect attempts.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the websocket.")
    base_url: BaseUrl = None
    api_key: ApiKey = None


class OpenAISTTOptions(ProviderOptions):
    model: str = Field("gpt-4o-mini-transcribe", description="Transcription model.")
    language: str | None = Field(None, description="ISO language code, e.g. en.")
    prompt: str | None = None
    use_realtime: bool | None = None
    base_url: BaseUrl = None
    api_key: ApiKey = None


class OpenAITTSOptions(ProviderOptions):
    model: str = Field("gpt-4o-mini-tts", description="Speech model.")
    voice: str | None = Field(None, description="Voice, e.g. ash, coral.")
    speed: float | None = Field(None, gt=0)
    instructions: str | None = Field(None, description="How to speak (tone, pace).")
    base_url: BaseUrl = None
    api_key: ApiKey = None


# One HTTP client per (event loop, endpoint). Clients are tied to the loop their
# connections were opened in.
_clients: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


@functools.cache
def tls_context() -> Any:
    """The TLS context of the process's OpenAI clients: httpx2's default one (its
    trust_env reading of SSL_CERT_FILE / SSL_CERT_DIR), built once. Building one
    parses the CA bundle: each client made its own on a call's loop, 200-300 ms
    of blocked loop in a busy job process. serve builds it in livekit's forkserver
    (serve/forkserver_calls.py); a context is safe to share between clients."""
    import httpcore2

    return httpcore2.default_ssl_context()


def _shared_client(api_key: str | None, base_url: str | None, max_retries: int | None) -> Any:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None  # built outside a loop: let livekit make its own
    key = (api_key, base_url, max_retries)
    per_loop = _clients.setdefault(loop, {})
    client = per_loop.get(key)
    if client is None or client.is_closed():
        import httpx2
        import openai as openai_sdk

        # the same settings livekit's openai.LLM gives the client it makes itself
        client = per_loop[key] = openai_sdk.AsyncClient(
            api_key=api_key, base_url=base_url, max_retries=max_retries or 0,
            http_client=httpx2.AsyncClient(
                verify=tls_context(),
                timeout=httpx2.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0), follow_redirects=True,
                limits=httpx2.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=120),
            ),
        )
    return client


def make_llm(options: OpenAILLMOptions) -> Any:
    from livekit.plugins import openai

    kwargs = options.constructor_kwargs()
    client = _shared_client(kwargs.get("api_key"), kwargs.get("base_url"), kwargs.get("max_retries"))
    if client is not None:
        # not owned by the LLM: its aclose() leaves the shared client open
        kwargs = {k: v for k, v in kwargs.items() if k not in ("api_key", "base_url", "max_retries")}
        kwargs["client"] = client
    return openai.LLM(**kwargs)


def make_realtime(options: OpenAIRealtimeOptions) -> Any:
    from livekit.agents import APIConnectOptions
    from livekit.plugins import openai

    class RealtimeModel(openai.realtime.RealtimeModel):  # type: ignore[misc]
        """livekit's model, plus ``connected``: set when a session's socket has
        delivered its first server event. A text turn sent before that waits 5 s
        for an acknowledgement a refused socket never gives, so the session runner
        holds its first turn until the model is up or the fallback took over."""

        connected: asyncio.Event | None = None

        def session(self, *args: Any, **kwargs: Any) -> Any:
            session = super().session(*args, **kwargs)
            self.connected = connected = asyncio.Event()
            session.on("openai_server_event_received", lambda _event: connected.set())
            return session

    kwargs = options.constructor_kwargs()
    conn = APIConnectOptions(
        max_retry=kwargs.pop("max_retry", options.max_retry),
        retry_interval=kwargs.pop("retry_interval", options.retry_interval),
        timeout=kwargs.pop("connect_timeout", options.connect_timeout),
    )
    return RealtimeModel(conn_options=conn, **kwargs)


def make_stt(options: OpenAISTTOptions) -> Any:
    from livekit.plugins import openai

    return openai.STT(**options.constructor_kwargs())


def make_tts(options: OpenAITTSOptions) -> Any:
    from livekit.plugins import openai

    return openai.TTS(**options.constructor_kwargs())


@hookimpl
def voice_runtime_register_providers(register: ProviderRegistrar) -> None:
    register("llm", "openai", OpenAILLMOptions, make_llm, api_key_env="OPENAI_API_KEY")
    register("realtime", "openai", OpenAIRealtimeOptions, make_realtime, api_key_env="OPENAI_API_KEY")
    register("stt", "openai", OpenAISTTOptions, make_stt, api_key_env="OPENAI_API_KEY")
    register("tts", "openai", OpenAITTSOptions, make_tts, api_key_env="OPENAI_API_KEY")
