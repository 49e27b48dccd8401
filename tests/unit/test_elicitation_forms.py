"""A server's elicitation form read into fields (the MCP spec's primitive schemas, SEP-1034
defaults, SEP-1330 titled and multi-select enums), refused outside them or our bounds,
and what a person typed or said read as each field's type."""

from __future__ import annotations

import json

import pytest

from voice_runtime.mcp.elicitation import (
    Answer,
    BadForm,
    Question,
    accept_defaults,
    check_answer,
    parse_typed,
    read_back,
    read_form,
)

FORM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {"type": "string", "enum": ["active", "inactive"], "default": "active"},
        "verified": {"type": "boolean", "default": True},
        "size": {"type": "string", "oneOf": [{"const": "s", "title": "Small"}, {"const": "l", "title": "Large"}]},
        "toppings": {"type": "array", "items": {"anyOf": [{"const": "ham", "title": "Ham"},
                                                          {"const": "olive", "title": "Olives"}]}},
    },
    "required": ["size"],
}


async def test_defaults_of_every_primitive_type_are_accepted_and_a_required_field_without_one_declines() -> None:
    question = read_form("s", "Please", FORM)
    assert (await accept_defaults(question)).action == "decline"  # size is required, no default
    optional = read_form("s", "Please", {**FORM, "required": []})
    answer = await accept_defaults(optional)
    assert answer.action == "accept"
    assert answer.content == {"name": "John Doe", "age": 30, "score": 95.5, "status": "active", "verified": True}


def test_titled_and_multi_select_enums_are_read_with_their_labels_and_answered_by_label_or_value() -> None:
    fields = {f.name: f for f in read_form("s", "m", FORM).fields}
    assert fields["size"].choices == ("s", "l") and fields["size"].labels == ("Small", "Large")
    assert parse_typed(fields["size"], "large") == "l"
    assert parse_typed(fields["toppings"], "Ham, olive") == ["ham", "olive"]
    assert parse_typed(fields["verified"], "Yes") is True
    assert parse_typed(fields["age"], "41") == 41
    with pytest.raises(ValueError, match="one of Small, Large"):
        parse_typed(fields["size"], "medium")
    with pytest.raises(ValueError, match="a whole number"):
        parse_typed(fields["age"], "4.5")


def test_an_answer_is_checked_against_the_form_and_omitted_fields_take_their_defaults() -> None:
    question = read_form("s", "m", FORM)
    assert check_answer(question, {"size": "s", "age": 31.0}) == {
        "name": "John Doe", "age": 31, "score": 95.5, "status": "active", "verified": True, "size": "s"}
    for content, why in [({}, "field size is required"), ({"size": "m"}, "'m' is not one of s, l"),
                         ({"size": "s", "verified": "yes"}, "'yes' is not a boolean"),
                         ({"size": "s", "extra": 1}, "unknown field")]:
        with pytest.raises(ValueError, match=why):
            check_answer(question, content)


@pytest.mark.parametrize("schema, why", [
    ({"type": "object", "properties": {"a": {"type": "object"}}}, "only string, number, integer, boolean"),
    ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}}, "enumerated strings"),
    ({"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(21)}}, "21 fields"),
    ({"type": "object", "properties": {"a": {"type": "string", "enum": [1, 2]}}}, "enum values must be strings"),
    ({"type": "object", "properties": {"a": {"type": "integer", "default": "x"}}}, "its default 'x' is not an integer"),
    ({"type": "array"}, "not an object schema"),
    # a hostile pass: 50 enum values of 100,000 characters went to the model and failed the turn
    ({"type": "object", "properties": {"a": {"type": "string", "enum": ["x" * 100_000] * 50}}},
     r"requestedSchema of \d+ characters \(at most 16000\)"),
    ({"type": "object", "properties": {"a": {"type": "string", "enum": ["x" * 501]}}}, "longer than 500 characters"),
    ({"type": "object", "properties": {"a": {"type": "string", "description": "d" * 5000}}},
     "its description has 5000 characters"),
    ({"type": "object", "properties": {"n" * 600: {"type": "string"}}}, "its name has 600 characters"),
])
def test_a_form_outside_the_mcp_spec_or_our_bounds_is_refused_saying_why(schema: dict, why: str) -> None:
    with pytest.raises(BadForm, match=why):
        read_form("s", "m", schema)


def test_a_message_too_long_to_say_is_refused() -> None:
    with pytest.raises(BadForm, match="message of 2001 characters"):
        read_form("s", "x" * 2001, {"type": "object", "properties": {}})


async def test_a_question_is_traced_with_its_server_field_count_and_outcome_never_its_values(monkeypatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from voice_runtime.mcp.elicitation import answer_question
    from voice_runtime.observe import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setitem(tracing._state, "tracer", provider.get_tracer("test"))
    question = read_form("crm", "Your card number?", {"type": "object", "properties": {"card": {"type": "string"}}})

    async def caller(q):
        from voice_runtime.mcp.elicitation import Answer

        return Answer("accept", {"card": "4111111111111111"})

    assert (await answer_question(question, caller, 5)).content == {"card": "4111111111111111"}
    [span] = exporter.get_finished_spans()
    assert span.name == "mcp.elicitation"
    assert dict(span.attributes) == {"mcp.server": "crm", "mcp.elicitation.fields": 1, "mcp.elicitation.action": "accept"}


def test_the_read_back_says_each_value_in_words_and_never_a_secret_fields_value() -> None:
    question = read_form("bank", "Confirm the transfer.", {"type": "object", "properties": {
        "amount": {"type": "number", "title": "Amount"},
        "account": {"type": "string", "enum": ["chk", "sav"], "enumNames": ["checking", "savings"]},
        "card_pin": {"type": "string"},
        "passphrase2": {"type": "string", "format": "password", "title": "Phrase"},
        "note": {"type": "string", "writeOnly": True},
        "urgent": {"type": "boolean"}}})
    line = read_back(question, {"amount": 1250000.0, "account": "sav", "card_pin": "4321", "passphrase2": "hunter2",
                                "note": "private", "urgent": False})
    assert line == ("So that is: Amount 1250000; account savings; card_pin the value you gave; Phrase the value you "
                    "gave; note the value you gave; urgent no. Is that right?")
    for secret in ("4321", "hunter2", "private"):
        assert secret not in line


def test_a_question_crosses_to_a_job_process_unchanged_and_a_malformed_answer_back_is_a_cancel() -> None:
    question = read_form("s", "Please", FORM)
    assert Question.from_wire(json.loads(json.dumps(question.as_wire()))) == question
    answer = Answer("accept", {"size": "l"})
    assert Answer.from_wire(json.loads(json.dumps(answer.as_wire()))) == answer
    for malformed in (None, "accept", {"action": "yes"}, {"action": "accept", "content": ["l"]}):
        assert Answer.from_wire(malformed).action == "cancel"
    # the job's reason reaches serve's log as one short printable line
    logged = Answer.from_wire({"action": "decline", "content": None, "reason": "refused\n2026 fake log line" + "x" * 500})
    assert "\n" not in logged.reason and len(logged.reason) == 200
