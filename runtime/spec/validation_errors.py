"""pydantic's validation errors mapped back to the spec's text: each error's ``loc``
becomes the key or value it is about (``data_path``), at its ``file:line:col``, with the
closest valid key for an unknown one (``model_error``)."""

from __future__ import annotations

import difflib
import typing
from typing import TYPE_CHECKING, Any, Union

from pydantic import BaseModel

from .errors import KeyPath, SpecError

if TYPE_CHECKING:
    from .yaml_tree import Walker


def model_error(file: str, data: Any, walker: Walker, err: Any, model: type[BaseModel]) -> SpecError:
    """One pydantic error at its key or value: a missing key, an unknown key (with
    the closest valid one), or the validator's message."""
    loc = err["loc"]
    path = data_path(data, loc)
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
    at_value = not isinstance(value_at(data, path), (dict, list))
    return walker.error(path, message[0].lower() + message[1:] if message else kind, value=at_value)


def data_path(data: Any, loc: tuple[Any, ...]) -> KeyPath:
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


def value_at(data: Any, path: KeyPath) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def provider_kind(path: KeyPath, loc: tuple[Any, ...]) -> str:
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
