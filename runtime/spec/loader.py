"""YAML files -> validated specs, or compiler-style errors at ``file:line:col``.

Every file in a folder is read in one pass and every problem is reported, not
just the first. The loader never raises for bad input: a user mistake is data
(``SpecError``), not a traceback.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

from pydantic import BaseModel, ValidationError

from ..core.filesystem import read_regular
from .errors import SpecError, format_key_path
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
MAX_NODES = 20_000  # after alias expansion: stops "billion laughs" documents
MAX_DEPTH = 64
_TOO_DEEP = f"nesting is too deep (more than {MAX_DEPTH} levels are not allowed)"
MAX_FLOW_BRACKETS = 200  # unclosed [ or { before parsing; loose, since brackets in strings count too
_BRACKETS = re.compile(r"[\[\]{}]")
_LONG_NUMBER = re.compile(r"[0-9]{%d,}" % (sys.get_int_max_str_digits() + 1))  # longer: int() refuses it
SPEC_SUFFIXES = (".yaml", ".yml")
EMPTY_FOLDER = "no spec files"
_CORE_TAGS = {
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "omap")
}
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_AGENT_NAME = re.compile(AGENT_NAME_PATTERN)
AGENT_NAME_RULE = "1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"

Loc = tuple[int, int]  # 1-based line, column
KeyPath = tuple[Union[str, int], ...]


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
        return self._finish(path, walker.raw, spec, walker)

    def document(self, path: Path, what: str = "a spec", starts: str = "apiVersion: voice-runtime/v1"
                 ) -> tuple[Any, _Walker] | list[SpecError]:
        """A YAML mapping file as plain data, with the position of every key and
        value (the walker), or its errors. ``what``/``starts`` word the errors."""
        file = str(path)
        raw = read_regular(path, MAX_SPEC_BYTES)
        if isinstance(raw, str):
            return [SpecError(file, message=raw)]
        text = _decode(file, raw)
        if isinstance(text, SpecError):
            return [text]
        if not text.strip():
            return [SpecError(file, message=f"file is empty; {what} is a mapping that starts with `{starts}`")]
        deep_at = _flow_too_deep(text, MAX_FLOW_BRACKETS)
        if deep_at is not None:
            # ruamel's scanner is quadratic in flow nesting: refuse before parsing
            return [SpecError(file, *_offset_loc(text, deep_at), message=_TOO_DEEP)]
        doc = _fast_compose(text)
        if doc is None:  # anything the fast path does not handle exactly like ruamel
            doc = self._parse(file, text)
        if isinstance(doc, SpecError):
            return [doc]
        if doc is None:
            return [SpecError(file, message=f"file has only comments; {what} is a mapping that starts with `{starts}`")]
        if not hasattr(doc, "lc") or not isinstance(doc, dict):
            kind = "a list" if isinstance(doc, list) else f"a single value ({type(doc).__name__})"
            return [SpecError(file, message=f"the top level of {what} must be a mapping of keys, not {kind}")]
        walker = _Walker(file, self.env)
        walker.raw = raw
        return walker.convert(doc), walker

    def validate(self, path: Path, model: type[BaseModel], what: str, starts: str
                 ) -> tuple[Any, _Walker] | list[SpecError]:
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
            errors = [_model_error(str(path), data, walker, err, model) for err in exc.errors(include_input=False)]
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
            return _yaml_error(file, exc)
        except YAMLError as exc:
            return SpecError(file, message=f"invalid YAML: {str(exc).splitlines()[0]}")
        except RecursionError:
            return SpecError(file, *_too_deep_at(self._yaml, text), message=_TOO_DEEP)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            digits = _LONG_NUMBER.search(text)
            if digits is not None and "digits" in str(exc):  # Python's int() limit (sys.get_int_max_str_digits)
                return SpecError(file, *_offset_loc(text, digits.start()),
                                 message=f"number too long ({len(digits.group())} digits); write it as a quoted string if it is text")
            # ruamel's constructors raise these for values their tag cannot hold
            # (`!!int x`, `!!bool ""`, an escape past U+10FFFF)
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return SpecError(file, message=f"invalid YAML: a value cannot be read ({detail})")

    def _finish(self, path: Path, raw: bytes, spec: AgentSpecBase, walker: _Walker) -> LoadedSpec | list[SpecError]:
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
            text = body if isinstance(body, str) else _decode(str(target), body)
            if isinstance(body, str) or isinstance(text, SpecError):
                reason = body if isinstance(body, str) else text.message  # type: ignore[union-attr]
                errors.append(walker.error(("instructions_file",), f"{target}: {reason}", value=True))
            else:
                instructions = text  # type: ignore[assignment]
                digest.update(body)  # type: ignore[arg-type]
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

    def _pydantic_error(self, file: str, data: Any, walker: _Walker, err: Any) -> SpecError:
        loc = err["loc"]
        path = _data_path(data, loc)
        kind = err["type"]
        if kind in ("missing", "extra_forbidden"):
            return _model_error(file, data, walker, err, self.model)
        message = err["msg"]
        if kind == "string_pattern_mismatch" and path == ("name",):  # worded as for a file stem
            return walker.error(path, f"{_get(data, path)!r} is not a valid agent name ({AGENT_NAME_RULE})", value=True)
        if kind in ("union_tag_invalid", "union_tag_not_found", "literal_error") and _provider_kind(path, loc):
            pkind = _provider_kind(path, loc)
            names = [p.name for p in self.plugins.registry.providers_of(pkind)]
            given = _get(data, path + ("provider",)) if kind != "literal_error" else _get(data, path)
            if kind == "union_tag_not_found":
                message = f"`provider` is required; available {pkind} providers: {', '.join(names)}"
                return walker.error(path, message, value=False)
            if kind == "literal_error" and path and path[-1] == "provider":
                path = path[:-1]
            return walker.error(
                path + ("provider",), f"unknown {pkind} provider {given!r}; available: {', '.join(names) or 'none'}", value=True
            )
        return _model_error(file, data, walker, err, self.model)


def _model_error(file: str, data: Any, walker: _Walker, err: Any, model: type[BaseModel]) -> SpecError:
    """One pydantic error at its key or value: a missing key, an unknown key (with
    the closest valid one), or the validator's message."""
    loc = err["loc"]
    path = _data_path(data, loc)
    kind = err["type"]
    if kind == "missing":
        missing = loc[-1]
        return walker.error(path, "required key is missing", value=False, shown=(*path, missing))
    if kind == "extra_forbidden":
        key = path[-1] if path else loc[-1]
        allowed = _allowed_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; valid keys: {', '.join(allowed)}" if allowed else "")
        return walker.error(path, f"unknown key {key!r}{hint}", value=False)
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    # a problem with a whole mapping or list (a missing key) points at its key, like "required key is missing"
    at_value = not isinstance(_get(data, path), (dict, list))
    return walker.error(path, message[0].lower() + message[1:] if message else kind, value=at_value)


class _Walker:
    """ruamel round-trip tree (or the fast path's look-alike) -> plain data, remembering where each key and value is,
    expanding ``${VAR}`` and refusing tags, alias bombs and deep nesting."""

    def __init__(self, file: str, env: typing.Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.key_locs: dict[KeyPath, Loc] = {(): (1, 1)}
        self.value_locs: dict[KeyPath, Loc] = {(): (1, 1)}
        self.expanded: dict[KeyPath, tuple[str, str]] = {}  # path -> (value, "${VAR}" text)
        self.errors: list[SpecError] = []
        self.raw = b""  # the file's bytes (its digest)
        self.fatal = False  # the tree could not be converted at all
        self._nodes = 0

    def error(self, path: KeyPath, message: str, *, value: bool, shown: KeyPath | None = None) -> SpecError:
        locs = self.value_locs if value else self.key_locs
        probe = path
        while probe not in locs and probe:  # keys a plugin added have no position: use the parent
            probe = probe[:-1]
        line, col = locs.get(probe, (1, 1))
        value_text, template = self.expanded.get(path, ("", ""))
        if value_text:  # a message may quote the value: quote the ${VAR} text instead
            message = message.replace(value_text, template)
        return SpecError(self.file, line, col, format_key_path(shown if shown is not None else path), message)

    def convert(self, doc: Any) -> Any:
        try:
            return self._node(doc, (), 0)
        except _TooBig as exc:
            self.errors = [SpecError(self.file, *exc.loc, message=exc.message)]
            self.fatal = True
            return None

    def _node(self, node: Any, path: KeyPath, depth: int) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooBig(self.value_locs.get(path, (1, 1)), f"the document expands to more than {MAX_NODES} values (repeated aliases?)")
        if depth > MAX_DEPTH:
            raise _TooBig(self.value_locs.get(path, (1, 1)), _TOO_DEEP)
        tag = getattr(getattr(node, "tag", None), "value", None)
        if tag is not None and tag not in _CORE_TAGS:
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            self.errors.append(self.error(path, f"YAML tag {shown!r} is not allowed: specs hold plain data only", value=True))
            return None
        if isinstance(node, dict):
            out: dict[Any, Any] = {}
            lc = node.lc
            for key, value in node.items():
                key = _scalar(key)
                child = (*path, key)
                try:
                    self.key_locs[child] = _pos(lc.key(key))
                    self.value_locs[child] = _pos(lc.value(key))
                except (KeyError, TypeError):  # merged keys (<<) have no position of their own
                    self.key_locs[child] = self.value_locs[child] = self.value_locs.get(path, (1, 1))
                out[key] = self._node(value, child, depth + 1)
            return out
        if isinstance(node, list):
            items = []
            for index, value in enumerate(node):
                child = (*path, index)
                try:
                    self.key_locs[child] = self.value_locs[child] = _pos(node.lc.item(index))
                except (KeyError, TypeError, AttributeError):
                    self.key_locs[child] = self.value_locs[child] = self.value_locs.get(path, (1, 1))
                items.append(self._node(value, child, depth + 1))
            return items
        if hasattr(node, "value") and tag is not None:  # TaggedScalar with a core tag (!!str)
            node = node.value
        if isinstance(node, (bytes, bytearray)):  # pydantic would take the bytes of !!binary as text
            self.errors.append(self.error(path, "YAML tag '!!binary' is not allowed: specs hold plain data only", value=True))
            return None
        node = _scalar(node)
        if isinstance(node, str) and "$" in node:
            return self._expand(node, path)
        return node

    def _expand(self, text: str, path: KeyPath) -> str:
        used = False

        def sub(match: re.Match[str]) -> str:
            nonlocal used
            if match.group(0) == "$$":  # "$$" is a literal dollar sign
                return "$"
            used = True
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                self.errors.append(
                    self.error(path, f"environment variable {name} is not set (use ${{{name}:-default}} to give a default)", value=True)
                )
                return ""
            return value

        result = _VAR.sub(sub, text)
        if used:
            self.expanded[path] = (result, text)
        return result


# -- fast path ----------------------------------------------------------------
#
# ruamel's round-trip parser is pure Python (~2.5 ms for a typical spec), and it is
# the reference: its YAML 1.2 reading, positions and error messages are what users
# see. libyaml reads the same text ~50x faster. For the plain documents almost every
# spec is, libyaml's events are turned into a tree that the walker sees exactly as
# it would see ruamel's; anything else (errors, tags, anchors, directives, duplicate
# or non-string keys, absent values, uncommon number forms, timestamps, limits) goes
# to ruamel, so behaviour and messages stay the same.


class _Lines:
    """The part of ruamel's ``.lc`` the walker uses: 0-based (line, col) marks."""

    __slots__ = ("keys", "values")

    def __init__(self) -> None:
        self.keys: dict[Any, Loc] = {}
        self.values: dict[Any, Loc] = {}

    def key(self, key: Any) -> Loc:
        return self.keys[key]

    def value(self, key: Any) -> Loc:
        return self.values[key]

    def item(self, index: int) -> Loc:
        return self.values[index]


class _Map(dict):  # type: ignore[type-arg]
    __slots__ = ("lc",)


class _Seq(list):  # type: ignore[type-arg]
    __slots__ = ("lc",)


_BAIL = object()
# number forms whose value is plain int()/float() of the text under ruamel's YAML 1.2
# rules; others (0x, 0o, leading zeros, _, exponents, .inf) are left to ruamel
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_PLAIN_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]+\Z")
# a block scalar header as ruamel reads it; libyaml also takes "|#comment"
_BLOCK_HEADER = re.compile(r"[|>](?:[1-9][+-]?|[+-][1-9]?)?(?:[ \r\n]|\Z)")
_SPACES_LINE = re.compile(r"\n[ ]+\r?\n")
# libyaml and ruamel may count these differently as line breaks or tokens
_UNUSUAL_CHARS = ("\t", "\x85", "\u2028", "\u2029", "\ufeff")
_fast_parts: Any = None


def _fast_setup() -> Any:
    """(libyaml parse, event classes, ruamel's YAML 1.2 implicit resolvers), or False
    when PyYAML was built without libyaml (pure-Python PyYAML would not be faster)."""
    global _fast_parts
    if _fast_parts is None:
        try:
            import yaml
            from ruamel.yaml.resolver import Resolver  # BaseResolver + the YAML 1.2 implicit rules

            if not yaml.__with_libyaml__:
                raise ImportError("PyYAML without libyaml")
        except ImportError:
            _fast_parts = False
        else:
            _fast_parts = (
                yaml.CSafeLoader,
                yaml.ScalarEvent,
                yaml.MappingStartEvent,
                yaml.SequenceStartEvent,
                (yaml.MappingEndEvent, yaml.SequenceEndEvent),
                yaml.DocumentStartEvent,
                Resolver.yaml_implicit_resolvers,
            )
    return _fast_parts


def _fast_scalar(value: str, plain: bool, resolvers: dict[Any, list[Any]]) -> Any:
    """The plain Python value ruamel's round-trip loader (then ``_scalar``) gives."""
    if not plain:  # quoted and block scalars are strings
        return value
    if not value:  # an absent value: ruamel marks it at the next token, libyaml does not
        return _BAIL
    for tag, regexp in resolvers.get(value[0], ()):  # ruamel's resolve(), YAML 1.2 rules
        if regexp.match(value):
            break
    else:
        return value
    if tag == "tag:yaml.org,2002:str":
        return value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int" and _PLAIN_INT.match(value):
        return int(value)
    if tag == "tag:yaml.org,2002:float" and _PLAIN_FLOAT.match(value):
        return float(value)
    return _BAIL


def _fast_compose(text: str) -> _Map | None:
    """The document as a tree the walker reads like ruamel's, or None: use ruamel."""
    parts = _fast_setup()
    if not parts or any(ch in text for ch in _UNUSUAL_CHARS):
        return None
    loader_cls, scalar_ev, map_ev, seq_ev, end_evs, doc_ev, resolvers = parts
    loader = loader_cls(text)
    root: _Map | None = None
    # one frame per open collection: [container, pending key (or _BAIL), key mark]
    stack: list[list[Any]] = []
    nodes = documents = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            kind = type(event)
            if kind is scalar_ev:
                node: Any = _fast_scalar(event.value, event.implicit[0], resolvers) if event.tag is None else _BAIL
                if event.style in ("|", ">") and (
                    not _BLOCK_HEADER.match(text, event.start_mark.index)
                    # ruamel and libyaml disagree on indentation after a line of spaces
                    or _SPACES_LINE.search(text, event.start_mark.index, event.end_mark.index)
                ):
                    return None
            elif kind is map_ev or kind is seq_ev:
                node = _Map() if kind is map_ev else _Seq()
                node.lc = _Lines()
                if event.tag is not None:
                    return None
            elif kind in end_evs:
                stack.pop()
                continue
            elif kind is doc_ev:
                documents += 1
                if documents > 1 or event.version or event.tags:
                    return None
                continue
            elif kind.__name__ in ("StreamStartEvent", "StreamEndEvent", "DocumentEndEvent"):
                continue
            else:  # an alias
                return None
            nodes += 1
            if node is _BAIL or event.anchor is not None or nodes > MAX_NODES or len(stack) > MAX_DEPTH:
                return None
            mark = (event.start_mark.line, event.start_mark.column)
            if not stack:
                if not isinstance(node, _Map):
                    return None
                root = node
            else:
                frame = stack[-1]
                parent = frame[0]
                if type(parent) is _Seq:
                    parent.lc.values[len(parent)] = mark
                    parent.append(node)
                elif frame[1] is _BAIL:  # a key: only plain strings, each once
                    if type(node) is not str or event.style not in ("", "'", '"') or node in parent:
                        return None
                    frame[1], frame[2] = node, mark
                else:
                    key = frame[1]
                    parent.lc.keys[key] = frame[2]
                    parent.lc.values[key] = mark
                    parent[key] = node
                    frame[1] = _BAIL
            if type(node) is _Map or type(node) is _Seq:
                stack.append([node, _BAIL, None])
    except Exception:  # libyaml refused it (or anything unforeseen): ruamel decides and words the error
        return None
    finally:
        loader.dispose()
    return root


class _TooBig(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        self.loc, self.message = loc, message


def _flow_too_deep(text: str, limit: int) -> int | None:
    """Offset of the bracket that opens level MAX_DEPTH + 1 of a run of flow nesting
    deeper than ``limit``, or None."""
    if text.count("[") + text.count("{") <= limit:
        return None
    depth, over = 0, 0
    for match in _BRACKETS.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth == MAX_DEPTH + 1:
                over = match.start()
            if depth > limit:
                return over
        elif depth:
            depth -= 1
    return None


def _offset_loc(text: str, offset: int) -> Loc:
    line_start = text.rfind("\n", 0, offset) + 1
    return (text.count("\n", 0, offset) + 1, offset - line_start + 1)


def _too_deep_at(yaml: Any, text: str) -> Loc:
    """Where nesting first goes past MAX_DEPTH, found from parser events (which,
    unlike composing, does not recurse)."""
    from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent

    depth = 0
    try:
        for event in yaml.parse(text):
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH + 1:  # the root mapping is level 0
                    return (event.start_mark.line + 1, event.start_mark.column + 1)
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
    except Exception:
        pass
    return (1, 1)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _pos(lc: Any) -> Loc:
    return (lc[0] + 1, lc[1] + 1)


def _scalar(value: Any) -> Any:
    """ruamel's scalar subclasses -> plain Python values (pydantic and json want those)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, bool) or type(value).__name__ == "ScalarBoolean":
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def _decode(file: str, raw: bytes) -> str | SpecError:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        return SpecError(file, line, col, message=f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8")


def _yaml_error(file: str, exc: Any) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    if type(exc).__name__ == "DuplicateKeyError":
        # ruamel's message quotes both values; a value may be a secret, so rebuild it
        key = re.search(r'found duplicate key "(.*?)"', problem)
        first = exc.context_mark.line + 1 if exc.context_mark is not None else "?"
        name = key.group(1) if key else "?"
        return SpecError(file, line, col, message=f"duplicate key {name!r} (the mapping starting at line {first} already has it)")
    if "'\\t'" in problem:
        problem += " (YAML does not allow tabs for indentation; use spaces)"
    return SpecError(file, line, col, message=f"invalid YAML: {problem}")


def _data_path(data: Any, loc: tuple[Any, ...]) -> KeyPath:
    """pydantic's loc (with union tags and wrapper names) -> the path in the data."""
    path: list[str | int] = []
    current = data
    for part in loc:
        if isinstance(current, dict) and part in current:
            path.append(part)
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
        # else: a union member name, a tag or the index a one-or-many wrapper added
    return tuple(path)


def _get(data: Any, path: KeyPath) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _provider_kind(path: KeyPath, loc: tuple[Any, ...]) -> str:
    names = [p for p in path if isinstance(p, str) and p != "provider"]
    if names and names[-1] in ("stt", "llm", "tts", "vad", "realtime"):
        return names[-1]
    return ""


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys valid at ``loc``, found by walking the model's annotations."""
    candidates: list[Any] = [model]
    for part in loc:
        step: list[Any] = []
        for tp in _expand_types(candidates):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                if isinstance(part, str) and part in tp.model_fields:
                    step.append(tp.model_fields[part].annotation)
                elif isinstance(part, str) and "provider" in tp.model_fields:
                    if part in typing.get_args(tp.model_fields["provider"].annotation):
                        step.append(tp)
            elif typing.get_origin(tp) is list and isinstance(part, int):
                step.extend(typing.get_args(tp)[:1])
            elif typing.get_origin(tp) is dict and isinstance(part, str):
                step.extend(typing.get_args(tp)[1:2])
        if step:
            candidates = step
    keys: set[str] = set()
    for tp in _expand_types(candidates):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            keys.update(tp.model_fields)
    return sorted(keys)


def _expand_types(types: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = list(types)
    while stack:
        tp = stack.pop()
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            stack.append(typing.get_args(tp)[0])
        elif origin is Union or type(tp).__name__ == "UnionType":
            stack.extend(typing.get_args(tp))
        else:
            out.append(tp)
    return out
