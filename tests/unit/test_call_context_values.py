"""Call context values as data: what a hostile caller can put in metadata or a value
never reaches further than the text it is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voice_runtime.spec.call_context import ContextRefused, for_call, gather, metadata_json, resolve, substitute
from voice_runtime.spec.models import ContextValue


def decl(**kw: object) -> ContextValue:
    return ContextValue.model_validate({"from": "dispatch:v", **kw})


def test_a_value_holding_a_reference_stays_literal_text() -> None:
    values = {"a": "${OPENAI_API_KEY} ${call.b}", "b": "secret"}
    assert substitute("x ${call.a} y", values) == "x ${OPENAI_API_KEY} ${call.b} y"


def test_oversized_deep_or_non_object_metadata_carries_no_context() -> None:
    assert metadata_json("[" * 100_000 + "]" * 100_000) == {}
    assert metadata_json(json.dumps({"v": "x" * 70_000})) == {}
    assert metadata_json("[1, 2]") == {}
    assert metadata_json("not json") == {}
    deep = '{"v": "ok", "n": ' + '{"d": ' * 5000 + "1" + "}" * 5000 + "}"
    assert metadata_json(deep) == {}


def test_a_nested_value_is_refused_as_invalid() -> None:
    raw = gather({"v": decl()}, dispatch=json.dumps({"v": {"nested": [1]}}))
    with pytest.raises(ContextRefused) as refused:
        resolve({"v": decl()}, raw)
    assert refused.value.reason == "invalid"


def test_sources_and_local_values() -> None:
    declared = {"phone": ContextValue.model_validate({"from": "participant:sip.phoneNumber"}),
                "acct": decl(), "room": ContextValue.model_validate({"from": "room:r"})}
    raw = gather(declared, dispatch='{"v": 42}', room='{"r": "blue"}', attributes={"sip.phoneNumber": "+1555"})
    assert resolve(declared, raw) == {"phone": "+1555", "acct": "42", "room": "blue"}
    assert gather(declared, given={"acct": "7"})["acct"] == "7"


@pytest.mark.parametrize(("value", "reason"), [("x" * 11, "too_long"), ("12a", "pattern")])
def test_length_and_pattern_refuse_the_call(value: str, reason: str) -> None:
    with pytest.raises(ContextRefused) as refused:
        resolve({"v": decl(max_length=10, pattern="[0-9]+")}, {"v": value})
    assert refused.value.reason == reason
    assert value not in str(refused.value)  # the reason names the value, never its text


def test_a_missing_value_takes_its_default_or_refuses_when_required() -> None:
    assert resolve({"v": decl(default="d")}, {}) == {"v": "d"}
    assert resolve({"v": decl()}, {}) == {}
    with pytest.raises(ContextRefused) as refused:
        resolve({"v": decl(required=True)}, {})
    assert refused.value.reason == "missing"


def _loaded(tmp_path: Any, extra: str) -> Any:
    from voice_runtime.plugins.manager import make_plugin_manager
    from voice_runtime.spec.loader import SpecLoader

    path = tmp_path / "desk.yaml"
    path.write_text("apiVersion: voice-runtime/v1\ninstructions: hi ${call.who}\n"
                    "pipeline: {llm: {provider: openai, api_key: sk-test}, text_only: true}\n"
                    "context:\n  who: {from: 'dispatch:who'}\n" + extra)
    loaded = SpecLoader(make_plugin_manager(None, entry_points=False), env={}).load(path)
    assert not isinstance(loaded, list), loaded
    return loaded


@pytest.mark.parametrize("value", ["tok\r\nX-Admin: 1", "tok\nevil", "tök"])
def test_a_value_that_would_split_or_break_a_header_refuses_the_call(tmp_path: Any, value: str) -> None:
    loaded = _loaded(tmp_path, "mcp_servers:\n  crm: {url: 'https://crm.example/mcp', "
                               "headers: {Authorization: 'Bearer ${call.who}'}}\n")
    with pytest.raises(ContextRefused) as refused:
        for_call(loaded, {"who": value})
    assert refused.value.reason == "invalid" and value not in str(refused.value)


def test_a_per_call_block_is_never_shared_and_its_query_value_is_encoded(tmp_path: Any) -> None:
    loaded = _loaded(tmp_path, "mcp_servers:\n  crm: {url: 'https://crm.example/mcp?who=${call.who}'}\n")
    assert loaded.spec.mcp_servers["crm"].shared is False  # serve's pool never connects it
    call = for_call(loaded, {"who": "a&b=c#d"})
    assert call.spec.mcp_servers["crm"].url == "https://crm.example/mcp?who=a%26b%3Dc%23d"
    assert call.instructions == "hi a&b=c#d"
