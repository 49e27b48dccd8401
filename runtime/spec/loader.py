"""YAML files -> validated specs, or compiler-style errors at ``file:line:col``.

Every file in a folder is read in one pass and every problem is reported, not
just the first. The loader never raises for bad input: a user mistake is data
(``SpecError``), not a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ValidationError

from ..core.filesystem import read_regular
from .errors import KeyPath as KeyPath
from .errors import Loc as Loc
from .errors import SpecError, format_key_path
from .validation_errors import data_path, model_error, provider_kind, value_at
from .yaml_fast import fast_compose
from .yaml_tree import TOO_DEEP, Walker, decode, flow_too_deep, offset_loc, too_deep_at, yaml_error
from .models import AGENT_NAME_PATTERN, AgentSpecBase, spec_model

if TYPE_CHECKING:
    from .models import RegistryView


class Plugins(Protocol):
    """What the loader needs of ``plugins.manager.Plugins`` (plugins sit above spec:
    the manager is handed down, never imported): the registry, and two hooks called
    on every plugin (``voice_runtime_adjust_spec_data``, ``voice_runtime_check_spec``)."""

    @property
    def registry(self) -> RegistryView: ...

    def describe(self, name: str) -> str: ...

    def call_each(self, hook_name: str, **kwargs: Any) -> tuple[list[tuple[str, Any]], list[str]]: ...

MAX_SPEC_BYTES = 1024 * 1024  # a spec is a page of YAML; this stops 10 MB files early
MAX_INSTRUCTIONS_BYTES = 256 * 1024
MAX_FLOW_BRACKETS = 200  # unclosed [ or { before parsing; loose, since brackets in strings count too
_LONG_NUMBER = re.compile(r"[0-9]{%d,}" % (sys.get_int_max_str_digits() + 1))  # longer: int() refuses it
SPEC_SUFFIXES = (".yaml", ".yml")
EMPTY_FOLDER = "no spec files"
_AGENT_NAME = re.compile(AGENT_NAME_PATTERN)
AGENT_NAME_RULE = "1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"



@dataclass(frozen=True)
class LoadedSpec:
    """An accepted spec: the model plus what the runtime needs besides it."""

    path: Path
    name: str
    spec: AgentSpecBase
    instructions: str
    digest: str  # sha256 of the spec bytes and its instructions file
    # key path -> the "${VAR}" text the value came from; shown instead of the value
    templates: dict[str, str] = field(default_factory=dict, compare=False)
    # key path -> (line, column) of each key in the file, for errors found after loading
    key_locs: dict[KeyPath, Loc] = field(default_factory=dict, compare=False, repr=False)

    def error_at(self, key_path: KeyPath, message: str) -> SpecError:
        line, col = self.key_locs.get(key_path, (1, 1))
        return SpecError(str(self.path), line, col, format_key_path(key_path), message)


@dataclass
class FolderResult:
    specs: list[LoadedSpec] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def valid_agent_name(name: str) -> bool:
    """The one rule for an agent's name, from `name:` or from the file stem. The whole
    string must match: with re.match, `$` also matches before a final newline."""
    return _AGENT_NAME.fullmatch(name) is not None


def discover(folder: Path) -> list[Path] | SpecError:
    """The spec files of a folder, sorted. Hidden entries (``..data`` of a Kubernetes
    ConfigMap, editor swap files) are skipped; symlinks to files are followed."""
    if not folder.exists():
        return SpecError(str(folder), message="no such directory")
    if not folder.is_dir():
        return SpecError(str(folder), message="not a directory (give the folder that holds the *.yaml specs)")
    try:
        # anything that exists under a spec's name is a spec: a FIFO or a directory named
        # x.yaml is reported by the loader rather than skipped in silence
        # every entry listed is there (a broken symlink too: the loader says so, instead
        # of the spec vanishing in silence); no stat per entry, which 1,000 specs felt
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries
                           if not e.name.startswith(".") and os.path.splitext(e.name)[1] in SPEC_SUFFIXES)
        paths = [folder / name for name in names]
    except OSError as exc:
        return SpecError(str(folder), message=f"cannot read directory: {exc.strerror or exc}")
    if not paths:
        return SpecError(str(folder), message=f"{EMPTY_FOLDER} (*.yaml, *.yml) in this directory")
    return paths


def load_folder(folder: Path, plugins: Plugins, env: typing.Mapping[str, str] | None = None) -> FolderResult:
    """Load and validate every spec in ``folder``; names must be unique across it."""
    result = FolderResult()
    paths = discover(folder)
    if isinstance(paths, SpecError):
        result.errors.append(paths)
        return result
    loader = SpecLoader(plugins, env)
    by_name: dict[str, list[LoadedSpec]] = {}
    for path in paths:
        loaded = loader.load(path)
        if isinstance(loaded, list):
            result.errors.extend(loaded)
        else:
            by_name.setdefault(loaded.name, []).append(loaded)
    for name, group in by_name.items():
        if len(group) == 1:
            result.specs.append(group[0])
            continue
        for spec in group:  # a duplicate is reported in every file that has it
            others = ", ".join(str(o.path) for o in group if o is not spec)
            result.errors.append(loader.error_at(spec.path, ("name",), f"agent name {name!r} is also used by {others}"))
    result.errors.extend(loaded.error_at(where, message) for loaded, where, message in handoff_problems(result.specs))
    result.errors.sort()
    return result


def handoff_problems(specs: list[LoadedSpec]) -> list[tuple[LoadedSpec, KeyPath, str]]:
    """Handoffs that cannot work: an unknown target, or the agent itself. Cycles are
    fine (back to the front desk), and so is any mode: livekit 1.8.9 hands a session
    from a pipeline to a realtime model and back."""
    by_name = {s.name: s for s in specs}
    out: list[tuple[LoadedSpec, KeyPath, str]] = []
    for loaded in specs:
        for i, handoff in enumerate(loaded.spec.handoffs):
            where: KeyPath = ("handoffs", i, "agent")
            if handoff.agent == loaded.name:
                out.append((loaded, where, "an agent cannot hand off to itself"))
            elif handoff.agent not in by_name:
                names = ", ".join(sorted(n for n in by_name if n != loaded.name)) or "none"
                out.append((loaded, where, f"no valid agent named {handoff.agent!r} in this folder; available: {names}"))
    return out


class SpecLoader:
    """Loads single files against one plugin registry. Reuse it for many files."""

    def __init__(self, plugins: Plugins, env: typing.Mapping[str, str] | None = None) -> None:
        self.plugins = plugins
        self.env = os.environ if env is None else env
        self.model = spec_model(plugins.registry)
        self._yaml_rt: Any = None  # built on first use: most folders never need it
        self._key_locs: dict[Path, dict[KeyPath, Loc]] = {}

    # -- public -------------------------------------------------------------

    def load(self, path: Path) -> LoadedSpec | list[SpecError]:
        file = str(path)
        read = self.document(path)
        if isinstance(read, list):
            return read
        data, walker = read
        self._key_locs[path] = walker.key_locs
        if walker.fatal:
            return walker.errors

        failures = self.plugins.call_each("voice_runtime_adjust_spec_data", data=data, path=path)[1]
        if failures:
            return [SpecError(file, message=m) for m in failures]

        try:
            spec = self.model.model_validate(data, context={"tools": set(self.plugins.registry.tools)})
        except ValidationError as exc:
            errors = [self._pydantic_error(file, data, walker, err) for err in exc.errors(include_input=False)]
            # a value already reported (unset ${VAR}, bad tag) is not reported twice
            seen = {e.key_path for e in walker.errors}
            return walker.errors + [e for e in errors if e.key_path not in seen]
        if walker.errors:
            return walker.errors
        return self._finish(path, walker.raw, spec, walker, data)

    def document(self, path: Path, what: str = "a spec", starts: str = "apiVersion: voice-runtime/v1"
                 ) -> tuple[Any, Walker] | list[SpecError]:
        """A YAML mapping file as plain data, with the position of every key and
        value (the walker), or its errors. ``what``/``starts`` word the errors."""
        file = str(path)
        raw = read_regular(path, MAX_SPEC_BYTES)
        if isinstance(raw, str):
            return [SpecError(file, message=raw)]
        text = decode(file, raw)
        if isinstance(text, SpecError):
            return [text]
        if not text.strip():
            return [SpecError(file, message=f"file is empty; {what} is a mapping that starts with `{starts}`")]
        deep_at = flow_too_deep(text, MAX_FLOW_BRACKETS)
        if deep_at is not None:
            # ruamel's scanner is quadratic in flow nesting: refuse before parsing
            return [SpecError(file, *offset_loc(text, deep_at), message=TOO_DEEP)]
        doc = fast_compose(text)
        if doc is None:  # anything the fast path does not handle exactly like ruamel
            doc = self._parse(file, text)
        if isinstance(doc, SpecError):
            return [doc]
        if doc is None:
            return [SpecError(file, message=f"file has only comments; {what} is a mapping that starts with `{starts}`")]
        if not hasattr(doc, "lc") or not isinstance(doc, dict):
            kind = "a list" if isinstance(doc, list) else f"a single value ({type(doc).__name__})"
            return [SpecError(file, message=f"the top level of {what} must be a mapping of keys, not {kind}")]
        walker = Walker(file, self.env)
        walker.raw = raw
        return walker.convert(doc), walker

    def validate(self, path: Path, model: type[BaseModel], what: str, starts: str
                 ) -> tuple[Any, Walker] | list[SpecError]:
        """Any other YAML file of ours (a conversation test) against its pydantic
        model, with the spec's `file:line:col` errors."""
        read = self.document(path, what, starts)
        if isinstance(read, list):
            return read
        data, walker = read
        if walker.fatal:
            return walker.errors
        try:
            instance = model.model_validate(data)
        except ValidationError as exc:
            seen = {e.key_path for e in walker.errors}
            errors = [model_error(str(path), data, walker, err, model) for err in exc.errors(include_input=False)]
            return walker.errors + [e for e in errors if e.key_path not in seen]
        return (instance, walker) if not walker.errors else walker.errors

    def error_at(self, path: Path, key_path: KeyPath, message: str) -> SpecError:
        line, col = self._key_locs.get(path, {}).get(key_path, (1, 1))
        return SpecError(str(path), line, col, format_key_path(key_path), message)

    # -- steps --------------------------------------------------------------

    @property
    def _yaml(self) -> Any:
        if self._yaml_rt is None:
            from ruamel.yaml import YAML

            self._yaml_rt = YAML(typ="rt", pure=True)
            self._yaml_rt.allow_duplicate_keys = False
        return self._yaml_rt

    def _parse(self, file: str, text: str) -> Any:
        """The reference parser: every file the fast path passes on, and every error."""
        from ruamel.yaml.error import MarkedYAMLError, YAMLError

        try:
            return self._yaml.load(text)
        except MarkedYAMLError as exc:
            return yaml_error(file, exc)
        except YAMLError as exc:
            return SpecError(file, message=f"invalid YAML: {str(exc).splitlines()[0]}")
        except RecursionError:
            return SpecError(file, *too_deep_at(self._yaml, text), message=TOO_DEEP)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            digits = _LONG_NUMBER.search(text)
            if digits is not None and "digits" in str(exc):  # Python's int() limit (sys.get_int_max_str_digits)
                return SpecError(file, *offset_loc(text, digits.start()),
                                 message=f"number too long ({len(digits.group())} digits); write it as a quoted string if it is text")
            # ruamel's constructors raise these for values their tag cannot hold
            # (`!!int x`, `!!bool ""`, an escape past U+10FFFF)
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return SpecError(file, message=f"invalid YAML: a value cannot be read ({detail})")

    def _finish(self, path: Path, raw: bytes, spec: AgentSpecBase, walker: Walker, data: Any = None
                ) -> LoadedSpec | list[SpecError]:
        file = str(path)
        errors: list[SpecError] = []
        name = spec.name or path.stem
        if spec.name is None and not valid_agent_name(name):
            errors.append(
                SpecError(file, message=f"file name {path.stem!r} is not a valid agent name ({AGENT_NAME_RULE}); "
                                        "rename the file or set `name:`")
            )
        digest = hashlib.sha256(raw)
        instructions = spec.instructions or ""
        if spec.instructions_file:
            target = (path.parent / spec.instructions_file).resolve()
            body = read_regular(target, MAX_INSTRUCTIONS_BYTES)
            text = body if isinstance(body, str) else decode(str(target), body)
            if isinstance(body, str) or isinstance(text, SpecError):
                reason = body if isinstance(body, str) else text.message  # type: ignore[union-attr]
                errors.append(walker.error(("instructions_file",), f"{target}: {reason}", value=True))
            else:
                instructions = text  # type: ignore[assignment]
                digest.update(body)  # type: ignore[arg-type]
        from .turn_taking import sound_file_problems

        for key_path, message in sound_file_problems(getattr(spec, "background_audio", None), path.parent):
            errors.append(walker.error(key_path, message, value=True))
        from .call_context import check_uses

        # every ${call.NAME}: declared, and where a call's values are substituted
        for key_path, message in check_uses(data if data is not None else {}, spec.context,
                                            instructions if spec.instructions_file else None):
            errors.append(walker.error(key_path, message, value=True))
        from . import mcp_context

        for key_path, message in mcp_context.check(spec):  # the servers it names exist
            errors.append(walker.error(key_path, message, value=True))
        from .reports_file import literal_secrets

        errors.extend(literal_secrets(getattr(spec, "reports", None) or [], walker))
        for problem in self._plugin_problems(spec, path):
            errors.append(walker.error(problem[0], problem[1], value=False) if problem[0] else SpecError(file, message=problem[1]))
        if errors:
            return errors
        templates = {format_key_path(key): template for key, (_, template) in walker.expanded.items()}
        return LoadedSpec(path, name, spec, instructions, digest.hexdigest(), templates, walker.key_locs)

    def _plugin_problems(self, spec: AgentSpecBase, path: Path) -> list[tuple[KeyPath, str]]:
        results, failures = self.plugins.call_each("voice_runtime_check_spec", spec=spec, path=path)
        out: list[tuple[KeyPath, str]] = [((), m) for m in failures]
        for owner, problems in results:
            if problems is None:
                continue
            bad = isinstance(problems, (str, bytes)) or not isinstance(problems, (list, tuple))
            for problem in [] if bad else problems:
                if isinstance(problem, tuple):
                    if len(problem) != 2 or not isinstance(problem[0], str):
                        bad = True
                        continue
                    key, message = problem
                    out.append((tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", key) if p), str(message)))
                else:
                    out.append(((), str(problem)))
            if bad:  # the spec is not accepted on a check that could not run
                out.append(((), f"{self.plugins.describe(owner)}: voice_runtime_check_spec returned "
                                f"{type(problems).__name__} {_short(problems)}; expected None or a list of problems "
                                "(messages or (key path, message) pairs)"))
        return out

    def _pydantic_error(self, file: str, data: Any, walker: Walker, err: Any) -> SpecError:
        loc = err["loc"]
        path = data_path(data, loc)
        kind = err["type"]
        if kind in ("missing", "extra_forbidden"):
            return model_error(file, data, walker, err, self.model)
        message = err["msg"]
        if kind == "string_pattern_mismatch" and path == ("name",):  # worded as for a file stem
            return walker.error(path, f"{value_at(data, path)!r} is not a valid agent name ({AGENT_NAME_RULE})", value=True)
        if kind in ("union_tag_invalid", "union_tag_not_found", "literal_error") and provider_kind(path, loc):
            pkind = provider_kind(path, loc)
            names = [p.name for p in self.plugins.registry.providers_of(pkind)]
            given = value_at(data, path + ("provider",)) if kind != "literal_error" else value_at(data, path)
            if kind == "union_tag_not_found":
                message = f"`provider` is required; available {pkind} providers: {', '.join(names)}"
                return walker.error(path, message, value=False)
            if kind == "literal_error" and path and path[-1] == "provider":
                path = path[:-1]
            return walker.error(
                path + ("provider",), f"unknown {pkind} provider {given!r}; available: {', '.join(names) or 'none'}", value=True
            )
        return model_error(file, data, walker, err, self.model)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


