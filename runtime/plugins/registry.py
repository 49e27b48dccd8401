"""What plugins registered: providers (by kind and name) and tools (by name).

Built from the ``voice_runtime_register_*`` hooks, one plugin at a time, so every
entry records its owner and a duplicate is reported with both owners' names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    import pluggy

    from ..spec.loader import LoadedSpec

ProviderKind = Literal["stt", "llm", "tts", "vad", "realtime"]
PROVIDER_KINDS: tuple[ProviderKind, ...] = ("stt", "llm", "tts", "vad", "realtime")
_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


class ProviderRegistrar(Protocol):
    def __call__(
        self,
        kind: ProviderKind,
        name: str,
        options: type[BaseModel],
        factory: Callable[[Any], Any],
        *,
        api_key_env: str | None = None,
    ) -> None: ...


class ToolRegistrar(Protocol):
    def __call__(self, name: str, factory: Callable[[], Any], *, description: str = "") -> None: ...


@dataclass(frozen=True)
class Provider:
    kind: ProviderKind
    name: str
    options: type[BaseModel]
    factory: Callable[[Any], Any]
    plugin: str
    # the environment variable the provider reads its key from when the spec sets no
    # ``api_key``; None: it needs no key (or cannot say)
    api_key_env: str | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    factory: Callable[[], Any]
    plugin: str
    description: str = ""


@dataclass(frozen=True)
class RegistryProblem:
    plugin: str
    message: str

    def __str__(self) -> str:
        return f"plugin {self.plugin}: {self.message}"


@dataclass(eq=False)  # hashed by identity: spec models are cached per registry
class Registry:
    providers: dict[tuple[str, str], Provider] = field(default_factory=dict)
    tools: dict[str, Tool] = field(default_factory=dict)
    problems: list[RegistryProblem] = field(default_factory=list)
    # what each plugin registered, for `voice-runtime plugins`
    contributions: dict[str, list[str]] = field(default_factory=dict)

    def providers_of(self, kind: str) -> list[Provider]:
        return sorted((p for p in self.providers.values() if p.kind == kind), key=lambda p: p.name)

    def provider(self, kind: str, name: str) -> Provider:
        return self.providers[(kind, name)]


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call each plugin's registration hooks in turn, recording who registered what."""
    reg = Registry()
    hooks = (
        ("voice_runtime_register_providers", _provider_registrar),
        ("voice_runtime_register_tools", _tool_registrar),
    )
    for hook_name, make_registrar in hooks:
        # Calling impls one by one (not pm.hook.X(...)) is what lets us know the
        # owner of each registration and keep going when one plugin raises.
        for impl in getattr(pm.hook, hook_name).get_hookimpls():  # registration order: built-ins first
            owner = impl.plugin_name
            try:
                impl.function(register=make_registrar(reg, owner))
            except BaseException as exc:  # noqa: BLE001 - a plugin bug (SystemExit too) must not take the others down
                reg.problems.append(RegistryProblem(owner, f"{hook_name} raised {type(exc).__name__}: {exc}"))
    return reg


def _provider_registrar(reg: Registry, owner: str) -> ProviderRegistrar:
    def register(kind: ProviderKind, name: str, options: type[BaseModel], factory: Callable[[Any], Any], *,
                 api_key_env: str | None = None) -> None:
        if kind not in PROVIDER_KINDS:
            raise ValueError(f"unknown provider kind {kind!r}; valid kinds: {', '.join(PROVIDER_KINDS)}")
        if not _NAME.match(name):
            raise ValueError(f"provider name {name!r} must match {_NAME.pattern}")
        if not (isinstance(options, type) and issubclass(options, BaseModel)):
            raise TypeError(f"options for {kind} provider {name!r} must be a pydantic model class")
        if api_key_env is not None and not (isinstance(api_key_env, str) and api_key_env):
            raise TypeError(f"api_key_env for {kind} provider {name!r} must be an environment variable name")
        if "provider" in options.model_fields:
            raise ValueError(f"options model for {kind} provider {name!r} must not define 'provider'")
        existing = reg.providers.get((kind, name))
        if existing is not None:
            reg.problems.append(
                RegistryProblem(owner, f"{kind} provider {name!r} is already registered by plugin {existing.plugin}")
            )
            return
        reg.providers[(kind, name)] = Provider(kind, name, options, factory, owner, api_key_env)
        reg.contributions.setdefault(owner, []).append(f"{kind}:{name}")

    return register


def _tool_registrar(reg: Registry, owner: str) -> ToolRegistrar:
    def register(name: str, factory: Callable[[], Any], *, description: str = "") -> None:
        if not _NAME.match(name):
            raise ValueError(f"tool name {name!r} must match {_NAME.pattern}")
        if not callable(factory):
            raise TypeError(f"tool {name!r}: factory must be callable")
        existing = reg.tools.get(name)
        if existing is not None:
            reg.problems.append(
                RegistryProblem(owner, f"tool {name!r} is already registered by plugin {existing.plugin}")
            )
            return
        reg.tools[name] = Tool(name, factory, owner, description)
        reg.contributions.setdefault(owner, []).append(f"tool:{name}")

    return register


def missing_api_keys(loaded: LoadedSpec, registry: Registry, *, text_only: bool = False,
                     kinds: tuple[str, ...] | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """One sentence per provider that would start without a key: the spec sets no
    ``api_key`` and the variable its plugin reads (``api_key_env``) is not set.
    Found here, before anything starts, instead of seconds into a session in the
    provider SDK's words. ``text_only``: only what a text session builds (the
    realtime model and the pipeline's LLMs); ``kinds``: only these of the pipeline
    (``("stt", "tts")`` for simulated speech), whatever the spec's ``text_only``."""
    environ = os.environ if environ is None else environ
    spec: Any = loaded.spec
    chains: list[tuple[str, str, Any]] = []
    if spec.realtime is not None and kinds is None:
        chains.append(("realtime", "realtime", [spec.realtime]))
    if spec.pipeline is not None:
        audio = not (text_only or spec.pipeline.text_only)
        for kind in kinds or (("stt", "llm", "tts") if audio else ("llm",)):
            chains.append((kind, f"pipeline.{kind}", getattr(spec.pipeline, kind, None) or []))
    out = []
    for kind, path, chain in chains:
        for i, options in enumerate(chain):
            provider = registry.providers.get((kind, options.provider))
            env = provider.api_key_env if provider is not None else None
            if env is None or getattr(options, "api_key", None) is not None or environ.get(env):
                continue
            where = f"{path}[{i}]" if len(chain) > 1 else path
            out.append(f"{where} ({options.provider}) has no API key: set {env} or api_key:")
    return out
