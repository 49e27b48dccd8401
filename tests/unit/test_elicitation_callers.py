"""Who a server's question on a shared connection is put to (mcp/elicitation.py
Callers): nothing on the wire says which tool call asked, so a question goes to a
caller only when no other caller can have caused it. The cases a hostile pass found
put to a stranger under the earlier rule (by elimination) are cancelled."""

from __future__ import annotations

import asyncio

import pytest

from voice_runtime.mcp.elicitation import Answer, Callers


async def alice(question: object) -> Answer:  # one call's elicitor
    return Answer("accept", {})


async def bob(question: object) -> Answer:  # another call's
    return Answer("accept", {})


def test_a_question_while_one_callers_calls_run_goes_to_that_caller() -> None:
    callers = Callers()
    with callers.calling(alice), callers.calling(alice), callers.attribute(None) as who:
        assert who is alice


def test_a_handlers_second_question_while_another_callers_call_runs_is_cancelled_not_put_to_them() -> None:
    callers = Callers()
    with callers.calling(alice):
        with callers.attribute(None) as first:
            assert first is alice
            with callers.calling(bob), callers.attribute(None) as second:
                assert isinstance(second, Answer) and second.action == "cancel"
                assert "tool calls of 2 callers are in flight" in (second.reason or "")


def test_a_question_after_another_callers_call_was_cut_short_is_cancelled_for_a_while() -> None:
    callers = Callers()
    with pytest.raises(asyncio.CancelledError), callers.calling(alice):
        raise asyncio.CancelledError  # alice hung up; the server's handler may go on and ask
    with callers.calling(bob), callers.attribute(None) as who:
        assert isinstance(who, Answer) and who.action == "cancel"
        assert "cut short moments ago" in (who.reason or "")


def test_with_no_call_in_flight_whoever_holds_the_connection_answers() -> None:
    callers = Callers()
    with callers.attribute(bob) as who:
        assert who is bob
