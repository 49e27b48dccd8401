"""make_plugin_manager(): built-ins, then installed entry points, then ``plugins/*.py``.

A plugin that fails to import is reported with its path (``file:line:col``) and the
others still load; ``VOICE_RUNTIME_DISABLE_PLUGINS=a,b`` blocks plugins by name.

A plugin file is someone else's code run inside our process. Before it is imported
here its bytes are tried in a child process (``plugin_trial``), bounded by a
timeout: a file that hangs, exits the interpreter or raises any BaseException at
import is reported with its file and line and never imported here, so it cannot
freeze ``serve``, take it down, or end ``check`` with exit code 0. Each file's
bytes are read once (``plugin_files``); the same bytes are tried, imported, and
published for job processes, which import exactly what the parent accepted. A
trial's result and an imported module are kept per content hash: bytes that did
not change are never tried or executed again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from ..core.filesystem import read_regular
from .trial import exec_plugin, exception_summary
from .registry import Registry, build_registry
from ..spec.errors import SpecError

log = logging.getLogger("voice_runtime.plugins")

PROJECT = "voice_runtime"
BUILTINS = ("openai", "deepgram", "cartesia", "silero")
DISABLE_ENV = "VOICE_RUNTIME_DISABLE_PLUGINS"
TIMEOUT_ENV = "VOICE_RUNTIME_PLUGIN_IMPORT_TIMEOUT"
DEFAULT_TIMEOUT = 10.0  # seconds one plugin file may take to import
MAX_PLUGIN_BYTES = 4 * 1024 * 1024
_STARTUP_S = 30.0  # the trial process's own start (python + plugin_trial: ~50 ms on an idle machine)
_GRACE_S = 3.0  # after a file's timeout, for the child's own report of where it hung
PUBLISHED = "plugins.json"  # in serve's state directory: the plugin files jobs import


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
    files: PluginFiles | None = None  # the plugins/*.py bytes this manager was made from
    accepted: dict[Path, bytes] = field(default_factory=dict)  # the file plugins that loaded

    @property
    def problems(self) -> list[str]:
        return [str(e) for e in self.errors] + [str(p) for p in self.registry.problems]

    @cached_property
    def registry(self) -> Registry:
        with plugin_output():
            return build_registry(self.pm)

    def describe(self, name: str) -> str:
        """``plugin 'x' (plugins/x.py)``: how errors name a plugin."""
        source = next((info.source for info in self.loaded if info.name == name), None)
        return f"plugin {name!r}" + (f" ({source})" if source and source != name else "")

    def call_each(self, hook_name: str, **kwargs: Any) -> tuple[list[tuple[str, Any]], list[str]]:
        """Call each implementation of a hook on its own, in pluggy's order: ((plugin,
        result) of those that returned, a sentence for each that raised). Anything a
        hook raises, SystemExit and KeyboardInterrupt included, is the plugin's
        failure: it must never end a command early or with exit code 0."""
        results: list[tuple[str, Any]] = []
        failures: list[str] = []
        with plugin_output():
            for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
                try:
                    results.append((impl.plugin_name, impl.function(**{k: kwargs[k] for k in impl.argnames})))
                except BaseException as exc:  # noqa: BLE001 - a plugin bug, reported, never fatal
                    failures.append(f"{self.describe(impl.plugin_name)}: {hook_name} raised {exception_summary(exc)}")
        return results, failures

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook


def plugin_output() -> contextlib.AbstractContextManager[Any]:
    """While plugin code runs, what it prints goes to stderr: stdout carries only a
    command's own output (`check --format json` is parsed by scripts)."""
    return contextlib.redirect_stdout(sys.stderr)


def notify(plugins: Plugins, hook_name: str, **kwargs: Any) -> None:
    """Call every implementation of a notification hook, each on its own: one
    plugin that raises is logged and the others still hear about the event."""
    for impl in getattr(plugins.pm.hook, hook_name).get_hookimpls():
        try:
            with plugin_output():
                impl.function(**{k: kwargs[k] for k in impl.argnames})
        except Exception:
            log.exception("plugin %s raised in %s", impl.plugin_name, hook_name)


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}




@dataclass(frozen=True)
class PluginFiles:
    """``plugins/*.py`` as read at one moment: each file's bytes, or why it cannot be read."""

    sources: dict[Path, bytes] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)

    @cached_property
    def fingerprint(self) -> tuple[tuple[str, str], ...]:
        """Equal exactly when the folder holds the same bytes under the same names."""
        return tuple(sorted([(str(p), _digest(b)) for p, b in self.sources.items()]
                            + [(e.file, e.message) for e in self.errors]))


def plugin_files(plugins_dir: Path | None) -> PluginFiles:
    """The plugin files of a folder (sorted, ``_*.py`` skipped), read without blocking:
    a FIFO or device named ``x.py`` is an error, never a hang."""
    if plugins_dir is None or not plugins_dir.is_dir():
        return PluginFiles()
    sources: dict[Path, bytes] = {}
    errors: list[SpecError] = []
    for path in sorted(plugins_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        got = read_regular(path, MAX_PLUGIN_BYTES)
        if isinstance(got, str):
            if got != "file not found":  # deleted since the listing
                errors.append(SpecError(str(path), message=f"plugin file {got}"))
            continue
        sources[path] = got
    return PluginFiles(sources, errors)


def make_plugin_manager(
    plugins_dir: Path | None = None,
    *,
    entry_points: bool = True,
    extra: list[object] | None = None,
    files: PluginFiles | None = None,
    trial: bool = True,
) -> Plugins:
    """Build a fresh manager. Never called at import time, so each test gets its own.

    ``files``: the plugin files to load (default: read ``plugins_dir`` now).
    ``trial``: try each file in a child process first (off only for files the
    serve process has already accepted, in its job processes)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    files = files if files is not None else plugin_files(plugins_dir)
    plugins = Plugins(pm, files=files)
    blocked = disabled_names()

    def add(obj: object, info: PluginInfo) -> bool:
        if info.name in blocked:
            plugins.disabled.append(info.name)
            return False
        try:
            pm.register(obj, name=info.name)
        except (ValueError, pluggy.PluginValidationError) as exc:  # name clash, hookimpl not matching its hookspec
            if pm.is_registered(obj):  # pluggy keeps the hookimpls it added before the bad one
                pm.unregister(obj)
            reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            plugins.errors.append(SpecError(info.source, message=f"plugin {info.name!r} not registered: {reason}"))
            return False
        plugins.loaded.append(info)
        return True

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
                with plugin_output():
                    obj = ep.load()
            except Exception as exc:
                plugins.errors.append(SpecError(source, message=f"entry point {ep.name!r} failed to load: {exception_summary(exc)}"))
                continue
            add(obj, PluginInfo(ep.name, "entry point", source))

    plugins.errors.extend(files.errors)
    wanted = {}
    for path, source in files.sources.items():
        if path.stem in blocked:
            plugins.disabled.append(path.stem)
        else:
            wanted[path] = source
    failed = trial_import(wanted) if trial else {}
    for path, source in wanted.items():
        loaded = failed.get(path) or _load_file(path, source)
        if isinstance(loaded, SpecError):
            plugins.errors.append(loaded)
        elif add(loaded, PluginInfo(path.stem, "file", str(path))):
            plugins.accepted[path] = source

    for obj in extra or []:
        add(obj, PluginInfo(getattr(obj, "__name__", repr(obj)), "in-process", repr(obj)))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        plugins.errors.append(SpecError(str(plugins_dir or "."), message=str(exc)))
    return plugins


# -- running a plugin file -----------------------------------------------------------

# path -> (content digest, module): a file whose bytes did not change is not executed
# again (a plugin that starts a thread at import starts it once, not at every reload)
_MODULES: dict[Path, tuple[str, ModuleType]] = {}
_MODULES_LOCK = threading.Lock()


def _digest(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def _load_file(path: Path, source: bytes) -> ModuleType | SpecError:
    digest = _digest(source)
    with _MODULES_LOCK:
        cached = _MODULES.get(path)
        if cached is not None and cached[0] == digest:
            return cached[1]
        with plugin_output():
            loaded = exec_plugin(path, source, interrupt_is_failure=threading.current_thread() is not threading.main_thread())
        if isinstance(loaded, ModuleType):
            _MODULES[path] = (digest, loaded)
        return loaded


# -- the trial ------------------------------------------------------------------------

# (path, content digest) -> what trying those bytes gave (None: they import)
_TRIALS: dict[tuple[Path, str], SpecError | None] = {}


def import_timeout() -> float:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, "") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


def trial_import(files: dict[Path, bytes], timeout: float | None = None) -> dict[Path, SpecError]:
    """Import each file (in order, in one child process) and return the ones that
    fail, with why. Bytes tried before are not tried again. A file that hangs or ends
    the child is reported and the files after it are tried in a new child."""
    timeout = timeout or import_timeout()
    todo = [(p, s) for p, s in files.items() if (p, _digest(s)) not in _TRIALS]
    while todo:
        results, culprit = _trial_run(todo, timeout)
        for path, error in results.items():
            _TRIALS[(path, _digest(files[path]))] = error
        if culprit is None:
            break
        _TRIALS[(culprit[0], _digest(files[culprit[0]]))] = culprit[1]
        todo = [(p, s) for p, s in todo if (p, _digest(s)) not in _TRIALS]
    out = {}
    for path, source in files.items():
        error = _TRIALS.get((path, _digest(source)))
        if error is not None:
            out[path] = error
    return out


def _trial_run(todo: list[tuple[Path, bytes]], timeout: float) -> tuple[dict[Path, SpecError | None], tuple[Path, SpecError] | None]:
    """One child process trying ``todo`` in order: (each finished file's result, the
    file that did not finish and why, or None)."""
    payload = json.dumps({"timeout": timeout, "files": [[str(p), base64.b64encode(s).decode()] for p, s in todo]})
    # a trial leaves no trace: no metric files from a process that never serves
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", f"{__package__}.trial"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env, start_new_session=True,  # its own group: what a plugin starts dies with it
    )
    results: dict[Path, SpecError | None] = {}
    started: int | None = None
    reported: dict[str, Any] | None = None  # the child's own word on why it stops (hang, exit)
    timed_out = False
    try:
        with contextlib.suppress(BrokenPipeError):
            assert proc.stdin is not None
            proc.stdin.write(payload.encode())
            proc.stdin.close()
        assert proc.stdout is not None
        deadline = time.monotonic() + _STARTUP_S
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                if not selector.select(remaining):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        message = json.loads(line)
                    except ValueError:  # not ours (a plugin writing to any descriptor it finds)
                        continue
                    if "start" in message:
                        started = message["start"]
                        deadline = time.monotonic() + timeout + _GRACE_S
                    elif "done" in message:
                        error = message["error"]
                        results[todo[message["done"]][0]] = SpecError(**error) if error else None
                        started = None
                    else:
                        reported = message
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr is not None else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    culprit = (reported or {}).get("file", started)
    if culprit is None and len(results) == len(todo):
        return results, None
    if culprit is None:  # the child ended between files (or never started) and did not say why
        detail = (f"it did not start within {_STARTUP_S:g} s" if timed_out and not results
                  else stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {rc}")
        path = todo[len(results)][0]
        return results, (path, SpecError(str(path), message=f"plugin could not be tried in a child process: {detail}"))
    path = todo[culprit][0]
    line = int((reported or {}).get("line") or 1)
    if timed_out or (reported or {}).get("hang"):
        why = f"plugin did not finish importing within {timeout:g} s"
    elif reported is not None and "exit" in reported:
        why = f"plugin called exit with code {reported['code']} while importing"
    elif rc < 0:
        why = f"plugin killed the process importing it ({_signal_name(-rc)})"
    else:
        why = f"plugin called exit with code {rc} while importing"
    return results, (path, SpecError(str(path), line, 1, message=why))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# -- what job processes import ---------------------------------------------------------


def publish_files(state_dir: Path, plugins: Plugins) -> None:
    """Write the accepted plugin files where job processes read them (atomically)."""
    from ..core.filesystem import write_private_json

    data = {"files": [[str(p), base64.b64encode(s).decode()] for p, s in plugins.accepted.items()]}
    write_private_json(state_dir / PUBLISHED, data)


def published_files(state_dir: Path) -> PluginFiles:
    """In a job process: the plugin files the serve process accepted (none if it
    published none)."""
    try:
        data = json.loads((state_dir / PUBLISHED).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return PluginFiles()
    return PluginFiles({Path(p): base64.b64decode(s) for p, s in data["files"]})
