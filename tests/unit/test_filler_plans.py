"""Which filler and timeout line apply to a tool: its own entry under the server's
`tools:` wins key by key, else the server's; nothing set is no plan (no wrapping)."""

from __future__ import annotations

from voice_runtime.session.fillers import voice_plan
from voice_runtime.spec.models import HttpServer

URL = "http://127.0.0.1:1/mcp"


def test_a_tool_entry_overrides_its_servers_filler_and_keeps_its_servers_timeout_say() -> None:
    server = HttpServer(url=URL, filler={"after_ms": 800, "say": ["One moment."]}, timeout_say="Not answering.",
                        tools={"lookup": {"filler": {"after_ms": 300, "say": ["Pulling up your order."]}}})

    own = voice_plan(server, "lookup")
    other = voice_plan(server, "search")

    assert own is not None and other is not None
    assert (own.filler.after_ms, own.filler.say, own.timeout_say) == (300, ["Pulling up your order."], "Not answering.")
    assert (other.filler.after_ms, other.filler.say, other.timeout_say) == (800, ["One moment."], "Not answering.")


def test_a_tool_entry_can_give_a_timeout_line_to_a_server_without_voice_keys() -> None:
    server = HttpServer(url=URL, tools={"lookup": {"timeout_say": "The order system is down."}})

    plan = voice_plan(server, "lookup")

    assert plan is not None and plan.filler is None and plan.timeout_say == "The order system is down."
    assert voice_plan(server, "search") is None


def test_a_server_without_voice_keys_has_no_plan() -> None:
    assert voice_plan(HttpServer(url=URL), "anything") is None


def test_a_session_uses_its_own_specs_voice_keys_for_a_connection_opened_for_another_spec() -> None:
    from types import SimpleNamespace

    from voice_runtime.session.fillers import Fillers

    theirs = HttpServer(url=URL, filler={"after_ms": 800, "say": ["Their line."]})
    ours = HttpServer(url=URL, filler={"after_ms": 200, "say": ["Our line."]})
    shared = SimpleNamespace(server=theirs)  # a pooled connection opened for the other spec
    fillers = Fillers("desk", lambda line: None, [], count=lambda *_: None, servers={id(shared): ours})

    plan = fillers.plan_for(shared, "lookup")

    assert plan is not None and plan.filler is not None and plan.filler.say == ["Our line."]
