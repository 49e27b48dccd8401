"""``analysis:`` in a spec: after a call, a model fills a JSON Schema from the
transcript (the session runs it: ``session/analysis.py``) and the answer goes into
the call's report.

The schema is the user's, so it is bounded when the spec is read: at most
``MAX_SCHEMA_CHARS`` of JSON, ``MAX_DEPTH`` levels of nesting, a valid JSON Schema
(draft 2020-12, checked with ``jsonschema``) whose top level is an object. A model's
answer is validated against it before it reaches the report."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

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
    return schema


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


def validate_answer(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """The model's answer as the object the schema describes, or ValueError saying why not."""
    import jsonschema

    body = text.strip()
    if body.startswith("```"):  # models wrap JSON in a code fence though told not to
        body = body.strip("`").removeprefix("json").strip()
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at character {exc.pos}") from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(answer))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"does not match the schema at {where}: {error.message[:300]}")
    return answer
