"""make_plugin_manager(): built-ins, then installed entry points, then ``plugins/*.py``.

A plugin that fails to import is reported with its path (``file:line:col``) and the
others still load; ``VOICE_RUNTIME_DISABLE_PLUGINS=a,b`` blocks plugins by name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .registry import Registry, build_registry
from .spec.errors import SpecError

log = logging.getLogger("voice_runtime.plugins")

PROJECT = "voice_runtime"
BUILTINS = ("openai", "deepgram", "cartesia", "silero")
DISABLE_ENV = "VOICE_RUNTIME_DISABLE_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    origin: str  # "built-in", "entry point", "file"
    source: str  # module name, "dist:entry", or file path


@dataclass
class Plugins:
    """A plugin manager plus where each plugin came from and what failed to load."""

    pm: pluggy.PluginManager
    loaded: list[PluginInfo] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)

    @cached_property
    def registry(self) -> Registry:
        return build_registry(self.pm)

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook


def notify(plugins: Plugins, hook_name: str, **kwargs: Any) -> None:
    """Call every implementation of a notification hook, each on its own: one
    plugin that raises is logged and the others still hear about the event."""
    for impl in getattr(plugins.pm.hook, hook_name).get_hookimpls():
        try:
            impl.function(**{k: kwargs[k] for k in impl.argnames})
        except Exception:
            log.exception("plugin %s raised in %s", impl.plugin_name, hook_name)


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def make_plugin_manager(
    plugins_dir: Path | None = None,
    *,
    entry_points: bool = True,
    extra: list[object] | None = None,
) -> Plugins:
    """Build a fresh manager. Never called at import time, so each test gets its own."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    blocked = disabled_names()

    def add(obj: object, info: PluginInfo) -> None:
        if info.name in blocked:
            plugins.disabled.append(info.name)
            return
        try:
            pm.register(obj, name=info.name)
        except (ValueError, pluggy.PluginValidationError) as exc:  # name clash, hookimpl not matching its hookspec
            if pm.is_registered(obj):  # pluggy keeps the hookimpls it added before the bad one
                pm.unregister(obj)
            reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            plugins.errors.append(SpecError(info.source, message=f"plugin {info.name!r} not registered: {reason}"))
            return
        plugins.loaded.append(info)

    for name in BUILTINS:
        if name in blocked:
            plugins.disabled.append(name)
            continue
        module = importlib.import_module(f"{__package__}.builtin.{name}")
        add(module, PluginInfo(name, "built-in", module.__name__))

    if entry_points:
        for ep in sorted(importlib.metadata.entry_points(group=PROJECT), key=lambda e: e.name):
            if ep.name in blocked:
                plugins.disabled.append(ep.name)
                continue
            source = f"{ep.dist.name if ep.dist else '?'}:{ep.value}"
            try:
                obj = ep.load()
            except Exception as exc:
                plugins.errors.append(SpecError(source, message=f"entry point {ep.name!r} failed to load: {_one_line(exc)}"))
                continue
            add(obj, PluginInfo(ep.name, "entry point", source))

    if plugins_dir is not None and plugins_dir.is_dir():
        for path in sorted(plugins_dir.glob("*.py")):
            if path.name.startswith("_"):
                continue
            if path.stem in blocked:
                plugins.disabled.append(path.stem)
                continue
            loaded = _module_from_path(path)
            if isinstance(loaded, SpecError):
                plugins.errors.append(loaded)
                continue
            add(loaded, PluginInfo(path.stem, "file", str(path)))

    for obj in extra or []:
        add(obj, PluginInfo(getattr(obj, "__name__", repr(obj)), "in-process", repr(obj)))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        plugins.errors.append(SpecError(str(plugins_dir or "."), message=str(exc)))
    return plugins


def _module_from_path(path: Path) -> ModuleType | SpecError:
    """Execute a plugin file as a fresh module (never reusing an old one, so new job
    processes always see the file as it is now). Import errors become a SpecError
    at the line in that file where they happened."""
    name = f"voice_runtime_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    # Registered in sys.modules while it runs: pydantic and dataclasses look their
    # module up there to resolve annotations.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        _restore(name, previous)
        return SpecError(str(path), exc.lineno or 1, exc.offset or 1, message=f"plugin has a syntax error: {exc.msg}")
    except BaseException as exc:  # SystemExit from a plugin is still just a broken plugin
        if isinstance(exc, KeyboardInterrupt):
            raise
        _restore(name, previous)
        line = 1
        for frame in traceback.extract_tb(exc.__traceback__):
            if Path(frame.filename).resolve() == path.resolve():
                line = frame.lineno or 1
        return SpecError(str(path), line, 1, message=f"plugin failed to import: {_one_line(exc)}")
    return module


def _restore(name: str, previous: ModuleType | None) -> None:
    if previous is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = previous


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
