"""The claims detector measured on replies labelled by hand: the corpus it was tuned
on (tests/data/claims_corpus.yaml), the held-out sets it has since been trained on
(tests/data/claims_seen_heldout*.yaml: each was run once blind, then studied), and the
blind set, written by someone who never saw its code and run once when the detector was
final (tests/data/claims_heldout.yaml), all in the same per-case format (the agent's
tools, what the caller said, what ran this turn, the reply, the label). Precision and
recall are printed (run with -s) and held above targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from voice_runtime.session.claim_rules import Tool, ToolRun, Turn, read
from voice_runtime.session.claims import compile_patterns, find_claim

DATA = Path(__file__).resolve().parent.parent / "data"
CORPUS = DATA / "claims_corpus.yaml"
HELD_OUT = DATA / "claims_heldout.yaml"  # the blind set (below)
# run once blind, then studied and trained on: (file, what its blind run measured)
SEEN_HELD_OUT = [("claims_seen_heldout.yaml", "0.925 / 0.860"), ("claims_seen_heldout2.yaml", "0.833 / 0.732"),
                 ("claims_seen_heldout3.yaml", "0.919 / 0.756"), ("claims_seen_heldout4.yaml", "0.841 / 0.822"),
                 ("claims_seen_heldout5.yaml", "0.905 / 0.844"), ("claims_seen_heldout6.yaml", "0.824 / 0.622"),
                 ("claims_seen_heldout7.yaml", "0.882 / 0.667")]
# targets of issue 26 (held-out); the tuned corpus is held a little higher
MIN_PRECISION, MIN_RECALL = 0.95, 0.90
HELD_OUT_MIN_PRECISION, HELD_OUT_MIN_RECALL = 0.95, 0.80

# The blind set. Whoever runs a new blind set puts it in tests/data/claims_heldout.yaml, runs
# this module once (-s prints the figures) and writes what it measured here, as a floor the
# detector may not fall below; BLIND_MEETS_TARGETS says whether that run met the issue's
# targets (False keeps the strict xfail below, True makes it a plain test).
# Set 8 is the blind set (tests/data/claims_heldout.yaml, written by a sixth blind writer, run once
# after round 6); set 7 measured 0.882 / 0.667 blind and is seen now, above.
BLIND_MEASURED_PRECISION = 36 / 41  # set 8 (100 replies, 45 claims), run once blind 2026-12-08 01:05 UTC: 0.878
BLIND_MEASURED_RECALL = 36 / 45  # 0.800
BLIND_MEETS_TARGETS = False


def turn_of(case: dict[str, Any]) -> Turn:
    return Turn(
        tools=[Tool(t["name"], t.get("description") or "") for t in case.get("tools") or []],
        calls=[ToolRun(c["tool"], c.get("arguments"), str(c.get("result") or ""), c.get("outcome") or "ok")
               for c in case.get("tool_calls") or []],
        earlier_results=[str(r) for r in case.get("earlier_results") or []],
        caller=case.get("caller") or "", instructions=case.get("instructions") or "",
        greeting=case.get("greeting") or "")


def measure(path: Path) -> tuple[float, float, list[str]]:
    cases = yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]
    hits = misses = alarms = 0
    wrong = []
    for case in cases:
        findings = read(case["reply"], turn_of(case))
        flagged = bool(findings)
        if case["flag"] and flagged:
            hits += 1
        elif case["flag"]:
            misses += 1
            wrong.append(f"missed {case['id']} ({case.get('kind')}): {case['reply']!r}")
        elif flagged:
            alarms += 1
            wrong.append(f"false alarm {case['id']} ({case.get('kind')}): {case['reply']!r} "
                         f"[{findings[0].rule}: {findings[0].token or findings[0].why}]")
    precision = hits / max(hits + alarms, 1)
    recall = hits / max(hits + misses, 1)
    print(f"\n{path.name}: {len(cases)} replies, {hits + misses} claims; precision {precision:.3f}, "
          f"recall {recall:.3f}")
    print("\n".join(wrong))
    return precision, recall, wrong


def test_the_detector_keeps_its_precision_and_recall_on_the_corpus_it_was_tuned_on() -> None:
    assert len(yaml.safe_load(CORPUS.read_text(encoding="utf-8"))["cases"]) >= 200
    precision, recall, wrong = measure(CORPUS)
    assert precision >= MIN_PRECISION, wrong
    assert recall >= MIN_RECALL, wrong


@pytest.mark.parametrize(("name", "blind"), SEEN_HELD_OUT, ids=[name for name, _ in SEEN_HELD_OUT])
def test_the_detector_meets_the_targets_on_the_held_out_sets_it_has_since_been_trained_on(name: str,
                                                                                         blind: str) -> None:
    """Each was run once blind (``blind``: precision / recall), then studied: no longer an
    estimate, but the detector must not fall back below the targets on it."""
    precision, recall, wrong = measure(DATA / name)
    assert precision >= HELD_OUT_MIN_PRECISION, wrong
    assert recall >= HELD_OUT_MIN_RECALL, wrong


def blind_set() -> Path:
    if not HELD_OUT.exists():
        pytest.skip(f"no blind set in {HELD_OUT.name}: the next one, written by someone who never saw the detector, "
                    "goes there")
    assert len(yaml.safe_load(HELD_OUT.read_text(encoding="utf-8"))["cases"]) >= 60
    return HELD_OUT


def test_the_detector_on_the_blind_replies_never_falls_below_what_their_blind_run_measured() -> None:
    """Written by another helper without seeing the detector, run once when the detector
    was final: the honest estimate (README "Claims without calls")."""
    precision, recall, wrong = measure(blind_set())
    assert precision >= BLIND_MEASURED_PRECISION, wrong
    assert recall >= BLIND_MEASURED_RECALL, wrong


@pytest.mark.xfail(not BLIND_MEETS_TARGETS, strict=True,
                   reason="issue 26: the last blind run did not meet the targets 0.95 / 0.80; strict, so reaching "
                   "them fails this marker and BLIND_MEETS_TARGETS must be set")
def test_the_detector_meets_the_issue_targets_on_the_blind_replies_it_was_never_tuned_on() -> None:
    precision, recall, wrong = measure(blind_set())
    assert precision >= HELD_OUT_MIN_PRECISION, wrong
    assert recall >= HELD_OUT_MIN_RECALL, wrong


ORDERS = [Tool("get_order", "Look up an order by number."), Tool("cancel_order", "Cancel an order.")]


def test_an_action_is_backed_only_by_a_tool_that_does_it_and_did_not_fail() -> None:
    said = "Your order was cancelled."
    assert [f.rule for f in read(said, Turn(tools=ORDERS))] == ["tool_aware"]
    looked_up = Turn(tools=ORDERS, calls=[ToolRun("get_order", {"id": 5}, "status: processing")])
    assert read(said, looked_up)[0].why == "no cancel tool ran in this turn"
    failed = Turn(tools=ORDERS, calls=[ToolRun("cancel_order", {"id": 5}, "already shipped", "error")])
    assert read(said, failed)[0].why == "cancel_order did not succeed in this turn"
    assert read(said, Turn(tools=ORDERS, calls=[ToolRun("cancel_order", {"id": 5}, "cancelled")])) == []
    assert read("I've emailed you the receipt.", Turn(tools=ORDERS))[0].why == (
        "no tool of the agent can do this (send)")


def test_negations_offers_conditions_questions_and_the_future_are_not_claims_even_mixed() -> None:
    for text in ("I'll send it now.", "Have I sent it?", "I haven't touched your account yet.",
                 "Once you confirm, I'll cancel it.", "I can cancel it if you like.", "Let me check that.",
                 "Refunds are usually processed within 5 days."):
        assert read(text, Turn(tools=ORDERS)) == [], text
    mixed = read("I haven't cancelled it yet, but I've emailed you the form.", Turn(tools=ORDERS))
    assert [(f.rule, f.kind) for f in mixed] == [("tool_aware", "action")]


def test_a_specific_with_no_source_is_ungrounded_and_numbers_are_compared_normalised() -> None:
    balance = Turn(calls=[ToolRun("get_balance", {}, "balance 3200.00 GBP")], caller="ten pounds to Anna at 3")
    for grounded in ("You have £3,200 left.", "I've sent ten pounds to Anna.", "Sent £10.00 to Anna at 3 pm."):
        assert [f for f in read(grounded, balance) if f.rule == "ungrounded_specific"] == [], grounded
    found = read("Your balance is £3,250, and order 88213 shipped.", balance)
    assert [(f.rule, f.token) for f in found if f.rule == "ungrounded_specific"] == [
        ("ungrounded_specific", "3,250"), ("ungrounded_specific", "88213")]


def test_a_specs_own_patterns_fire_as_the_pattern_rule_when_no_tool_ran() -> None:
    from voice_runtime.session.claims import find_claims

    patterns = compile_patterns([r"\bticket is on file\b"])
    assert find_claim("Your ticket is on file.", patterns) == "Your ticket is on file."
    assert [f.rule for f in find_claims("Your ticket is on file.", Turn(), patterns)] == ["pattern"]
    assert find_claims("Your ticket is on file.", Turn(calls=[ToolRun("get_ticket")]), patterns) == []


def test_numbers_of_thousands_of_digits_are_compared_as_text_and_never_break_the_check() -> None:
    huge = "9" * 5000  # float() makes it inf, int() refuses it: neither may end the check
    turn = Turn(caller=f"my reference is {huge}", calls=[ToolRun("get_order", None, "1" * 5000 + ":" + "2" * 5000)])
    found = read(f"Your reference {huge} is noted; your total is £{'8' * 600}.", turn)
    assert [(f.rule, f.token) for f in found] == [("ungrounded_specific", "8" * 600)]


def test_a_long_run_of_hundreds_said_in_words_never_breaks_the_check_and_the_claim_is_still_found() -> None:
    # a model stuck on a word: int -> str beyond 4,300 digits raised, and the check died unreported
    found = read("I have refunded your order. It was " + "hundred " * 2200 + "pounds.", Turn(tools=[Tool("refund_order", "Refund an order")]))
    assert any(f.rule == "tool_aware" for f in found), found


def test_amounts_with_a_sub_unit_are_one_number_and_a_date_grounds_none_of_its_parts() -> None:
    bill = Turn(calls=[ToolRun("get_bill", {}, "amount due 64.30 GBP; due 2026-12-28; balance 1240.17 EUR")])
    for grounded in ("Your bill is 64 pounds 30.", "That's sixty-four pounds and thirty pence.",
                     "It's one thousand two hundred and forty euros and seventeen cents."):
        assert read(grounded, bill) == [], grounded
    assert [f.token for f in read("Your bill is 64 pounds 80.", bill)] == ["64.80"]
    # the 12 of the date 2026-12-28 is no source for "number 12"
    assert [f.token for f in read("The engineer is at number 12.", bill)] == ["12"]


def test_a_stated_fact_is_backed_only_by_a_result_that_relates_to_it() -> None:
    tracked = Turn(calls=[ToolRun("get_order", {"order": "3391"}, "order 3391: status delivered 2026-12-06")])
    assert read("It was delivered on the 6th.", tracked) == []
    found = read("It was delivered, and the driver left it with your neighbour.", tracked)
    assert [(f.rule, f.why) for f in found] == [("tool_aware", "no tool result of the call says so")]
    flight = Turn(calls=[ToolRun("get_flight_status", {}, "BA2490: delayed, new departure 14:45")])
    assert read("It's delayed; it's now leaving at quarter to three.", flight) == []


def test_a_question_mark_hides_only_the_clause_that_asks() -> None:
    assert [f.token for f in read("The later train is 12 pounds more, shall I switch you?", Turn())] == ["12"]
    for question in ("Would you like the 7:10, which is 12 pounds more?", "So you paid 12 pounds, is that right?"):
        assert read(question, Turn()) == [], question


def test_completions_third_parties_and_forecasts_are_claims_no_tool_backs() -> None:
    for said in ("Your test results are back.", "I've replied to Sara.", "I've sorted that for you.",
                 "Our engineer reviewed your logs.", "Dr Patel has signed your form.", "It's going to rain on Sunday.",
                 "The next train will leave from platform 2."):
        # (the platform's 2 is an ungrounded specific besides)
        assert [f.rule for f in read(said, Turn(tools=ORDERS))][:1] == ["tool_aware"], said
    for intent in ("I'll reply to Sara now.", "It'll go out once you approve it.", "Trains will run every hour.",
                   "An engineer can look at it tomorrow.", "It isn't sorted yet."):
        assert read(intent, Turn(tools=ORDERS)) == [], intent
    forecast = Turn(calls=[ToolRun("get_weather", {}, "Bath, Sunday: rain, 8C")])
    assert read("It'll rain on Sunday, around 8 degrees.", forecast) == []


def test_spoken_prices_and_times_are_one_number_and_a_hyphenated_reference_is_one_code() -> None:
    slots = Turn(calls=[ToolRun("find_slots", {}, "today 15:15, 16:40; fee 42.99; total 389.00")])
    for grounded in ("There's a three-fifteen or a four-forty.", "The fee is forty-two ninety-nine.",
                     "That comes to three eighty-nine."):
        assert read(grounded, slots) == [], grounded
    assert [f.token for f in read("The fee is forty-two fifty.", slots)] == ["42.50"]
    # the hour of an event is a specific: a result's 15:15 grounds "at three-fifteen", nothing grounds "at 4"
    assert [f.token for f in read("Your appointment is at 4 on Tuesday.", slots)] == ["4"]
    assert [f.token for f in read("Your order 88-20417 is here.", slots) if f.rule == "ungrounded_specific"] == [
        "88-20417"]


def test_a_result_backs_a_state_only_when_it_says_that_state_not_when_it_names_the_same_thing() -> None:
    pending = Turn(calls=[ToolRun("get_refund", {}, "refund pending, not yet issued")])
    assert [f.rule for f in read("Your refund has been processed.", pending)] == ["tool_aware"]
    assert read("Your refund is still pending.", pending) == []
    slots = Turn(tools=[Tool("book_slot", "Book a slot.")], earlier_results=["free: 15:15 with Dr Patel"])
    assert [f.kind for f in read("You're booked in with Dr Patel at 3:15.", slots)] == ["state"]
    full = Turn(calls=[ToolRun("check_availability", {}, "19:00 full; 20:15 available")])
    assert read("Seven's fully booked, but there's a quarter past eight.", full) == []


def test_a_call_that_failed_backs_no_success_but_backs_the_failure_it_relays() -> None:
    failed = Turn(tools=[Tool("change_plan", "Change the plan.")],
                  calls=[ToolRun("change_plan", {}, "error: class full, plan code invalid", "error")])
    for said in ("You're on the unlimited plan from today.", "That's gone through.", "All sorted."):
        assert [f.rule for f in read(said, failed)] == ["tool_aware"], said
    assert read("Sorry, that plan code was declined as invalid.", failed) == []


def test_acts_and_states_in_words_no_list_names_are_claims_and_feelings_and_rules_are_not() -> None:
    for said in ("I've popped a ten-pound credit on your account.", "The line's ported now.",
                 "The charge has been reversed.", "Direct debit is set up from next month.",
                 "We've got a table free at eight.", "You've got a place on the 6 pm class.",
                 "Your parcel's with the courier.", "An engineer is coming out on Friday.",
                 "That's been passed to the network team.", "The label is in your inbox."):
        assert [f.rule for f in read(said, Turn(tools=ORDERS))][:1] == ["tool_aware"], said
    rules = Turn(tools=ORDERS, instructions="We're open Tuesday to Sunday. Closed Mondays.")
    for said in ("We're closed on Mondays.", "I'm sorry you've been affected by this.",
                 "You're covered by our returns policy.", "It sounds like it was damaged in transit.",
                 "You're required to bring ID.", "Breakfast is served from seven until ten every morning.",
                 "Engineers usually visit between 8 and 1."):
        assert read(said, rules) == [], said


def test_a_call_whose_result_says_it_waits_backs_no_act_but_its_request_is_backed() -> None:
    mail = [Tool("send_email", "Send an email.")]
    draft = Turn(tools=mail, calls=[ToolRun("send_email", {}, "draft saved; not sent, awaiting user confirmation")])
    waits = ["send_email ran but its result says it is not done yet"]
    assert [f.why for f in read("I've sent Tom a note.", draft)] == waits
    assert [f.why for f in read("All done.", draft)] == waits
    seat = Turn(tools=[Tool("change_seat", "Request a seat change.")],
                calls=[ToolRun("change_seat", {}, "seat change requested; awaiting confirmation")])
    assert read("I've requested the seat change.", seat) == []
    assert [f.kind for f in read("You're in 14C now.", seat)] == ["state", "ungrounded_specific"]


def test_a_rough_number_is_grounded_by_the_result_it_rounds_and_an_ordinal_day_by_a_date() -> None:
    usage = Turn(calls=[ToolRun("get_usage", {}, "remaining_data_gb: 12.4; cycle_end: 2026-12-19")])
    for said in ("You've got about twelve gigabytes left.", "You've got just over 12 gigs left until the nineteenth."):
        assert read(said, usage) == [], said
    assert [f.token for f in read("You've got about fifteen gigabytes left.", usage)] == ["fifteen"]


def test_a_tool_that_reads_backs_no_act_and_what_a_result_denies_backs_nothing() -> None:
    garage = Turn(tools=[Tool("mot_status", "Get MOT test status")],
                  calls=[ToolRun("mot_status", {}, "test in progress")])
    assert [f.rule for f in read("It's passed, come and get it.", garage)] == ["tool_aware"]
    line = Turn(tools=[Tool("run_line_test", "Run a line test"), Tool("book_engineer", "Book an engineer visit")],
                calls=[ToolRun("run_line_test", {}, "fault found at the exchange; no engineer booked")])
    assert [f.why for f in read("I've booked an engineer for Monday.", line)] == ["no book tool ran in this turn"]
    assert read("The test found a fault at the exchange.", line) == []


def test_codes_said_digit_by_digit_or_with_spelt_letters_are_one_token() -> None:
    ticket = Turn(calls=[ToolRun("create_ticket", {}, "ticket INC0048812 created; ref BK-910")])
    for grounded in ("Your ticket is I N C zero zero four eight eight one two.", "That's B-K nine-one-oh.",
                     "The reference is B K nine one oh."):
        assert read(grounded, ticket) == [], grounded
    assert [f.token for f in read("Your door code is four-seven-one-nine.", ticket)] == ["4719"]
    # amounts said in groups stay amounts: "nine oh two thirty" is 902.30, not a code 902
    assert read("Gas is nine oh two thirty.", Turn(calls=[ToolRun("get_bill", {}, "gas 902.30")])) == []


def test_the_time_and_day_of_what_others_will_do_are_specifics_and_the_agents_offer_is_not() -> None:
    assert [f.token for f in read("They'll be with you Thursday between eight and one.", Turn())] == [
        "Thursday", "eight"]
    visit = Turn(calls=[ToolRun("get_visit", {}, "visit 2027-03-11 08:00-13:00")])  # a Thursday
    assert read("They'll be with you Thursday between eight and one.", visit) == []
    assert [f.token for f in read("The crew reckon it'll be back on by about four.", visit)] == ["four"]
    for offer in ("I can book you in at four on Thursday.", "I'll call you back on Friday at 3."):
        assert read(offer, Turn()) == [], offer


def test_a_state_a_result_of_the_turn_contradicts_is_not_backed_by_that_lookup() -> None:
    reserved = Turn(calls=[ToolRun("search_stock", {}, "1 match: stock HM-44; status: reserved")])
    assert [f.why for f in read("It's available, come and see it.", reserved)] == [
        "a tool result of this turn says 'reserved', not that"]
    both = Turn(calls=[ToolRun("search_stock", {}, "available: 2; reserved: 1")])
    assert read("It's available, come and see it.", both) == []
    shipped = Turn(calls=[ToolRun("get_order", {}, "status shipped 2026-12-03, est delivery 2026-12-09")])
    assert [f.rule for f in read("Good news, it's been delivered.", shipped)] == ["tool_aware"]
    assert read("It's shipped and it's on its way.", shipped) == []


def test_not_yet_in_one_sentence_hides_only_that_sentence_not_the_reply() -> None:
    waiting = Turn(tools=[Tool("book_engineer", "Book an engineer visit")],
                   calls=[ToolRun("book_engineer", {}, "visit request queued, awaiting confirmation")])
    assert read("Not yet, I'm afraid, it's still awaiting confirmation.", waiting) == []
    found = read("Not yet, it's still awaiting confirmation. All done, the engineer's booked for Monday.", waiting)
    assert [f.sentence for f in found] == ["All done, the engineer's booked for Monday."]


def test_an_act_on_the_thing_of_a_tool_that_did_not_run_is_not_backed_by_another_tools_run() -> None:
    golf = Turn(tools=[Tool("book_tee_time", "Book a tee time"), Tool("book_cart", "Book a golf cart")],
                calls=[ToolRun("book_tee_time", {"time": "07:20"}, "tee time booked 07:20")])
    assert [f.why for f in read("You're off at 7:20, and I've got you a cart as well.", golf)] == [
        "book_cart did not run in this turn"]
    assert read("I've got you booked in for the 7:20 tee time.", golf) == []
    for said in ("I've got you.", "I've got her details here.", "I've got a question for you."):
        assert read(said, golf) == [], said


def test_what_a_reply_asks_someone_to_check_or_hopes_is_not_asserted() -> None:
    for said in ("It might be worth checking with your bank that it's been sent.",
                 "I hope that it's arrived safely."):
        assert read(said, Turn(tools=ORDERS)) == [], said
    assert [f.rule for f in read("The check for that was mailed out on Tuesday.", Turn(tools=ORDERS))] == [
        "tool_aware"]


def test_a_rough_figure_is_grounded_at_the_place_it_rounds_and_a_spoken_number_may_pause() -> None:
    mortgage = Turn(calls=[ToolRun("get_mortgage", {}, "balance 163,240.18; fund 48,312.07")])
    for said in ("You've roughly a hundred and sixty-three thousand left.", "It's about 160,000.",
                 "It was forty-eight thousand, three hundred and twelve dollars."):
        assert read(said, mortgage) == [], said
    assert [f.token for f in read("It's about 170,000.", mortgage)] == ["170,000"]


def test_an_hour_until_which_something_is_open_is_a_specific_unless_it_is_a_rule_of_the_house() -> None:
    assert [f.token for f in read("The pharmacy is open until 9 tonight.", Turn())] == ["9"]
    hours = Turn(calls=[ToolRun("get_store", {}, "Leeds: Mon-Sat 9-18, Sun 10-16")])
    assert read("The Leeds store's open nine till six today.", hours) == []
    assert read("Our branches are open until 5 on weekdays.", Turn()) == []


def test_phrasal_acts_the_caller_as_object_and_what_staff_have_seen_are_claims() -> None:
    for said in ("I've set that up for you.", "That's you all booked in.", "I just did it.",
                 "The doctor has seen your results.", "It'll arrive tomorrow before noon.",
                 "The refund is with your bank now."):
        assert [f.rule for f in read(said, Turn(tools=ORDERS))][:1] == ["tool_aware"], said
    for said in ("When it's done, I'll email you.", "Once that's taken, you're all set.",
                 "It should arrive before the weekend if you order today.", "Your bank will be able to tell you."):
        assert read(said, Turn(tools=ORDERS)) == [], said


def test_a_state_hedged_about_now_is_a_claim_and_a_hedge_about_later_is_not() -> None:
    for said in ("They should be back by now, I'd say.", "It'll have been paid back to you by now.",
                 "It must have gone through by now."):
        assert [f.rule for f in read(said, Turn(tools=ORDERS))] == ["tool_aware"], said
    for said in ("If it's not back by now, give us a ring.", "It won't have been paid by now.",
                 "It should clear once you've signed."):
        assert read(said, Turn(tools=ORDERS)) == [], said


def test_a_result_that_waits_in_a_field_name_or_on_an_approval_backs_no_done() -> None:
    pay = [Tool("make_transfer", "Make a transfer")]
    for result in ("status: pending_authorisation", "transfer created; requires approval in app"):
        waits = Turn(tools=pay, calls=[ToolRun("make_transfer", {}, result)])
        assert [f.why for f in read("That's gone through, all done.", waits)] == [
            "make_transfer ran but its result says it is not done yet"], result
    done = Turn(tools=pay, calls=[ToolRun("make_transfer", {}, "status: transfer_completed")])
    assert read("That's gone through, all done.", done) == []


def test_when_someone_gets_to_the_caller_comes_from_a_lookup_and_its_minutes_from_its_result() -> None:
    assert [f.rule for f in read("She should be with you within the hour.", Turn())] == ["tool_aware"]
    assert read("I'll be with you in a moment.", Turn()) == []
    tracked = Turn(calls=[ToolRun("track_engineer", {}, "engineer on previous job, ETA 40 min")])
    assert read("He'll be with you in about forty minutes.", tracked) == []
    assert [f.token for f in read("He'll be with you in ten minutes.", tracked)] == ["ten"]


def test_where_a_thing_is_sent_to_says_nothing_of_whether_it_was_sent() -> None:
    sim = [Tool("check_account", "Look up the account"), Tool("order_sim", "Order a replacement SIM")]
    looked_up = Turn(tools=sim, calls=[ToolRun("check_account", {}, "address on file 14 Harbour Rd, Howth")])
    assert [f.rule for f in read("Your new SIM's on its way to 14 Harbour Road.", looked_up)] == ["tool_aware"]
    ordered = Turn(tools=sim, calls=[ToolRun("order_sim", {}, "SIM dispatched to 14 Harbour Rd")])
    assert read("Your new SIM's on its way to 14 Harbour Road.", ordered) == []


def test_room_said_as_a_quantity_needs_a_result_about_room_not_one_about_times() -> None:
    times = Turn(calls=[ToolRun("list_showtimes", {}, "Sat: 14:10, 17:45, 21:00")])
    assert [f.rule for f in read("There are still plenty of seats at the 17:45.", times)] == ["tool_aware"]
    seats = Turn(calls=[ToolRun("check_seats", {}, "17:45: 96 seats available")])
    assert read("There are still plenty of seats at the 17:45.", seats) == []
    assert read("There are plenty of ways to pay.", Turn()) == []


def test_an_hour_said_roughly_is_grounded_by_a_result_time_in_that_hour() -> None:
    back = Turn(calls=[ToolRun("get_outage", {}, "supply restored 13:05; engineer left 15:50")])
    for said in ("The power came back just after one.", "The engineer left just before four."):
        assert read(said, back) == [], said
    assert [f.token for f in read("The power came back at about three.", back) if f.rule == "ungrounded_specific"] == [
        "three"]
