"""The fast path of reading a spec: libyaml's events turned into the tree the walker
(``yaml_tree.Walker``) would get from ruamel, for the plain documents almost every
spec is; ``fast_compose`` returns None for anything else, which ruamel then reads."""

from __future__ import annotations

import re
from typing import Any

from .errors import Loc
from .yaml_tree import MAX_DEPTH, MAX_NODES


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


def fast_compose(text: str) -> _Map | None:
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
