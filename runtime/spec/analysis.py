"""``analysis:`` in a spec: after a call, a model fills a JSON Schema from the
transcript (the session runs it: ``session/analysis.py``) and the answer goes into
the call's report.

The schema is the user's, so it is bounded when the spec is read: at most
``MAX_SCHEMA_CHARS`` of JSON, ``MAX_DEPTH`` levels of nesting, a valid JSON Schema
(draft 2020-12, checked with ``jsonschema``) whose top level is an object. A model's
answer is validated against it before it reaches the report.

The answer is the model's, the schema the user's, so validation must neither hang nor
reach out: ``jsonschema``'s own ``pattern`` runs ``re.search`` (``(a+)+$`` against 40
``a`` and a ``!`` never ended, on the event loop), so patterns run through
``core.user_regex`` with a time bound, and are refused when read as claims patterns are;
``patternProperties`` (whose patterns ``jsonschema`` also runs in ``additionalProperties``)
is refused. ``$ref`` is local only (``#/...``, resolving inside the schema, never
recursive: ``x -> x`` raised RecursionError), and the validator is given a registry
that never fetches (``jsonschema``'s default fetched ``http://`` refs)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from ..core import user_regex

MAX_SCHEMA_CHARS = 16 * 1024
MAX_DEPTH = 12
MAX_INSTRUCTIONS_CHARS = 8000


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:  # stop walking: the answer is already "too deep"
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def check_schema(schema: Any) -> dict[str, Any]:
    """``schema`` as a bounded, valid JSON Schema for an object, or a
    PydanticCustomError saying what is wrong (and where inside it)."""
    import jsonschema

    if not isinstance(schema, dict):
        raise PydanticCustomError("analysis_schema", "must be a JSON Schema (a mapping), e.g. "
                                  "{type: object, properties: {resolved: {type: boolean}}}")
    size = len(json.dumps(schema))
    if size > MAX_SCHEMA_CHARS:
        raise PydanticCustomError("analysis_schema", "is {size} characters of JSON; at most {limit}",
                                  {"size": size, "limit": MAX_SCHEMA_CHARS})
    if _depth(schema) > MAX_DEPTH:
        raise PydanticCustomError("analysis_schema", "is nested more than {limit} levels deep", {"limit": MAX_DEPTH})
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        raise PydanticCustomError("analysis_schema", "is not a valid JSON Schema at {where}: {why}",
                                  {"where": where, "why": exc.message[:300]}) from None
    if schema.get("type") != "object":
        raise PydanticCustomError("analysis_schema", "must describe an object (`type: object` at its top level): "
                                  "the model answers with one JSON object")
    problems = list(_problems(schema))
    if problems:  # at the key inside the schema, so the loader shows its file:line:col
        raise ValidationError.from_exception_data("analysis_schema", [
            InitErrorDetails(type=PydanticCustomError("analysis_schema", "{why}", {"why": why}), loc=where, input=schema)
            for where, why in problems])
    return schema


SchemaPath = tuple[str | int, ...]
# keywords whose value is a subschema, a list of them, or a mapping of names to them
_ONE = ("not", "if", "then", "else", "contains", "additionalProperties", "propertyNames", "unevaluatedItems",
        "unevaluatedProperties", "items", "additionalItems")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAPS = ("properties", "$defs", "definitions", "dependentSchemas")
# keywords that name or find other schema resources: refs would no longer be local
_REFUSED = {
    "$dynamicRef": "refers by dynamic scope", "$recursiveRef": "refers by dynamic scope",
    "$dynamicAnchor": "names a dynamic scope", "$recursiveAnchor": "names a dynamic scope",
    "$anchor": "names an anchor", "$id": "starts another schema resource",
    "patternProperties": "matches property names with patterns jsonschema runs unbounded (use propertyNames "
                         "with a pattern, or properties)",
}
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _subschemas(schema: Any, path: SchemaPath = ()) -> Iterator[tuple[SchemaPath, dict[str, Any]]]:
    """Every subschema of ``schema`` (itself first) with its path: schema positions
    only, so a ``pattern`` key under ``const`` or ``properties`` is not taken for one."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key in _ONE:
        if isinstance(schema.get(key), dict):
            yield from _subschemas(schema[key], (*path, key))
    for key in _LISTS:
        if isinstance(schema.get(key), list):
            for n, sub in enumerate(schema[key]):
                yield from _subschemas(sub, (*path, key, n))
    for key in _MAPS:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield from _subschemas(sub, (*path, key, name))


def _problems(schema: dict[str, Any]) -> Iterator[tuple[SchemaPath, str]]:
    """What an analysis schema may not hold, each at its path: patterns ``user_regex``
    refuses, keywords that leave the schema, refs that are remote, dangling or recursive."""
    if schema.get("$schema", DRAFT) != DRAFT:
        yield ("$schema",), f"only draft 2020-12 is supported ({DRAFT}, or no $schema)"
    refs: list[tuple[SchemaPath, SchemaPath]] = []  # (where the $ref is, what it points at)
    seen: set[SchemaPath] = set()
    # from the top, then from each ref's target not walked yet: a ref may point at a
    # mapping under a key jsonschema does not know, whose own refs it then follows
    todo: list[tuple[SchemaPath, Any]] = [((), schema)]
    while todo:
        for path, sub in _subschemas(*reversed(todo.pop())):
            if path in seen:
                continue
            seen.add(path)
            for key, why in _REFUSED.items():
                if key in sub and not (key == "$id" and not path):  # the top level may name itself
                    yield (*path, key), f"`{key}` {why}: not supported in an analysis schema"
            if isinstance(sub.get("pattern"), str) and (why := user_regex.problem(sub["pattern"])) is not None:
                yield (*path, "pattern"), why
            ref = sub.get("$ref")
            if ref is None:
                continue
            found = _pointer(schema, ref) if isinstance(ref, str) else None
            if found is None:
                yield (*path, "$ref"), (f"{ref!r} does not resolve inside the schema: only local refs are supported "
                                        "('#/$defs/NAME', a JSON pointer into this schema; never fetched)")
            else:
                refs.append((path, found[0]))
                if found[0] not in seen:
                    todo.append(found)
    for where in _recursive(refs):
        yield (*where, "$ref"), "a recursive $ref (it leads back to itself): not supported in an analysis schema"


def _pointer(schema: dict[str, Any], ref: str) -> tuple[SchemaPath, Any] | None:
    """The path a local ``$ref`` (``#`` or ``#/a/b``, JSON pointer escapes) points at
    and the schema there, if it is one (a mapping or a boolean); else None."""
    if ref != "#" and not ref.startswith("#/"):
        return None
    path: list[str | int] = []
    node: Any = schema
    for token in ref[2:].split("/") if ref != "#" else []:
        part = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            path.append(int(part))
            node = node[int(part)]
        else:
            return None
    return (tuple(path), node) if isinstance(node, (dict, bool)) else None


def _recursive(refs: list[tuple[SchemaPath, SchemaPath]]) -> list[SchemaPath]:
    """The refs through which a chain of refs leads back to a schema it started in:
    following the refs inside a target (all of its subschemas) from each target."""
    within = {target: [r for r in refs if r[0][:len(target)] == target] for _, target in refs}
    state: dict[SchemaPath, str] = {}  # "open" while its refs are followed, "done" after
    found: list[SchemaPath] = []

    def follow(target: SchemaPath) -> None:
        state[target] = "open"
        for where, inner in within[target]:
            if state.get(inner) == "open":
                found.append(where)
            elif inner not in state:
                follow(inner)
        state[target] = "done"

    for _, target in refs:  # depth at most the number of refs: the schema is bounded in size
        if target not in state:
            follow(target)
    return sorted(set(found), key=str)


class Analysis(BaseModel):
    """Post-call analysis: a model fills ``schema`` from the transcript."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: dict[str, Any] = Field(
        alias="schema", description="A JSON Schema (draft 2020-12) for an object: what to extract from the call.")
    instructions: str = Field(
        "Fill the schema from the call's transcript. Use only what was said.", min_length=1,
        max_length=MAX_INSTRUCTIONS_CHARS, description="What to tell the model besides the schema.")
    llm: str | None = Field(
        None, min_length=1, max_length=200,
        description="A model name for the spec's pipeline LLM provider (default: the pipeline's first LLM as is).")
    timeout_s: float = Field(30.0, gt=0, le=300, description="The whole analysis, retries included; then "
                             "the report says it timed out.")

    @field_validator("schema_", mode="before")
    @classmethod
    def _schema(cls, value: Any) -> Any:
        return check_schema(_plain(value))


def _plain(value: Any) -> Any:
    """ruamel's round-trip mappings and sequences as plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _validator(schema: dict[str, Any], deadline: float) -> Any:
    """A draft 2020-12 validator for ``schema`` whose ``pattern`` runs through
    ``user_regex`` (each search at most ``MATCH_TIMEOUT_S``, none after ``deadline``,
    a ``time.monotonic()``) and whose refs are never fetched."""
    import jsonschema
    from jsonschema_specifications import REGISTRY  # the meta-schemas only: no retrieval

    def pattern(validator: Any, text: str, instance: Any, _schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "string"):
            return
        left = min(user_regex.MATCH_TIMEOUT_S, deadline - time.monotonic())
        try:
            if left <= 0:
                raise user_regex.TimedOut(text, 0, len(instance))
            found = user_regex.search(user_regex.compiled(text), instance, timeout=left)
        except user_regex.TimedOut as exc:  # the path is known only to the error: the caller says it
            yield jsonschema.ValidationError(f"pattern {text!r}", cause=exc)
            return
        if found is None:
            yield jsonschema.ValidationError(f"{instance!r} does not match {text!r}")

    bounded = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern})
    return bounded(schema, registry=REGISTRY)


def validate_answer(schema: dict[str, Any], text: str, deadline: float | None = None) -> dict[str, Any]:
    """The model's answer as the object the schema describes, or ValueError saying why
    not (also when validating takes past ``deadline``, a ``time.monotonic()``)."""
    import jsonschema
    import referencing.exceptions

    body = text.strip()
    if body.startswith("```"):  # models wrap JSON in a code fence though told not to
        body = body.strip("`").removeprefix("json").strip()
    try:
        answer = json.loads(body)
    except RecursionError:
        raise ValueError("invalid JSON: nested too deep") from None
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at character {exc.pos}") from None
    until = time.monotonic() + 30.0 if deadline is None else deadline
    try:
        errors = list(_validator(schema, until).iter_errors(answer))
    except (RecursionError, jsonschema.exceptions.SchemaError, referencing.exceptions.Unresolvable) as exc:  # what `check` refuses
        raise ValueError(f"the analysis schema cannot be applied ({type(exc).__name__}); `voice-runtime check` "
                         "says what to change in it") from None
    slow = next((e for e in errors if isinstance(e.cause, user_regex.TimedOut)), None)
    if slow is not None:
        where = "/".join(str(p) for p in slow.absolute_path) or "(top level)"
        raise ValueError(f"schema validation took too long: {slow.message[:300]} at {where}")
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"does not match the schema at {where}: {error.message[:300]}")
    return answer
