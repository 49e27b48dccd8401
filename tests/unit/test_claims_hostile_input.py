"""The claims detector against what a model or a server can send it (issue 20 item 6, issue 26):
replies and results that are long, odd or broken. Every check must end with its findings (a
crash reports nothing: the claim it would have found is lost), and its cost must grow in
proportion to the reply. Speed is compared, never clocked: a 100x longer reply must cost about
100x, measured against its own short form in the same test (quadratic work costs 10,000x)."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from voice_runtime.session.claim_rules import Finding, Tool, ToolRun, Turn, read
from voice_runtime.core import user_regex
from voice_runtime.session.claims import find_claims

ORDERS = [Tool("get_order", "Look up an order by number."), Tool("cancel_order", "Cancel an order.")]
CLAIM = "I've cancelled your order. "
SHORT, LONG = 1_000, 100_000
# linear is 100; a clause re-read from its start for each word (as before) measured 800 to 3,000
LINEAR_BOUND = 350


def _cpu_s(text: str, turn: Turn, repeat: int) -> tuple[float, list[Finding]]:
    """The least CPU time of ``repeat`` checks (least: another process on the core only adds), and
    what the check found."""
    best, found = float("inf"), []
    for _ in range(repeat):
        started = time.thread_time()
        found = read(text, turn)
        best = min(best, time.thread_time() - started)
    return best, found


def _filled(unit: str, chars: int) -> str:
    head, _, unit = unit.rpartition("|")  # "head|unit": the unit repeated after the head
    return CLAIM + head + (unit * (chars // len(unit) + 1))[:chars]


@pytest.mark.parametrize(("unit", "result"), [
    ("A B C D E F G H ", ""),  # letters spelt out, never followed by digits
    ("not yet ", ""),  # a negation repeated
    ("e\u0301\u0301 \u200b ", ""),  # combining accents and zero-width spaces
    ("at 12:00 at 3 ", ""),  # times
    ("the third the 21st ", ""),  # ordinals
    ("It's 1 point 1 |5 ", ""),  # a decimal said aloud that never ends
    ("\uff11\uff12\uff13 \u0663\u0662 ", ""),  # full-width and Arabic-Indic digits
    ("it is being processed ", "processing"),  # a state under way, as the result says, over and over
], ids=["spelt-letters", "not-yet", "combining", "times", "ordinals", "said-decimal", "unicode-digits", "being"])
def test_a_reply_that_is_one_endless_clause_costs_time_in_proportion_to_its_length(unit: str, result: str) -> None:
    turn = Turn(tools=ORDERS, calls=[ToolRun("get_order", {}, result)] if result else [])
    short, long = _filled(unit, SHORT), _filled(unit, LONG)
    read(short, turn)  # warm the caches of the turn's sources
    (long_s, found), (short_s, _) = _cpu_s(long, turn, 2), _cpu_s(short, turn, 5)
    ratio = long_s / max(short_s, 1e-5)
    assert ratio < LINEAR_BOUND, f"{LONG // SHORT}x the text cost {ratio:.0f}x the time"
    assert [f.rule for f in found][:1] == ["tool_aware"]  # and the claim before the run is still found


def _peak_bytes(text: str, turn: Turn) -> int:
    tracemalloc.start()
    try:
        read(text, turn)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_decimal_said_aloud_that_never_ends_holds_memory_in_proportion_to_its_length() -> None:
    # each digit made a new, longer number and every one was kept: 100 k characters held 1.2 GB
    said = "It's 1 point 1 |5 "
    turn = Turn(tools=ORDERS)
    read(_filled(said, SHORT), turn)
    ratio = _peak_bytes(_filled(said, 40 * SHORT), turn) / _peak_bytes(_filled(said, SHORT), turn)
    assert ratio < 150, f"40x the text held {ratio:.0f}x the memory"


@pytest.mark.parametrize("said", ["Seat ² is free.", "Your code is ²-³.", "You are number ² in the queue."])
def test_a_superscript_digit_is_no_number_and_never_breaks_the_check(said: str) -> None:
    # "²" is a digit to str.isdigit, and int() refuses it: the check ended and reported nothing
    found = find_claims(f"{CLAIM}{said}", Turn(tools=ORDERS))
    assert [f.rule for f in found][:1] == ["tool_aware"]
    usage = Turn(calls=[ToolRun("get_usage", {}, "plan ²-³; remaining 12.4 GB")])
    assert read("You have about 12 GB left.", usage) == []


def test_a_lone_nt_is_a_negation_and_never_breaks_the_check() -> None:
    # "can n't" (a model's typo) left an empty word, and the first look at its first letter ended the check
    assert read("I can n't find it.", Turn(tools=ORDERS)) == []
    assert [f.token for f in read("Your total is 12 pounds, n't it.", Turn())] == ["12"]
    assert [f.rule for f in read(f"{CLAIM}Order 12 n't", Turn(tools=ORDERS))][:1] == ["tool_aware"]


def test_a_reply_of_one_endless_sentence_stops_at_the_time_budget() -> None:
    # the budget was checked only between sentences: one 1 MB sentence ran 2.7 s past a budget of 1 s
    text = _filled("at 12:00 at 3 ", 2 * LONG)
    turn = Turn(tools=ORDERS)
    whole, found = _cpu_s(text, turn, 1)
    assert [f.rule for f in found][:1] == ["tool_aware"]
    started = time.thread_time()
    with pytest.raises(user_regex.TimedOut):
        find_claims(text, turn, budget_s=whole / 20)
    assert time.thread_time() - started < whole / 4


def test_digits_of_other_scripts_are_numbers_and_invisible_marks_do_not_hide_a_claim() -> None:
    # "£１２３" and "£٣٢٠" were no amounts at all (never ungrounded); a soft hyphen hid "emailed"
    assert [f.token for f in read("Your total is £１２３.", Turn())] == ["123"]
    assert [f.token for f in read("Your total is £٣٢٠.", Turn())] == ["320"]
    assert read("Your total is £٣٢٠.", Turn(calls=[ToolRun("get_bill", {}, "total 320.00")])) == []
    for hidden in ("I've emai\u00adled you the receipt.", "I've\u200bemailed you the receipt.",
                   "\u202eI've emailed you the receipt.\u202c"):
        assert [f.rule for f in read(hidden, Turn(tools=ORDERS))] == ["tool_aware"], hidden


def test_the_arguments_a_model_gives_a_tool_and_its_result_are_kept_bounded() -> None:
    # the model writes them: 1 MB of arguments was read in full at every check (1.1 s, past the budget)
    from livekit.agents.llm import FunctionCall, FunctionCallOutput
    from livekit.agents.voice.events import FunctionToolsExecutedEvent
    from livekit.rtc import EventEmitter
    from voice_runtime.session.claims import ARGUMENT_CHARS, RESULT_CHARS, ClaimWatch

    session: EventEmitter[str] = EventEmitter()
    watch = ClaimWatch(runner=None)  # type: ignore[arg-type]  # the tool events need no call
    watch.attach(session)
    huge = '{"note": "' + "at 12:00 A B C one two " * 50_000 + '"}'
    session.emit("function_tools_executed", FunctionToolsExecutedEvent(
        function_calls=[FunctionCall(call_id="1", name="get_order", arguments=huge)],
        function_call_outputs=[FunctionCallOutput(call_id="1", name="get_order", output="x" * 10**6, is_error=False)]))
    assert [(len(c.arguments), len(c.result)) for c in watch.calls] == [(ARGUMENT_CHARS, RESULT_CHARS)]


def test_a_rough_figure_against_a_call_of_many_numbers_costs_little_more_than_an_exact_one() -> None:
    # every rounding of every number of the call's results was listed, a reply at a time: 200
    # results of 280 twelve-digit amounts made 1.2 million, 0.56 s against 0.03 s for an exact figure
    earlier = [" ".join(f"{100_000_000_000 + k * 7919 + j * 13}.5" for j in range(280)) for k in range(200)]

    def cpu_s(reply: str) -> float:
        read(reply, Turn(earlier_results=earlier))  # each result's numbers are read once a call
        best = float("inf")
        for _ in range(3):
            started = time.thread_time()
            read(reply, Turn(earlier_results=earlier))  # a new turn: its roundings are made anew
            best = min(best, time.thread_time() - started)
        return best

    ratio = cpu_s("You have about 12 gigabytes left.") / cpu_s("You have 12 gigabytes left.")
    assert ratio < 10, f"a rough figure cost {ratio:.1f}x an exact one"
    # and rounding still grounds: 100,000,000,013.5 is about 100,000,000,000
    assert read("You have about 100000000000 left.", Turn(earlier_results=earlier)) == []


def test_a_run_on_sentence_of_conditions_read_in_pieces_flags_only_the_claim_after_it() -> None:
    # the pieces of a sentence over 2,000 characters are cut after a clause: a cut inside
    # "if we booked it" had made "booked it, Once I've checked..." a claim five times over
    reply = "Once I've checked the calendar, if we booked it, " * 800 + "fine. I've emailed you the invoice."
    assert [(f.rule, f.sentence) for f in read(reply, Turn(tools=[]))] == [
        ("tool_aware", "I've emailed you the invoice.")]
