"""A YAML tree (ruamel's round-trip one, or the fast path's look-alike) made plain
data, remembering where each key and value is (``Walker``), expanding ``${VAR}`` and
refusing tags, alias bombs and deep nesting; and the limits and errors of reading
YAML at all (``decode``, ``yaml_error``, ``flow_too_deep``)."""

from __future__ import annotations

import re
import typing
from typing import Any

from ..core.terminal import LONE_SURROGATE, as_text
from .errors import KeyPath, Loc, SpecError, format_key_path


MAX_NODES = 20_000  # after alias expansion: stops "billion laughs" documents


MAX_DEPTH = 64


TOO_DEEP = f"nesting is too deep (more than {MAX_DEPTH} levels are not allowed)"


_BRACKETS = re.compile(r"[\[\]{}]")


_CORE_TAGS = {
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "omap")
}


# a lone surrogate is no character: check took one, then chat crashed writing a
# greeting holding it, and a served call's LLM requests would fail on it
_NOT_TEXT = ("holds a lone surrogate (a \\ud800-\\udfff escape, or bytes of an environment variable that are "
             "not UTF-8), which is not a character: write the character itself")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Walker:
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
            raise _TooBig(self.value_locs.get(path, (1, 1)), TOO_DEEP)
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
                if isinstance(key, str) and LONE_SURROGATE.search(key):
                    self.errors.append(self.error(path, "a key " + _NOT_TEXT, value=True))
                    continue
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
        if isinstance(node, str):
            if "$" in node:
                node = self._expand(node, path)
            if LONE_SURROGATE.search(node):
                self.errors.append(self.error(path, _NOT_TEXT, value=True))
                return as_text(node)  # a string still: no second error for a missing value
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
                # a password takes no default (spec/telephony.py refuses one: it would be a live
                # password in git), so its hint must not suggest one
                hint = ("set it in the environment; a password takes no default" if path and path[-1] == "password"
                        else f"use ${{{name}:-default}} to give a default")
                self.errors.append(self.error(path, f"environment variable {name} is not set ({hint})", value=True))
                return ""
            return value

        result = _VAR.sub(sub, text)
        if used:
            self.expanded[path] = (result, text)
        return result


class _TooBig(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        self.loc, self.message = loc, message


def flow_too_deep(text: str, limit: int) -> int | None:
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


def offset_loc(text: str, offset: int) -> Loc:
    line_start = text.rfind("\n", 0, offset) + 1
    return (text.count("\n", 0, offset) + 1, offset - line_start + 1)


def too_deep_at(yaml: Any, text: str) -> Loc:
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


def decode(file: str, raw: bytes) -> str | SpecError:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        return SpecError(file, line, col, message=f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8")


def yaml_error(file: str, exc: Any) -> SpecError:
    from .yaml_words import plain

    if type(exc).__name__ == "DuplicateKeyError":
        # ruamel's message quotes both values; a value may be a secret, so rebuild it
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        key = re.search(r'found duplicate key "(.*?)"', (exc.problem or ""))
        first = exc.context_mark.line + 1 if exc.context_mark is not None else "?"
        name = key.group(1) if key else "?"
        return SpecError(file, line, col, message=f"duplicate key {name!r} (the mapping starting at line {first} already has it)")
    (line, col), message = plain(exc)
    return SpecError(file, line, col, message=f"invalid YAML: {message}")
