"""How a reply is read for claims no tool call backs: the tool-aware reading and the
grounding of specifics. Pure functions of the reply and what the turn knows (the
agent's tools, this turn's tool calls, the call's earlier results, what the caller
said, the instructions and the greeting); ``claims.py`` watches a session and reports.

Rules (each finding names the one that fired):

- ``tool_aware``: a clause states an action ("I've cancelled it", "your order was
  cancelled"), a completion ("you're all set", "done", "the transfer went through"),
  a state only a lookup can know ("your flight is on time", "I can see two bookings")
  and nothing of this turn supports it. An action is supported by a call of a tool
  whose name or description holds that action's verb (``cancel_order`` backs
  "cancelled", ``get_order`` does not) and that did not fail; a lookup said in the
  first person ("I've checked") by any call of the turn; a stated fact ("the courier
  left it with your neighbour", "our engineer reviewed your logs", "it'll rain on
  Sunday", "the next train will leave from platform 2") only by a tool result of the
  call that relates to it (a word by its stem, or a whole number or time) or by an act
  of this turn. An action no tool of the agent can do is reported as such. Verbs no
  list names count by their form: the agent's own act in the past ("I've popped a
  credit on"), a participle after a form of be said of the caller's things ("the line's
  ported now", "you're covered"). A result backs a state only when it says that state
  (the word or its kin: "full" ~ "fully booked"), not when it names the same thing ("refund
  pending" backs no "refund processed"; "out for delivery" no "delivered"); a failed
  call's message backs the setback it reports ("slot taken"), never the act it failed;
  a call whose result says it waits ("awaiting confirmation", "not sent") backs its
  request, not the act done nor "all done", and backs a sentence that itself says the
  request waits ("I've put the cancellation request in", "it still needs sign-off").
  Where a thing on the move is now ("the next 42's six minutes away", "your rider's
  round the corner") only a tracking result backs. The caller's own act said back to
  them ("so you've got your ticket sorted" after "I've bought a ticket") is no claim.
- ``ungrounded_specific``: an amount, a balance, a reference number or code, a time
  of an event or a count that appears in none of the caller's words, the
  instructions, the greeting or a tool call (arguments and results) of this call.
  Numbers are compared normalised and whole: 3,200 = 3200, "ten" = 10, GBP 42.00 = 42,
  3 pm = 15:00, "118 pounds 40" = "a hundred and eighteen pounds and forty pence" = 118.40,
  "quarter to three" = 2:45, "four-forty" = 4.40, 440 or 4:40, "forty-two ninety-nine"
  = 42.99, "six hundred and forty-two pounds eighteen" = 642.18, "ninety-nine pence" =
  0.99, and a whole amount said with its currency ("two thousand one hundred seventy
  rupees") is grounded by a result's 2,170.02; a date is one token (2026-12-05 is no source of "12"), and so is a hyphenated
  reference (88-20417); an hour said bare ("your appointment is at 4") is a specific.
  An amount said in the conditional ("would cost 40 pounds") must be grounded too. A
  number said roughly ("about twelve", "just over 12") is grounded by a result's 12.4,
  an ordinal day ("the nineteenth") by a result's date.
  Spoken paraphrases of a result are read as the result writes them: amounts in groups
  ("eleven oh two thirty-five" = 1102.35, "eighteen forty-two sixty" = 1842.60, "seven
  thousand two fifty" = 7250; a code said digit by digit stays a code), "four point one
  five" = 4.15, a date's year ("twenty twenty-eight"); a setting's state ("auto-renew's
  switched off", "roaming is disabled") is backed by a result field saying the same
  (auto_renew: false, "roaming": "off", wifi_enabled: true); a sentence that itself says
  the thing is not done ("not yet", "still awaiting a decision") is not flagged as
  claiming it done against a result that waits (the other sentences of the reply are read
  as they are: "Not yet. I've booked an engineer out to you" still claims the booking).

What a tool is and what a result says: a tool reads when its name starts with a reading verb
or names what it reports (get_order, mot_status, run_line_test) or its description starts
with one; a reading tool's run backs no act. A negation in a result denies the rest of its
part ("no engineer booked"), a forecast does too ("estimated ready 2027-02-18"). A stated
state is contradicted by a result of the turn that says its opposite and not it ("it's
available" against "status: reserved"). An act on the thing of an acting tool that did
not run ("I've got you a cart" when book_cart did not run) is not backed by another tool.
The time and day of what others will do are specifics ("they'll be with you Thursday
between eight and one": a result's 2027-03-11 grounds Thursday); codes said digit by digit
or with spelt letters are one token ("D-M-V four four eight two" = DMV4482).
A hedge said of now is a claim ("they should be back by now", "it'll have been paid by now"); a
result waits in a field name ("pending_authorisation"), on "requires approval" and "ongoing"; when
someone gets to the caller ("with you within the hour", "in ten minutes") and when a thing falls
due ("his booster is due next month") come from a lookup; so does room said as a quantity ("plenty
of seats"), from a result about room; a destination address ("on its way to 14 Harbour Road") is
where, not what state; "Terminal 5" is grounded by a result's T5; where a charge came from ("the
hundred on hold is a pre-authorisation from the hotel") needs a result naming that counterparty.

Negations ("I haven't cancelled it"), offers and modals ("I can cancel it", "let me
check"), conditions ("once you confirm, ...", the clause after a leading "if ...,", and "if a
payment's late there's a fee added" when the instructions state that rule),
questions, the future ("I'll send it")
and habitual statements ("refunds are usually processed in 5 days") are not claims:
the words that make them so are looked for in the same clause, before the verb. A
question asserts nothing when it is one from its start or ends in a tag ("..., right?");
otherwise only its last clause asks ("that's 12 pounds more, shall I switch you?").

Everything is one pass over the reply's words with a bounded look-back (a few words),
so the cost is linear in the reply's length; the one regular expression that splits
words has no nested repetition.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

LOOK_BACK = 8  # words before a verb where a subject, a negation, a modal or a condition counts
RELATION_REACH = 12  # words of a stated fact, from its verb on, that a tool result must share one of
SUBJECT_REACH = 3  # and words before the verb ("3,200 points left")

# action groups: the verb forms a reply uses (past tense and participles) and the
# words by which a tool's name or description shows it does that action
_GROUPS: dict[str, tuple[str, str]] = {
    # group: (past forms said in a reply, a tool's words for it)
    "send": ("sent emailed e-mailed texted messaged forwarded mailed notified resent called phoned rang contacted "
             "replied responded", "send sends email emails mail text sms message messages forward forwards notify "
             "notifies resend reply replies respond responds"),
    "book": ("booked reserved scheduled rescheduled arranged", "book books reserve reserves schedule schedules "
             "reschedule reschedules arrange make create creates"),
    "cancel": ("cancelled canceled voided terminated withdrawn", "cancel cancels void terminate terminates withdraw"),
    "change": ("changed updated modified amended edited moved switched corrected adjusted", "change changes update "
               "updates modify modifies amend amends edit edits move moves switch correct adjust set"),
    "refund": ("refunded reimbursed credited reversed",
               "refund refunds reimburse credit credits reverse reverses"),
    "pay": ("paid transferred charged debited topped moved sent", "pay pays transfer transfers charge charges debit top payment"),
    "create": ("created opened filed logged raised submitted registered lodged placed ordered requested",
               "create creates setup open opens file files log logs raise raises submit submits register "
               "registers lodge "
               "place places order orders request requests"),
    "close": ("closed resolved", "close closes resolve resolves"),
    "block": ("blocked frozen locked suspended unblocked unlocked unfrozen reactivated", "block blocks freeze "
              "freezes lock locks suspend suspends unblock unlock unfreeze reactivate"),
    "reset": ("reset", "reset resets"),
    "waive": ("waived removed deleted dropped cleared", "waive waives remove removes delete deletes drop clear"),
    "add": ("added enrolled subscribed unsubscribed", "add adds enrol enroll subscribe unsubscribe"),
    "apply": ("applied redeemed", "apply applies redeem redeems discount voucher coupon"),
    "activate": ("activated deactivated enabled disabled renewed extended upgraded downgraded", "activate activates "
                 "deactivate enable enables disable renew renews extend extends upgrade upgrades downgrade"),
    "escalate": ("escalated assigned referred", "escalate escalates assign assigns handoff transfer refer refers"),
    "replace": ("replaced reissued", "replace replaces reissue reissues"),
    "save": ("saved recorded", "save saves record records note notes"),
    "approve": ("approved", "approve approves"),
    "ship": ("shipped dispatched", "ship ships dispatch dispatches"),
}
# lookups said in the first person: any call of the turn backs them
_LOOKUP = frozenset(("checked double-checked verified searched looked found located retrieved fetched queried "
                     "reviewed tracked pulled confirmed consulted traced investigated examined inspected analysed "
                     "analyzed compared calculated scanned browsed").split())
# what happened to the caller's things (third person): a looked-up fact
_EVENTS = frozenset(("delivered scanned arrived departed landed left posted cleared declined rejected expired "
                     "bounced delayed diverted returned collected signed processed completed finalised finalized "
                     "issued accepted received failed fixed repaired restored reconnected stuck held taken "
                     "actioned").split())
_STATUS = (("on", "time"), ("going", "ahead"), ("in", "stock"), ("out", "of", "stock"), ("in", "transit"),
           ("out", "for", "delivery"),
           ("sold", "out"), ("fully", "booked"), ("overdue",), ("pending",), ("on", "its", "way"),
           ("on", "the", "way"), ("on", "their", "way"), ("on", "hold"), ("in", "credit"), ("in", "progress"),
           ("under", "review"), ("now", "active"), ("now", "live"), ("active", "now"), ("live", "now"),
           ("closed", "now"), ("in", "place"), ("ready",), ("back",), ("complete",), ("on", "for"),
           ("available",), ("shut",), ("underway",), ("under", "way"), ("free", "at"), ("free", "on"),
           ("free", "for"), ("up", "and", "running"), ("in", "now"), ("through", "now"), ("on", "site"))
_COMPLETION = (("all", "set"), ("all", "done"), ("all", "sorted"), ("taken", "care", "of"), ("good", "to", "go"),
               ("went", "through"), ("gone", "through"), ("come", "through"), ("came", "through"), ("sorted",),
               ("done",), ("gone", "out"), ("went", "out"), ("sorted", "out"), ("dealt", "with"),
               ("came", "back"), ("come", "back"), ("heard", "back"),
               ("gone", "across"), ("went", "across"), ("squared", "away"), ("good", "as", "done"),
               # idioms of done said of the thing or the caller: "that's all in hand", "you're all good for
               # the late check-out" (not "all good?", "it's good for two years": a term)
               ("all", "in", "hand"), ("in", "hand"), ("all", "good", "for"))
_ALL_PAST: dict[str, tuple[str, ...]] = {}  # "moved" is a change or a payment
for _group, (_past, _) in _GROUPS.items():
    for _word in _past.split():
        _ALL_PAST[_word] = (*_ALL_PAST.get(_word, ()), _group)
# said in the first person these report an act ("I've put you down for Thursday"); the
# word that must follow, when the verb alone says too little ("I got it" is "I understand")
_FIRST_PERSON_ACTS: dict[str, frozenset[str] | None] = {
    "put": None, "managed": None, "passed": None, "did": frozenset("it that this".split()),
    "got": frozenset("you him her them us".split()), "let": frozenset(),
    "made": frozenset("booking reservation appointment payment transfer change request claim complaint note "
                      "the a your".split()),
    # "I've set a reminder", "we've set your PIN" (not "I've set that up": the create below, nor "we're set")
    "set": frozenset("a an the your his her their".split())}
# what a reply offers as room ("we've space for him") and what a result says of it
_ROOM_FOR = frozenset("space room availability capacity places spaces spots vacancies".split())
_FREE_WORDS = frozenset("availability available space spaces room rooms places spots free vacancies capacity "
                        "slots tables seats".split())
_NONE_FREE = frozenset("full sold".split())
# states and the result words that say the opposite of each: a result saying one of these backs no
# such state, whatever else it says of the thing
_OPPOSITES = (
    ("available free open", "reserved sold unavailable full taken booked closed"),
    ("ready collected", "pending processing production progress awaiting waiting lab"),
    ("delivered", "transit dispatched shipped depot failed returned"),
    ("paid cleared settled", "pending overdue due outstanding failed declined unpaid"),
    ("active live", "suspended inactive cancelled expired pending blocked"),
    ("approved accepted passed", "pending declined rejected review failed refused progress"),
    ("confirmed", "pending unconfirmed awaiting provisional requested"),
    ("time", "delayed cancelled diverted"),
    # a repair done, against one still under way ("restoration status: in progress")
    ("restored fixed repaired reconnected resolved", "progress ongoing investigating underway"),
)
_FINISHED = frozenset("completed complete done finished".split())
_ARRIVED = ("arrived", "received", "ready", "delivered", "stock")  # what "they're in" says a result said
_GOT_OBJECT_THEN = frozenset("in on down booked a an onto into some the sorted over out round back up through "
                             "sent set".split())
_ON_THEIR_WAY = frozenset("heading coming going booked out round over".split())
_HAD_FOLLOWERS = frozenset(_ALL_PAST) | _LOOKUP | {"just", "already"}
_POSSESSIVES = frozenset("your the my our his her their its these those".split())


def _index(phrases: tuple[tuple[str, ...], ...]) -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {}
    for phrase in sorted(phrases, key=len, reverse=True):  # "sorted out" before "sorted"
        out.setdefault(phrase[0], []).append(phrase)
    return out


_COMPLETION_AT, _STATUS_AT = _index(_COMPLETION), _index(_STATUS)
_TOOL_WORDS = {group: frozenset(words.split()) for group, (_, words) in _GROUPS.items()}
_ANY_TOOL_WORD = frozenset().union(*_TOOL_WORDS.values())
_LOOKUP_TOOL_VERBS = frozenset("get find search lookup look list check track read fetch query show view retrieve "
                               "describe status balance availability verify plan".split())
# a tool named for what it reports, not for an act: mot_status, bus_arrivals, run_line_test, showtimes
_LOOKUP_TOOL_NOUNS = frozenset("status arrivals departures showtimes times timetable test planner search schedule "
                               "availability balance balances position forecast weather".split())

_BE = frozenset("is are was were been be being am got gets get".split())
_AUX = frozenset("have has had 'd just already now also successfully quickly personally actually finally "
                 "gone went ahead and able to been managed all fully".split())
_SUBJECT = frozenset(("i", "we"))
_NEGATION = frozenset("not never no nothing none neither nor without nobody".split())
_MODAL = frozenset("will shall would could can may might must should going gonna about want wants let need sounds hear "
                   "needs try trying happy glad please ask plan hope able to be".split())
_REPORTED = frozenset("said say mentioned told asked think thought wanted".split())
_CONDITION = frozenset("if once when whenever after until unless before whether soon".split())
_HABITUAL = frozenset("usually normally typically generally always often sometimes every daily weekly nightly "
                      "mondays tuesdays wednesdays thursdays fridays saturdays sundays weekends weekdays".split())
_DETERMINERS = frozenset("your the this that it these those my our his her their its".split())
_CLAUSE_WORDS = frozenset("but although though however whereas so because while".split())
# who, besides the agent, acts or looks things up for the caller
_STAFF = frozenset("engineer engineers team technician technicians doctor doctors gp nurse colleague colleagues bank "
                   "manager managers supervisor specialist specialists department staff pharmacist dentist "
                   "consultant lab laboratory underwriter underwriters adviser advisor advisers advisors someone "
                   "somebody surveyor inspector accountant landlord insurer office branch clinic surgery driver "
                   "drivers courier postman assessor assessors handler handlers adjuster".split())
# an arranged visit or call, said in the present: "an engineer is coming out on Friday"
_VISITS = frozenset("coming visiting calling ringing phoning popping dropping arriving".split())
_TITLES = ("dr", "doctor", "nurse", "mr", "mrs", "ms", "miss", "professor", "prof")  # "Dr Patel has reviewed it"
# participles the lists above do not name are still states or acts when said of the caller's
# things after a form of be ("the line's ported now", "the charge has been reversed", "you're
# covered") or of the agent's own act ("I've popped a credit on"); not these, which describe a
# person, say what a thing is called or meant, or report what the agent thought or heard
_NOT_ACTS = frozenset("interested concerned worried pleased delighted thrilled excited tired bored scared confused "
                      "annoyed frustrated disappointed surprised based located called named supposed used required "
                      "needed allowed permitted entitled advised recommended expected included limited related "
                      "designed meant qualified married retired experienced skilled engaged equipped prepared "
                      "determined committed involved attached noticed wanted asked hoped wondered realised realized "
                      "understood heard mentioned thought guessed figured assumed reckoned believed liked loved "
                      "enjoyed appreciated apologised apologized learned learnt listened tried attempted missed "
                      "wished preferred feared doubted considered explained said told seen spotted noted affected "
                      "protected outlined summarised summarized described clarified repeated answered suggested "
                      "offered listed gathered".split())
_STATE_PARTICIPLES = frozenset("put stuck sold bought set".split())
# irregular participles that are acts in the first person ("I've given you a credit", "I've thrown in delivery")
_FIRST_ACTS = frozenset("given thrown written brought".split())
# a failure a reply relays: a failed call's own message backs it ("sorry, that slot was just taken")
_SETBACKS = frozenset("taken declined rejected failed bounced refused unavailable full expired invalid".split())
# "we've got a table free at eight", "I have two slots available": availability only a lookup gives
_AVAILABILITY = frozenset("free available spare left open remaining stock".split())
# "covered by our returns policy": the business's rules, not an act done for the caller
_RULES = frozenset("policy guarantee warranty law terms gdpr regulations rules cover scheme".split())
# a result that says the act is not finished ("seat change requested; awaiting confirmation",
# "draft saved; not sent"): the call ran, but backs no "all done" nor the state it would make
_UNFINISHED = frozenset("pending awaiting draft unconfirmed queued ongoing".split())
# a number said roughly ("about twelve gigs", "just over 12"): a result's 12.4 grounds it
_APPROX = frozenset("about around roughly approximately nearly almost over under just some".split())
# an ordinal day ("until the nineteenth"): a result's date 2026-12-19 grounds it
_ORDINAL_WORDS = {w: n for n, w in enumerate(
    "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
    "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth".split())}
_ORDINAL_WORDS.update({"thirtieth": 30})
# what a booking puts the caller in: "you're in 14C", "you're in room 12", "you're in for twenty to four"
_PLACES = frozenset("room seat row cabin berth bay pitch lane court slot".split())
_NOT_PLURALS = frozenset("is was has does this its his as us yes plus less thus yours ours hers theirs".split())  # "seven's fully booked"
# where the caller will find it: "the label is in your inbox", "the meeting's in your calendar"
_CONTAINERS = frozenset("inbox calendar diary account basket cart app portal wallet file records email emails "
                        "statement booking order reservation policy plan system".split())
# the weather now or as a lookup says it will be: "it's pouring in Glasgow", "tomorrow looks dry"
_WEATHER = frozenset("raining pouring snowing drizzling sunny cloudy rainy windy stormy foggy icy overcast showery "
                     "humid freezing dry wet warm hot mild".split())
_WHEN = frozenset("it tomorrow today tonight weekend monday tuesday wednesday thursday friday saturday sunday "
                  "morning afternoon evening".split())
# verbs whose "that ..." is asked about or hoped for, not asserted
_UNASSERTED = frozenset("check checking ask asking ensure ensuring hope hoping verify verifying wonder wondering "
                        "doubt".split())
# the future said of the world, not offered by the agent: "they'll be with you between eight and one"
_FORECAST = frozenset("will should going to be due expected".split())
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_OF = {**{d: d for d in _WEEKDAYS}, **{d[:3]: d for d in _WEEKDAYS}}
# where, by number, as a lookup says it: "platform six", "gate 4", "lane 14 for check-in", "desk 3", "screen 2"
_NUMBERED_PLACES = frozenset("platform gate terminal stand berth bay pitch ward lane desk counter carousel dock "
                             "screen door".split())
# what follows an hour said as a bare number ("at 4 on Tuesday", "at 9 tomorrow"; not "at 4 levels")
_AFTER_HOUR = frozenset("on in tomorrow today tonight this next o'clock oclock sharp with and then for".split())
# words that cannot be the noun a participle qualifies ("reserved items are ..."; not "sent to you is")
_NOT_NOUNS = frozenset("you it that this them him her me us to by for with in on at from over up out off and or "
                       "but so".split())
# endings of nouns made of a verb (delivery, cancellation, payment, approval): a result's noun
_NOMINAL = ("y", "ies", "ion", "ions", "ment", "ments", "al", "als")
# what a booking gives the caller: "you've got a place on Thursday's class" states it was made
_HELD = frozenset("place places seat seats table slot spot room ticket tickets appointment booking reservation "
                  "space".split())
_IRREGULAR_PAST = frozenset("put took gave said told found saw brought rang spoke wrote sent left got made "
                            "did had kept".split())
# irregular participles: "the doctor has seen your results"
_IRREGULAR_PARTICIPLES = frozenset("seen taken given written spoken done".split())
# words that say nothing of the fact itself: a tool result sharing them does not back it
_RELATION_STOP = frozenset("the your you our his her their its this that these those with from into onto for and "
                           "but are was were been being has have had now just already also still then here there "
                           "number today tomorrow yesterday morning afternoon evening tonight week month year "
                           "order account booking".split())
# the future of the world, not of the agent: forecasts and timetables
_FUTURE_MARKS = frozenset("will going due expected scheduled set".split())
_FUTURE_ADVERBS = frozenset("probably likely still only also then now definitely certainly mostly".split())
_FUTURE_VERBS = frozenset("arrive depart leave land open reopen close run rain snow shine reach expire start finish "
                          "end peak clear drizzle freeze thaw".split())
_FUTURE_STATES = frozenset("open closed shut delayed late early sunny cloudy rainy dry wet windy stormy cold warm "
                           "hot mild icy foggy snowy overcast clear humid freezing showery".split())
_QUESTION_START = frozenset("would could can shall should do does did is are was were have has will what when "
                            "where which who whom whose how why may am".split())
_TAG_WORDS = frozenset("right correct not ok okay yes yeah".split())  # "..., isn't it?", "..., right?"
# words a reply and a tool result use for the same state ("on its way" ~ OUT_FOR_DELIVERY,
# "on time" ~ "no delay", "cleared" ~ SETTLED): a result in other words still backs the fact
_KIN_GROUPS = (
    "way shipped dispatched delivery route courier carrier depot van",  # not transit: trans- is transfer too
    "time scheduled delay ontime",
    "left departed departure airborne boarded",
    "landed lands arrived arrival arriving",
    "stock available availability units quantity remaining left",  # "twelve gigs left" ~ remaining_data
    "sold unavailable full fully taken longer",
    "pending processing progress review reviewing awaiting waiting queued",
    "ready collection collect bagged packed prepared dispensed",  # "bagged up and ready" ~ dispensed, ready for collection
    "credit balance owed due",  # what is owed; paid is a state reached (below)
    "active live enabled",
    "cleared settled completed posted processed paid payment",
    "declined rejected failed bounced refused",
    "cancelled canceled voided",
    "resolved closed fixed",
    "closed shut",
    "back ready reported results available",
    "confirmed booked reserved",
    "found located traced recovered",  # what a search says it found
    "delivered arrived received signed dropped",
    "wet rain rainy showers drizzle raining pouring drizzling",
    "sunny sun clear dry",
    "cold snow snowy frost icy freezing snowing",
    "warm hot mild",
)
_KIN: dict[str, frozenset[str]] = {}
_GENERAL_SUBJECTS = frozenset("refunds orders payments transfers bookings emails changes cancellations requests "
                              "tickets parcels deliveries appointments reservations".split())

# one word, a date (2026-12-05, 05/12/2026: one token, so its 12 grounds no "number 12"), a
# number (3,200 / 42.00 / 10:12) or a mark that ends a clause
_TOKEN = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?!\d)|\d{1,2}/\d{1,2}/\d{2,4}(?!\d)|"
                    r"[£$€¥#%]|\d+(?:-\d+)+(?![\w.:])|"  # 88-20417, a reference (10-12: split below)
                    r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.:]\d+)?(?!\w|\.\w)|\w+(?:['’.\-]\w+)*|"
                    r"[,;:()\u2014\u2013]")
_ISO_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")  # one token, no reference
_DATE_TIME = re.compile(r"(\d{4}-\d{1,2}-\d{1,2})T(?=\d)")  # 2026-12-05T10:12: a date, then a time
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_HOURS = re.compile(r"(?<![\d:.-])(\d{1,2})-(\d{1,2})(?![\d:.-])")  # a range of hours, "Mon-Sat 9-18"
_SPELT = re.compile(r"[a-z](?:-[a-z])+")  # letters spelt out: "D-M-V"
# a negation denies the rest of its part of a result; a forecast ("estimated ready 2027-02-18", "expected
# delivery Friday") says it is not so yet; a result that waits says so with a word of _UNFINISHED
_RESULT_NEGATIONS = ("not", "never", "no", "without", "estimated", "est", "expected", "eta")
_NEGATING_ALT = "|".join(_RESULT_NEGATIONS)  # as regex alternatives
_WAITING_ALT = "|".join(sorted(_UNFINISHED))
# bounded by letters, not \b: a result's field "pending_authorisation" says pending (_ is a word character)
_DENIED_OR_WAITING = re.compile(rf"(?<![a-z])(?:{_NEGATING_ALT}|yet|{_WAITING_ALT})(?![a-z])")
_WAITING = re.compile(rf"(?<![a-z])(?:{_WAITING_ALT})(?![a-z])")
# substring scans first: most results have none
_DENIED_OR_WAITING_MARKS = (*_RESULT_NEGATIONS, "yet", *_UNFINISHED)
# a negation and the rest of its part; the word after "yet"; a word before one that says it waits
_NOT_A = r"(?<![a-z])"
_NEGATED_SPAN = re.compile(_NOT_A + rf"(?:{_NEGATING_ALT})(?![a-z])[^;,.:|()\n]*")
_AFTER_YET = re.compile(_NOT_A + r"yet[^a-z;,.:|()\n]+([a-z]+(?:-[a-z]+)*)")
# possessive, and started only where a word starts: a chain "a-a-a-..." is one word, tried once (linear)
_BEFORE_WAIT = re.compile(r"(?<![a-z-])([a-z]++(?:-[a-z]++)*+)(?=[^a-z;,.:|()\n]+(?:"
                          + _WAITING_ALT + r")(?![a-z]))")
_RESULT_PARTS = re.compile(r"[;,.:|()\n]+")  # a parenthesis says a thing of its own
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE_MARKS = frozenset(",;:()\u2014\u2013")
_CURRENCY_SIGNS = frozenset("£$€¥")
_CURRENCY_WORDS = frozenset("pounds pound dollars dollar euros euro eur gbp usd quid pence cents rupees rupee rs inr "
                            "rand yen francs franc dirhams dirham pesos peso".split())
_MEASURE_WORDS = frozenset("% percent degrees degree celsius fahrenheit mph kph".split())
_MAJOR_UNITS = frozenset("pounds pound dollars dollar euros euro quid bucks rupees rupee rand yen francs franc dirhams "
                         "dirham pesos peso".split())
_MINOR_UNITS = frozenset("pence penny cents cent p".split())
_REFERENCE_NOUNS = frozenset("order ticket case reference ref number no confirmation booking flight gate platform "
                             "seat room account terminal invoice policy claim tracking train bus pnr pin code "
                             "#".split())
_COUNT_GENERAL = frozenset("seconds minutes hours days weeks months years nights business working ways steps options "
                           "things questions choices times moments reasons tips people adults children guests "
                           "digits characters letters words more of to or and percent".split())
_NUMBER_WORDS = {w: n for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
                      "ninety": 90, "hundred": 100, "thousand": 1000, "dozen": 12, "couple": 2})
_MEASURE = re.compile(r"[\d.]+(?:h|hrs?|mins?|s|kg|km|g|gb|mb|tb|mg|ml|cm|mm|m|k|x|p|mph|kph|kw|kwh)")
_DEGREES = re.compile(r"-?\d+(?:\.\d+)?[cf]")  # a forecast's 8C (also seat 14F: its 14 grounds little)
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)")
_CLOCK_WORD = re.compile(r"(\d{1,2})(?::(\d\d))?(am|pm)")
_CONTRACTIONS = {"won't": ("will", "not"), "can't": ("can", "not"), "cannot": ("can", "not"),
                 "shan't": ("shall", "not"), "i'm": ("i", "am"), "let's": ("let", "us")}
_SUFFIXES = {"n't": "not", "'ve": "have", "'re": "are", "'ll": "will", "'s": "is", "'m": "am", "'d": "'d"}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""


@dataclass(frozen=True)
class ToolRun:
    """One tool call of the turn: what it was given and what came back."""

    tool: str
    arguments: Any = None
    result: str = ""
    outcome: str = "ok"


@dataclass
class Turn:
    """What the reader knows besides the reply."""

    tools: Sequence[Tool] = ()
    calls: Sequence[ToolRun] = ()  # this turn's
    earlier_results: Sequence[str] = ()  # the call's tool calls before this turn (arguments and results)
    caller: str = ""  # all the caller has said in the call
    instructions: str = ""
    greeting: str = ""
    _sources: frozenset[str] | None = field(default=None, repr=False)
    _result_forms: frozenset[str] | None = field(default=None, repr=False)
    _rough: dict[bool, _Rounded] | None = field(default=None, repr=False)
    _hours: dict[bool, frozenset[int]] = field(default_factory=dict, repr=False)

    def sources(self) -> frozenset[str]:
        """Every normalised number, time and code the reply may take its specifics from."""
        if self._sources is None:
            texts = [self.caller, self.instructions, self.greeting, *self.earlier_results]
            for call in self.calls:
                texts += [_arguments_text(call.arguments), str(call.result or "")]
            self._sources = _all_forms(texts)
        return self._sources

    def result_forms(self) -> frozenset[str]:
        """The numbers and times of the call's tool results (what a stated fact may relate to)."""
        if self._result_forms is None:
            self._result_forms = _all_forms([*(str(c.result or "") for c in self.calls), *self.earlier_results])
        return self._result_forms

    def grounds(self, words: list[str], i: int, results_only: bool = False) -> bool:
        """Whether the sources (``results_only``: the tool results) hold the number at ``words[i]``:
        exactly, or, said roughly ("about twelve", "just over 12"), as the whole part of a result's
        12.4 or its nearest whole number."""
        forms = self.result_forms() if results_only else self.sources()
        own = _forms(words, i)
        if not own.isdisjoint(forms):
            return True
        hours = _rough_hours(words, i)
        if hours:  # "just after one" ~ a result's 13:05, "just before four" ~ 15:50
            if results_only not in self._hours:  # once per turn: the hours of the clock times
                self._hours[results_only] = frozenset(int(f.partition(":")[0]) for f in forms if _HH_MM.fullmatch(f))
            return not hours.isdisjoint(self._hours[results_only])
        # said roughly, or an amount said whole: "two thousand one hundred seventy rupees" for a
        # result's 2,170.02 (a reply says a bill's pounds or rupees and drops the pence or paise)
        spoken_whole = i + 1 < len(words) and words[i + 1] in _MAJOR_UNITS and words[i].isdigit()
        rough = (i and words[i - 1] in _APPROX) or (
            i >= 2 and words[i - 1] in ("a", "an") and words[i - 2] in _APPROX)  # "roughly a hundred and ..."
        if not (rough or spoken_whole) or len(own) != 1:
            return False
        if self._rough is None:
            self._rough = {}
        if results_only not in self._rough:  # once per turn, not once per number of the reply
            other = self._rough.get(not results_only)  # the same numbers when the caller said none
            same = other is not None and forms == (self.result_forms() if not results_only else self.sources())
            self._rough[results_only] = other if same and other is not None else _Rounded(forms)
        return next(iter(own)) in self._rough[results_only]

    def results_text(self) -> str:
        return " ".join([*(str(c.result or "") for c in self.calls), *self.earlier_results]).lower()


def _arguments_text(arguments: Any) -> str:
    """A call's arguments as text, dates as a tool writes them ({"date": 2026-12-18}, not a repr)."""
    if arguments is None or isinstance(arguments, str):
        return arguments or ""
    import json

    try:
        return json.dumps(arguments, default=str)
    except (TypeError, ValueError):  # a circular or odd value: its repr still holds the numbers
        return str(arguments)


_HH_MM = re.compile(r"\d{1,2}:\d\d")


def _rough_hours(words: list[str], i: int) -> set[int]:
    """The hours a clock time said roughly may be in: "(just) after one" -> 1 or 13, "(just)
    before four" -> 3 or 15 (a bare hour 1-12 after after, gone, past or before); else none."""
    hour = _whole(words[i]) if i else None
    if hour is None or not 1 <= hour <= 12 or words[i - 1] not in ("after", "gone", "past", "before"):
        return set()
    if words[i - 1] == "before":
        hour = hour - 1 or 12
    return {hour % 12, hour % 12 + 12}


class _Rounded:
    """The whole numbers a rough figure may round a number of ``forms`` to (12.4 -> 12; 3.8 -> 3, 4;
    163,240.18 -> 163,000 or 160,000, not 170,000: a rough figure rounds to the nearest at the place
    it says). Asked figure by figure (a bisection in the numbers, sorted once a turn), not listed:
    56,000 twelve-digit numbers in a call's results made 1.2 million roundings, 0.9 s a reply."""

    def __init__(self, forms: frozenset[str]) -> None:
        self.wholes: set[str] = set()  # of the decimals: 12.4 -> 12, 12.6 -> 12 and 13
        by_length: dict[int, list[int]] = {}  # by digits written: "0048812" rounds at 6 places
        for form in forms:
            whole, dot, fraction = form.partition(".")
            if not whole.isdecimal() or len(whole) > 12:
                continue
            if dot:
                self.wholes.update((whole, str(int(whole) + 1) if fraction[:1] >= "5" else whole))
            if len(whole) > 1:
                by_length.setdefault(len(whole), []).append(int(whole))
        self.by_length = {length: sorted(numbers) for length, numbers in by_length.items()}

    def __contains__(self, figure: object) -> bool:
        if figure in self.wholes:
            return True
        # a rounding is written as str(int) does: no leading zero, at most 13 digits (int() refuses 5,000)
        if not isinstance(figure, str) or not figure.isdecimal() or not figure.isascii() or len(figure) > 13 or (
                len(figure) > 1 and figure[0] == "0"):
            return False
        value = int(figure)
        for place in range(1, 12):
            unit = 10 ** place
            if value % unit:
                return False  # rounded at this place, a number ends in as many zeros
            half = unit // 2
            for length, numbers in self.by_length.items():
                if length > place:  # 163240 rounds at the tens to the ten thousands, not at its own length
                    k = bisect.bisect_left(numbers, value - half)
                    if k < len(numbers) and numbers[k] < value + half:
                        return True
        return False


def _affirmed(text: str) -> frozenset[str]:
    """The words of a result that it says happened: not those it denies ("not sent", "not yet
    issued", "no engineer booked": a negation denies the rest of its part of the result) nor
    those it says wait ("activation pending")."""
    said, unsaid = _said_counts(text)
    return frozenset(w for w, n in said.items() if n > unsaid[w])


@functools.lru_cache(maxsize=256)
def _said_counts(text: str) -> tuple[Counter[str], Counter[str]]:
    """How often each word of ``text`` occurs, and how often denied or waiting: a word is said
    when one of its occurrences is not. Regular expressions over the whole text, and each result
    read once a call, not once a reply (a call's earlier results, up to 200 of 4,000 characters, are
    the same for each of its replies). The counts are shared: read them, never change them."""
    said = Counter(_WORD.findall(text))
    if not any(mark in text for mark in _DENIED_OR_WAITING_MARKS):
        return said, Counter()
    unsaid: dict[int, str] = {}  # by where it starts: an occurrence counts once
    for span in _NEGATED_SPAN.finditer(text):
        for word in _WORD.finditer(text, span.start(), span.end()):
            unsaid[word.start()] = word.group()
    for pattern in (_AFTER_YET, _BEFORE_WAIT):
        for match in pattern.finditer(text):
            unsaid[match.start(1)] = match.group(1)
    return said, Counter(unsaid.values())


def _affirmed_of(counts: Iterable[tuple[Counter[str], Counter[str]]]) -> frozenset[str]:
    """``_affirmed`` of several results read apart (one result's negation denies nothing of the next)."""
    said: Counter[str] = Counter()
    unsaid: Counter[str] = Counter()
    for one, other in counts:
        said.update(one)
        unsaid.update(other)
    return frozenset(w for w, n in said.items() if n > unsaid[w])


def _waits(result: str) -> bool:
    # "request received; subject to depot confirmation": asked for, not done
    # (not "booked; cancellation subject to 24h notice": a term, the act is done)
    # and "requires approval in app", "needs authorisation": asked for, someone else still to say yes
    return (any(mark in result for mark in _UNFINISHED) and _WAITING.search(result) is not None) or (
        any(mark in result for mark in ("subject to", "require", "need")) and
        _SUBJECT_TO_CHECK.search(result) is not None)


_SUBJECT_TO_CHECK = re.compile(r"\b(?:subject to|requires|required|needs) (?:[a-z'-]+ ){0,2}"
                               r"(?:confirmation|approval|authori[sz]ation|review|verification|sign-off)")
_NOT_DONE_YET = "ran but its result says it is not done yet"
# a reply that says the thing is asked for, not done ("I've put the cancellation request in",
# "it's not guaranteed just yet", "the clinic still has to confirm it"): what a waiting result says
_PENDING_SAID = frozenset("request requests requested pending awaiting waiting provisional provisionally tentative "
                          "tentatively yet guaranteed approval subject".split())


_STILL_TO_COME = frozenset("confirm confirmed approve approved sign signed accept accepted".split())
_AHEAD = frozenset("to should will once when until".split())


def _reports_pending(words: list[str]) -> bool:
    """"it still has to be approved", "it still needs sign-off", "it should be confirmed within
    the hour", "once they've approved it": the sentence says the thing waits (and not, besides,
    that it is done: "I've sent the request in and it's been approved")."""
    if any(w in _STILL_TO_COME and w.endswith("ed") and _AHEAD.isdisjoint(words[max(0, n - 4): n]) and
           _NEGATION.isdisjoint(words[max(0, n - 4): n]) and "yet" not in words[n + 1: n + 3]
           for n, w in enumerate(words)):
        return False
    return not _PENDING_SAID.isdisjoint(words) or any(
        (w == "still" and not {"to", "has", "have", "needs", "need"}.isdisjoint(words[n + 1: n + 4])) or
        (w in _STILL_TO_COME and not _AHEAD.isdisjoint(words[max(0, n - 4): n])) for n, w in enumerate(words))


# a setting's value as a result writes it or a reply says it: on or off
_SWITCH_STATES = {**dict.fromkeys("on true yes enabled active activated".split(), "on"),
                  **dict.fromkeys("off false no disabled inactive deactivated".split(), "off")}
# a name starts after no letter and is short: a long result is read in one linear pass
_SETTING = re.compile(r"(?<![a-z_-])([a-z][a-z_-]{0,40})\"?\s*[:=]\s*\"?"
                      r"(on|off|true|false|yes|no|enabled|disabled|active|inactive)\b")


def _switches(results: str) -> dict[str, str]:
    """The settings a result gives, by name run together ("auto_renew: false" -> autorenew: off),
    once per turn."""
    out: dict[str, str] = {}
    for name, value in _SETTING.findall(results):
        state = _SWITCH_STATES[value]
        out[re.sub(r"[_-]", "", name)] = state
        head, _, tail = name.rpartition("_")
        if head and tail in _SWITCH_STATES:  # "wifi_enabled: true": wifi is on
            out[head.replace("_", "").replace("-", "")] = state if _SWITCH_STATES[tail] == "on" else \
                {"on": "off", "off": "on"}[state]
    return out


# what "it went out" says of a thing: these words themselves (their kin, "carrier", "on its way", say less)
_SENT_OUT = frozenset(("dispa", "shipp", "post", "sent"))  # _stem of dispatched, shipped, posted, sent
_STILL_WAITING = frozenset("awaiting pending waiting processing".split())


def _says_not_yet(words: list[str]) -> bool:
    """"Not yet", "it's still awaiting a decision", "still pending": the reply says the thing
    waits (not "still" alone: "it's still active")."""
    return any((w == "not" and n + 1 < len(words) and words[n + 1] == "yet") or
               (w == "still" and not _STILL_WAITING.isdisjoint(words[n + 1: n + 3])) or
               (w in ("awaiting", "pending") and n and words[n - 1] in _BE)
               for n, w in enumerate(words))


# things on the move whose place now only tracking gives; and how far away it is said
_MOVERS = frozenset("rider driver courier taxi cab bus train tram coach ferry van engineer technician plumber "
                    "electrician delivery parcel order food shuttle".split())
_TRAVEL_UNITS = frozenset("minutes minute mins min stops hours".split())
_CALLER_DONE = frozenset("bought sorted done renewed collected picked".split())


def _caller_did(caller: str) -> frozenset[str]:
    """The things the caller says they did themselves ("I've already bought a ticket for the
    ten fifteen"): a reply saying it back to them ("so you've got your ticket sorted") repeats
    their words, it reports nothing a tool did."""
    things: set[str] = set()
    for sentence in sentences(caller):
        if question(sentence):
            continue
        words = _words(sentence)
        for n, word in enumerate(words):
            # an act that gets the thing done ("booked", "paid", "bought", "sorted"), not "I've lost my card"
            if word in _SUBJECT and any(w in _ALL_PAST or w in _CALLER_DONE for w in words[n + 1: n + 5]):
                things.update(_stem(w) for w in words[n + 1:] if w.isalpha() and len(w) >= 4 and
                              w not in _RELATION_STOP and w not in _AUX and not w.endswith("ed") and
                              w not in _IRREGULAR_PAST and w not in _STATE_PARTICIPLES)
                break
    return frozenset(things)


def _all_forms(texts: Iterable[str]) -> frozenset[str]:
    return frozenset().union(*(_text_forms(text) for text in texts))


@functools.lru_cache(maxsize=256)
def _text_forms(text: str) -> frozenset[str]:
    """The forms of one source, once a call (its earlier results are read for each of its replies)."""
    forms: set[str] = set()
    words = _words(text)
    for i in range(len(words)):
        forms |= _forms(words, i)
    for start, end in _HOURS.findall(text):  # opening hours written "9-18": 18 is six o'clock too
        if int(start) < int(end) <= 24:
            forms |= _clock(int(start), 0, None) | _clock(int(end), 0, None)
    return frozenset(forms)


def _stem(word: str) -> str:
    """Enough of a word to match its kin: delivered, delivery -> deliv; delayed, delay -> delay;
    replied, reply -> reply. A state in progress is not the state reached: processing (-ing)
    keeps its mark, so a result saying "processing" backs no "processed"."""
    if word.endswith(("ied", "ies")) and len(word) >= 6:
        return (word[:-3] + "y")[:5]
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)][:5] + ("-ing" if suffix == "ing" else "")
    return word[:5]


_OPPOSED: dict[str, frozenset[str]] = {}
_SAME_STATE: dict[str, frozenset[str]] = {}  # a state and the others of its row ("fixed" ~ "resolved")
for _states, _against in _OPPOSITES:
    for _state in _states.split():
        _OPPOSED[_stem(_state)] = frozenset(_stem(w) for w in _against.split())
        _SAME_STATE[_stem(_state)] = frozenset(_stem(w) for w in _states.split())
for _kin in _KIN_GROUPS:
    _stems = frozenset(_stem(w) for w in _kin.split())
    for _one in _stems:
        _KIN[_one] = _KIN.get(_one, frozenset([_one])) | _stems


@dataclass(frozen=True)
class Finding:
    rule: str  # tool_aware, ungrounded_specific (pattern and judge: claims.py)
    kind: str  # action, state, lookup_fact, ungrounded_specific
    sentence: str
    token: str | None = None
    why: str = ""


# marks a reader never sees: soft hyphens, joiners, direction marks ("emai\u00adled" is "emailed"); a
# zero-width space parts words as a space does
_INVISIBLE = {**dict.fromkeys(map(ord, "\u00ad\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060"
                                     "\u2066\u2067\u2068\u2069\ufeff")), ord("\u200b"): " "}
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")  # full-width, Arabic-Indic, ...: a number all the same
_UNPLAIN = re.compile(r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]|(?![0-9])\d")


def _plain(text: str) -> str:
    """``text`` as it is read: invisible marks gone, every decimal digit written 0-9 ("£１２３" is £123)."""
    if text.isascii() or _UNPLAIN.search(text) is None:  # one scan in C: most text has none
        return text
    return _OTHER_DIGIT.sub(lambda m: str(int(m.group())), text.translate(_INVISIBLE))


def _words(text: str) -> list[str]:
    """Lower-case words, contractions opened ("I've" -> i, have; "isn't" -> is, not)."""
    out: list[str] = []
    for raw in _TOKEN.findall(_DATE_TIME.sub(r"\1 ", _plain(text).replace("’", "'"))):
        word = raw.lower()
        if word in _CONTRACTIONS:
            out += _CONTRACTIONS[word]
            continue
        if "-" in word and (all(part in _NUMBER_WORDS or part in _DIGIT_WORDS or part in _ORDINAL_WORDS
                                for part in word.split("-")) or _hyphen_range(word)):  # twenty-seventh: 27th
            out += word.split("-")  # forty-five -> forty five -> 45 (below); 10-12 days: two numbers
            continue
        if "-" in word and word.partition("-")[2] in _CURRENCY_WORDS and _number(word.partition("-")[0]):
            out += word.split("-", 1)  # "a ten-pound credit": an amount
            continue
        apostrophe = word.rfind("'")
        if apostrophe > 0:
            suffix = word[apostrophe - 1:] if word.endswith("n't") else word[apostrophe:]
            if suffix in _SUFFIXES:
                # "can n't" (a model's typo) leaves no word before "n't": an empty word ended the check
                out += [w for w in (word[: len(word) - len(suffix)], _SUFFIXES[suffix]) if w]
                continue
        out.append(word)
    return _ordinals(_merge_amounts(_merge_numbers(_spoken_digits(out))))


_DIGIT_WORDS = {**{w: str(n) for w, n in _NUMBER_WORDS.items() if n < 10}, "oh": "0"}


def _spoken_digits(words: list[str]) -> list[str]:
    """A code or number said digit by digit is one token, as a tool writes it: "four four eight
    two" -> 4482, "nine-one-oh" -> 910, and after letters spelt out ("B-K nine one oh", "D-M-V
    four four eight two") one code, bk910 (three digits or more: "two two" is no code; not
    within numbers said in groups, "nine oh two thirty" = 902.30)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and words[j] in _DIGIT_WORDS and (j > i or words[j] != "oh"):
            j += 1
        # not a part of amounts or times said in groups: "twenty-three oh five forty", "nine oh two thirty"
        grouped = (out and out[-1] in _NUMBER_WORDS) or (j < len(words) and words[j] in _NUMBER_WORDS)
        if j - i < 3 or grouped:
            out.append(words[i])
            i += 1
            continue
        digits = "".join(_DIGIT_WORDS[w] for w in words[i:j])
        letters = 0  # "I N C zero zero four ...": letters said one by one
        while letters < len(out) and len(out[-1 - letters]) == 1 and out[-1 - letters].isalpha():
            letters += 1
        if letters >= 2:
            out[-letters:] = ["".join(out[-letters:]) + digits]
        elif out and _SPELT.fullmatch(out[-1]):
            out[-1] = out[-1].replace("-", "") + digits
        else:
            out.append(digits)
        i = j
    return out


_SAID_PLACES = 12


def _ordinals(words: list[str]) -> list[str]:
    """"the nineteenth", "the twenty-first" -> 19th, 21st: a day, as a tool writes it in a date
    (not "the first time", "a second": only past the second, or after twenty or thirty); and
    a decimal said aloud, "twelve point four" -> 12.4."""
    out: list[str] = []
    said_decimals: set[str] = set()  # decimals said aloud, which a following digit extends
    for word in words:
        digit = _whole(word) if _whole(word) is not None else 10
        if len(out) >= 2 and out[-1] == "point" and _whole(out[-2]) is not None and digit < 10:
            out[-2:] = [f"{_whole(out[-2])}.{digit}"]  # "twelve point four" -> 12.4, as a tool writes it
            said_decimals.add(out[-1])
            continue
        # a decimal said aloud has a few places: a run "point one five five five ..." grew one string
        # a word at a time (quadratic: 100 k characters took 2 s); past _SAID_PLACES they are words
        if out and digit < 10 and out[-1] in said_decimals and len(out[-1].partition(".")[2]) < _SAID_PLACES:
            out[-1] = f"{out[-1]}{digit}"  # "four point one five" -> 4.15
            said_decimals.add(out[-1])
            continue
        value = _ORDINAL_WORDS.get(word)
        # "twenty-first": the tens stay a word when said alone ("twenty"), a digit after a merge
        tens = {"20": 20, "30": 30, "twenty": 20, "thirty": 30}.get(out[-1]) if out else None
        if value is not None and tens is not None and 1 <= value <= 9 and tens + value <= 31:
            out[-1] = f"{tens + value}th"
        elif value is not None and value >= 3 and out and out[-1] == "the":
            out.append(f"{value}th")
        else:
            out.append(word)
    return out


def _hyphen_range(word: str) -> bool:
    """"10-12", "9-5": a range of two small numbers; "88-20417" (5 digits or more) is one reference."""
    return word[0].isdigit() and sum(c.isdigit() for c in word) < 5


def _merge_numbers(words: list[str]) -> list[str]:
    """"three thousand two hundred" -> "3200" (the caller says it, a tool writes 3200). A
    number ends where a new one starts ("forty two ninety nine" is 42 and 99, not 141), and
    two spoken numbers side by side are one price or clock time: "four forty" -> "4~40"
    (4.40 or 4:40), "forty-two ninety-nine" -> "42~99" (a tool writes 42.99 or 16:40)."""
    out: list[str] = []
    spoken: list[bool] = []  # whether out[k] is a number said in words
    i = 0
    while i < len(words):
        j, total, current, small = i, 0, 0, 0  # small: the part below a hundred said so far
        while j < len(words):
            w = words[j]
            if (w == "and" and j > i) or (w == "," and j > i and words[j - 1] == "thousand" and
                                          j + 1 < len(words) and words[j + 1] in _NUMBER_WORDS):
                j += 1  # "forty-eight thousand, three hundred": one number said with a pause
                continue
            value = _NUMBER_WORDS.get(w)
            if value is None:
                break
            if w in ("hundred", "thousand"):
                if (small == 0 and current == 0 and j > i) or max(current, total) >= 10 ** 15:
                    break  # the second: "hundred hundred ..." (a model stuck on a word) is no number said
                if w == "hundred":
                    current, small = max(current, 1) * 100, 0
                else:
                    total, current, small = total + max(current, 1) * 1000, 0, 0
            elif small == 0 or (small >= 20 and small % 10 == 0 and value < 10):
                current, small = current + value, small + value
            else:
                break  # "forty two | ninety nine", "four | forty"
            j += 1
        while j > i and words[j - 1] in ("and", ","):  # "two hundred and then": the "and" is not the number's
            j -= 1
        run = [w for w in words[i:j] if w not in ("and", ",")]
        if words[i] == "oh" and out and spoken[-1] and 1 <= int(_number(out[-1]) or 0) <= 99 and \
                not (len(out) >= 2 and spoken[-2] and len(_number(out[-1]) or "") == 1 and
                     len(_number(out[-2]) or "") == 1) and \
                i + 1 < len(words) and 0 < _NUMBER_WORDS.get(words[i + 1], 0) < 10 and \
                not 0 <= _NUMBER_WORDS.get(words[i + 2] if i + 2 < len(words) else "", -1) < 10:
            # "eleven oh two" -> 11~02 (1102, 11:02); not a code said digit by digit ("four oh nine one two")
            out[-1], spoken[-1] = f"{_number(out[-1])}~0{_NUMBER_WORDS[words[i + 1]]}", False
            i += 2
            continue
        if run and out and "~" in out[-1] and out[-1].count("~") == 1 and len(out[-1]) <= 6 and \
                run[-1] not in ("hundred", "thousand") and 10 <= total + current <= 99:
            # a third group: "eleven oh two | thirty-five", "eighteen forty-two | sixty" -> 1102.35, 1842.60
            head, _, tail = out[-1].partition("~")
            out[-1], spoken[-1] = f"{head}{tail}.{total + current:02d}", False
            i = j
            continue
        if len(run) >= 2 or (run and run[0] in _NUMBER_WORDS and run[0] not in ("dozen", "couple")):
            value = str(total + current) if len(run) >= 2 else run[0]
            head = int(out[-1]) if out and spoken[-1] and out[-1].isdigit() else 0
            if head >= 1000 and 1 <= head % 1000 <= 9 and 10 <= total + current <= 99 and len(run) <= 2 and \
                    run[-1] not in ("hundred", "thousand") and "and" not in words[max(0, i - 2): i]:
                # "seven thousand two fifty" -> 7250: the hundreds said as a digit before the tens
                out[-1], spoken[-1] = str(head - head % 1000 + head % 1000 * 100 + total + current), False
                i = j
                continue
            pair = _spoken_pair(out[-1] if out and spoken[-1] else "", total + current, run)
            if pair is not None:
                out[-1], spoken[-1] = pair, False
            else:
                out.append(value)
                spoken.append(True)
            i = j
        else:
            out.append(words[i])
            spoken.append(False)
            i += 1
    return out


def _spoken_pair(first: str, second: int, run: list[str]) -> str | None:
    """"four" then "forty" -> "4~40": hours or pounds, then minutes or pence (10 to 99)."""
    head = _NUMBER_WORDS.get(first, int(first) if first.isdigit() else None)
    if head is None or not 1 <= head <= 999 or not 10 <= second <= 99 or run[-1] in ("hundred", "thousand"):
        return None
    return f"{head}~{second:02d}"


def _merge_amounts(words: list[str]) -> list[str]:
    """Amounts with a sub-unit as one number: "118 pounds 40" and "1240 euros and 17 cents"
    -> "118.40 pounds" / "1240.17 euros" (a tool writes 118.40); "quarter to 3" -> "2:45"."""
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        clock = _clock_phrase(words, i)
        if clock is not None:
            out.append(clock)
            i += 3
            continue
        merged = _amount_at(words, i)
        if merged is not None:
            amount, end = merged
            out += [amount, words[i + 1]]
            i = end
            continue
        out.append(word)
        i += 1
    return out


_AT_TIME = frozenset("at by around about until till before after leaves leaving departs arrives lands".split())
_SPOKEN_MINUTES = {"quarter": 15, "half": 30, "five": 5, "ten": 10, "twenty": 20, "25": 25}


def _clock_phrase(words: list[str], i: int) -> str | None:
    """"quarter to three" -> 2:45, "ten past twelve" -> 12:10, "at ten to six" -> 5:50 (not
    "five to six weeks", "open ten to six")."""
    minute = _SPOKEN_MINUTES.get(words[i])
    if minute is None or i + 2 >= len(words) or words[i + 1] not in ("to", "past"):
        return None
    hour = _number(words[i + 2]) if words[i + 2][:1].isdigit() or words[i + 2] in _NUMBER_WORDS else None
    after = words[i + 3] if i + 3 < len(words) else ""
    if hour is None or not hour.isdigit() or not 1 <= int(hour) <= 12 or (minute == 30 and words[i + 1] == "to") \
            or after in _COUNT_GENERAL or (after.isalpha() and after.endswith("s")):
        return None
    before = words[i - 1] if i else ""
    if words[i + 1] == "to" and (before in ("from", "between") or (minute != 15 and before not in _AT_TIME)):
        return None  # "open from ten to six" is a range
    h = int(hour)
    if words[i + 1] == "to":
        h, minute = (h - 2) % 12 + 1, 60 - minute
    return f"{h}:{minute:02d}"


def _amount_at(words: list[str], i: int) -> tuple[str, int] | None:
    """The amount "N major [and] M [minor]" starting at ``i`` and where it ends, or None."""
    if i + 2 >= len(words) or words[i + 1] not in _MAJOR_UNITS:
        return None
    whole = _number(words[i]) if words[i][:1].isdigit() or words[i] in _NUMBER_WORDS else None
    j = i + 3 if words[i + 2] == "and" else i + 2
    if whole is None or "." in whole or j >= len(words):
        return None
    part = _number(words[j]) if words[j][:1].isdigit() or words[j] in _NUMBER_WORDS or "-" in words[j] else None
    if part is None or not part.isdigit() or int(part) >= 100:
        return None
    after = words[j + 1] if j + 1 < len(words) else ""
    if after in _MINOR_UNITS:
        return f"{whole}.{int(part):02d}", j + 2
    # "118 pounds 40, due ..." (no sub-unit word), but not "20 pounds and 3 bags"
    if words[j - 1] == "and" or after in _COUNT_GENERAL or (after.isalpha() and after.endswith("s") and
                                                             after not in _NOT_PLURALS):
        return None  # "four pounds fifty's been refunded": fifty, then is
    return f"{whole}.{int(part):02d}", j + 1


def _number(text: str) -> str | None:
    """3,200 -> 3200; 42.00 -> 42; 4.50 -> 4.5; ten -> 10."""
    if text in _NUMBER_WORDS:
        return str(_NUMBER_WORDS[text])
    if "-" in text:  # twenty-five
        parts = text.split("-")
        if len(parts) == 2 and parts[0] in _NUMBER_WORDS and parts[1] in _NUMBER_WORDS:
            return str(_NUMBER_WORDS[parts[0]] + _NUMBER_WORDS[parts[1]])
        return None
    plain = text.replace(",", "")
    if not _DECIMAL.fullmatch(plain):
        return None
    # as text, not float: a 400-digit number is a number too (float() makes it inf)
    whole, _, fraction = plain.partition(".")
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def _clock(hour: int, minute: int, meridiem: str | None) -> set[str]:
    if meridiem == "pm" and hour < 12:
        hours = {hour + 12}
    elif meridiem == "am" and hour == 12:
        hours = {0}
    elif meridiem is None and 1 <= hour <= 11:
        hours = {hour, hour + 12}  # 9:40 may be either
    else:
        hours = {hour}
    forms = {f"{h}:{minute:02d}" for h in hours}
    if minute == 0:
        forms.add(str(hour))  # "come at 3" grounds "3 pm"
        if hour > 12:
            forms.add(str(hour - 12))  # and a result's 15:00 grounds "at three"
    return forms


def _forms(words: list[str], i: int) -> set[str]:
    """The normalised forms of the number, time or code at ``words[i]`` (empty if none)."""
    word = words[i]
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if "~" in word:  # "four forty": 4.40, 440, 4:40 or 16:40
        head, _, tail = word.partition("~")
        forms = {str(_number(f"{head}.{tail}")), str(int(head) * 100 + int(tail))}  # or 389 ("three eighty-nine")
        if int(head) < 24 and int(tail) < 60:
            forms |= _clock(int(head), int(tail), nxt if nxt in ("am", "pm") else None)
        return forms
    if _ISO_DATE.fullmatch(word):  # its day grounds "the 19th" (and no bare 19); its year "twenty twenty-eight"
        return {f"day:{int(word.rsplit('-', 1)[1])}", str(int(word.split("-", 1)[0])), *_weekday(word)}
    if word in _WEEKDAY_OF:  # "Thu" grounds "Thursday"
        return {f"dow:{_WEEKDAY_OF[word]}"}
    if _ORDINAL.fullmatch(word):  # as text: a 5,000-digit "ordinal" is no int
        return {f"day:{word[:-2].lstrip('0') or '0'}"}
    if word[0].isdigit() and "-" in word and not _ISO_DATE.fullmatch(word):  # a reference: 88-20417 = 8820417
        return {word.replace("-", ""), *(run for run in word.split("-") if len(run) >= 3)}
    if ":" in word and word[0].isdigit():
        hour, _, minute = word.partition(":")
        if len(hour) <= 2 and len(minute) == 2 and hour.isdigit() and minute.isdigit() and int(hour) < 24 \
                and int(minute) < 60:
            return _clock(int(hour), int(minute), nxt if nxt in ("am", "pm") else None)
        return set()
    clock = _CLOCK_WORD.fullmatch(word)
    if clock:
        return _clock(int(clock[1]), int(clock[2] or 0), clock[3])
    number = _number(word)
    if number is not None:
        if nxt in ("am", "pm") and len(number) <= 2 and number.isdigit() and 1 <= int(number) <= 12:
            return _clock(int(number), 0, nxt)
        if nxt in ("o'clock", "oclock") and len(number) <= 2 and number.isdigit() and 1 <= int(number) <= 12:
            return _clock(int(number), 0, None)  # "eleven o'clock": 11:00 or 23:00
        if nxt in _MINOR_UNITS and number.isdigit() and len(number) <= 2:
            return {number, str(_number(f"0.{int(number):02d}"))}  # "ninety-nine pence": a result's 0.99
        prev = words[i - 1] if i else ""
        if number.isdigit() and len(number) <= 2 and 1 <= int(number) <= 31 and (
                nxt[:3] in _MONTHS or prev[:3] in _MONTHS or prev == "day"):
            return {number, f"day:{int(number)}"}  # "27 December", "Dec 27", "day 14": a day, as "the 27th" says it
        if word.startswith("0") and word.isdigit() and len(word) >= 3:
            return {number, word}  # 0048812, as a code's digits are written
        if prev in _NUMBERED_PLACES and number.isdigit():  # "Terminal 5", as a result writes it: T5
            return {number, f"{prev[0].upper()}{number}"}
        return {number}
    if any(c.isdigit() for c in word) and any(c.isalpha() for c in word):
        code = re.sub(r"[^0-9a-z]", "", word).upper()
        forms = {code}
        leading = re.match(r"\d+(?:\.\d+)?", word)
        if leading and (_MEASURE.fullmatch(word) or _DEGREES.fullmatch(word)):  # 18.4GB = 18.4 GB, 8C = 8 degrees
            forms.add(str(_number(leading[0])))
        forms.update(run for run in re.findall(r"\d{3,}", word))
        return forms
    return set()


def _progressive(participle: str) -> str:
    """processed -> processing, shipped -> shipping: the state under way a "being ..." says."""
    return (participle[:-2] if participle.endswith("ed") else participle) + "ing"


def _weekday(iso: str) -> set[str]:
    """The weekday of a date a tool writes (2027-03-11 grounds "Thursday")."""
    import datetime

    try:
        year, month, day = (int(part) for part in iso.split("-"))
        return {f"dow:{_WEEKDAYS[datetime.date(year, month, day).weekday()]}"}
    except ValueError:
        return set()


def _specific(words: list[str], i: int) -> bool:
    """Whether ``words[i]`` is an account-specific detail: an amount, a percentage, a
    clock time, a code or reference number, a long number or a count of things."""
    word = words[i]
    prev = words[i - 1] if i else ""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if _ORDINAL.fullmatch(word):  # "the fifteenth": the day of an event, as a result's date gives it
        return len(word) <= 4 and 1 <= int(word[:-2]) <= 31
    if "~" in word or (word[0].isdigit() and "-" in word and not _ISO_DATE.fullmatch(word)):  # "four forty", "88-20417"
        return True
    if any(c.isdigit() for c in word) and any(c.isalpha() for c in word):
        return bool(_CLOCK_WORD.fullmatch(word)) or (len(word) >= 3 and not _MEASURE.fullmatch(word))
    number = _number(word) if (word[0].isdigit() or word in _NUMBER_WORDS or "-" in word) else None
    if number is None:
        return ":" in word and word[0].isdigit()
    digits = word[0].isdigit()
    if prev in _CURRENCY_SIGNS or nxt in _CURRENCY_WORDS or nxt in ("%", "percent") or _rate(words, i):
        return True
    if digits and (nxt in ("am", "pm") or prev == "#" or prev in _REFERENCE_NOUNS):
        return True
    if prev in _NUMBERED_PLACES and number.isdigit():  # "platform six", "gate 4": where, as a lookup says
        return True
    if digits and "." in word:
        return True
    if digits and len(number) >= 3 and not (len(number) == 4 and 1900 <= int(number) <= 2100):
        return nxt not in _COUNT_GENERAL
    # the time of an event: "your appointment is at 3", "it lands at nine tomorrow"
    if _event_time(words, i, number) or (nxt in ("o'clock", "oclock") and number.isdigit() and len(number) <= 2):
        return True  # "at 3", "your eleven o'clock"
    if _arrival_in(words, i):  # "he'll be with you in ten minutes": an ETA, as tracking gives it
        return True
    # a count: "two rooms left", "3 results", "5 points"
    if number in ("0", "1") or (not digits and word in ("hundred", "thousand", "dozen", "couple")):
        return False
    following = words[i + 1: i + 3]
    if any(w in ("left", "remaining", "available", "stock") for w in following):
        return True
    return (bool(nxt) and nxt.isalpha() and not any(w in _COUNT_GENERAL for w in following)
            and any(w.isalpha() and w.endswith("s") and w not in _NOT_PLURALS for w in following))


_DUE_WHEN = frozenset("next on in by back this tomorrow today tonight at before".split())
# room said as a quantity ("plenty of seats", "a few tables", "loads of space") and what may be booked
_PLENTY = frozenset("plenty lots loads few several couple handful".split())
_BOOKABLE = frozenset("seat seats table tables slot slots spot spots room rooms place places space spaces ticket "
                      "tickets appointment appointments unit units pitch pitches cabin cabins berth berths".split())


def _room_said(words: list[str], k: int) -> int | None:
    """Where the thing is in "(still) plenty of seats", "a few tables free" from ``k`` on, or None."""
    while k < len(words) and words[k] in ("still", "now", "only", "just", "a", "quite"):
        k += 1
    if k >= len(words) or words[k] not in _PLENTY:
        return None
    for n in range(k + 1, min(len(words), k + 5)):
        if words[n] in _BOOKABLE:
            return n
    return None


# what a charge or a credit on the caller's account is, when a reply names who it is from or to
_MONEY_MOVES = frozenset("payment payments charge charges refund refunds deposit deposits pre-authorisation "
                         "pre-authorization preauthorisation authorisation authorization hold debit debits transfer "
                         "transfers credit credits fee fees subscription".split())


def _said_to_be(words: list[str], i: int) -> bool:
    """"(that|it|the 40) is a (monthly) payment ...": the thing said to be a charge of someone's, a
    determiner and at most one word before it (not "you can make a payment to ...")."""
    k = i - 1
    if k >= 0 and words[k] not in ("a", "an", "the", "your"):
        k -= 1  # one word between: "a monthly payment", "an annual fee"
    return k >= 1 and words[k] in ("a", "an", "the", "your") and words[k - 1] in ("is", "are", "was", "were")


_ETA_WHEN = frozenset("in within by before between around about this today tomorrow tonight shortly soon "
                      "on at".split())
_ETA_UNITS = frozenset("minutes minute mins min hours hour".split())
_ARRIVING = frozenset("arrive arrives arriving arrival here there".split())


def _arrival_in(words: list[str], i: int) -> bool:
    """The minutes or hours until someone or something arrives: "he'll be with you in ten minutes",
    "it's arriving in about 20 minutes" (not "it takes ten minutes", "open in two hours")."""
    if i + 1 >= len(words) or words[i + 1] not in _ETA_UNITS:
        return False
    k = i - 1
    while k >= 0 and i - k <= 2 and words[k] in _APPROX:  # "in just about ten": a bounded look-back
        k -= 1
    if k < 0 or words[k] not in ("in", "within"):
        return False
    before = words[max(0, k - 4): k]
    return not _ARRIVING.isdisjoint(before) or before[-2:] == ["with", "you"]


_STREETS = frozenset("road rd street st lane avenue ave drive close crescent terrace square row gardens grove "
                     "parade hill".split())


def _address_at(words: list[str], k: int) -> bool:
    """A street address starts at ``k``: a house number, then a street ("14 Harbour Road")."""
    return k < len(words) and _whole(words[k]) is not None and not _STREETS.isdisjoint(words[k + 1: k + 4])


def _asks_about(words: list[str], at: int) -> bool:
    """Whether the "that" at ``at`` starts what a verb before it asks about or hopes for ("checking with
    the surgery that ..."; not "the check for that was mailed": a noun, and "that" its subject)."""
    return any(words[k] in _UNASSERTED and (k == 0 or words[k - 1] not in _DETERMINERS | {"a", "an"})
               for k in range(max(0, at - 4), at))


_MONTHS = frozenset("jan feb mar apr may jun jul aug sep oct nov dec".split())
_QUEUES = frozenset("list queue line waitlist waiting".split())


def _rank(words: list[str], i: int) -> int | None:
    """The place said at ``i`` in a queue or list ("third on the list", "number 4 in the queue"), or None."""
    place = _ORDINAL_WORDS.get(words[i])
    k = i + 1
    if words[i] == "number" and i + 1 < len(words):
        place, k = _whole(words[i + 1]), i + 2
    if place is None or place < 1 or k >= len(words) or words[k] not in ("on", "in"):
        return None
    return place if not _QUEUES.isdisjoint(words[k + 1: k + 4]) else None


def _noun_phrase(words: list[str]) -> bool:
    """Whether ``words`` (what follows "after" or "before", up to the word read) are a noun phrase
    ("your eleven o'clock", "the 15th"), not a clause ("the engineer has been", "you confirm")."""
    return bool(words) and (words[0] in _POSSESSIVES or _is_time(words[0])) and not any(
        w in _BE or w in ("have", "has", "had", "you", "i", "we", "they") or w.endswith("ed") for w in words[:4])


def _here_for_you(words: list[str], i: int) -> bool:
    """After "sat", "sitting" or "waiting": where the caller can have it ("here", "in your savings",
    "at the front desk", "for you"), not what it waits on ("waiting for approval", "with the team")."""
    nxt = words[i + 1: i + 3]
    if words[i] == "waiting":
        return nxt == ["for", "you"] or nxt[:1] == ["here"]
    return bool(nxt) and (nxt[0] in ("here", "there") or (nxt[0] in ("in", "at") and len(nxt) > 1 and
                                                           nxt[1] in ("your", "the")))


def _named(word: str) -> bool:
    """A person or a place by name after "with" ("in with Aoife"), not "with a chance", "with us"."""
    return word.isalpha() and word not in _DETERMINERS and word not in _NOT_NOUNS and word not in (
        "a", "an", "some", "any", "no", "everyone")


def _forecast_day(words: list[str], i: int) -> bool:
    """A weekday in a clause that says what will happen ("they'll be round this Thursday"; not
    "Tuesday the eighth": the date says which day, and a result may write it without its year)."""
    dated = i + 2 < len(words) and words[i + 1] == "the" and _ORDINAL.fullmatch(words[i + 2]) is not None
    if words[i] not in _WEEKDAYS or dated:
        return False
    start = max(0, i - LOOK_BACK)
    # or a visit said in the present: "he's coming out to you Tuesday morning"
    return not {"will", "should"}.isdisjoint(words[start: i]) or any(
        words[n] in _VISITS and words[n - 1] in ("is", "are") for n in range(max(1, start), i))


def _event_time(words: list[str], i: int, number: str) -> bool:
    """The hour of an event said bare: "at 3", "by about four", "open until 9 tonight", "between eight
    and one" (not "at 4 levels", "between two and three weeks")."""
    if not (number.isdigit() and len(number) <= 2 and 1 <= int(number) <= 12):
        return False
    nxt = words[i + 1] if i + 1 < len(words) else ""
    prev = words[i - 1] if i else ""
    if prev in _APPROX and i >= 2:
        prev = words[i - 2]
    if prev in ("at", "by", "until", "till") and (not nxt or nxt in _AFTER_HOUR):
        return True
    if prev == "between" and nxt == "and" and i + 2 < len(words):  # the first of a range of hours
        end, after = _whole(words[i + 2]), words[i + 3] if i + 3 < len(words) else ""
        return end is not None and 1 <= end <= 12 and (not after or after in _AFTER_HOUR)
    return False


def _amount(words: list[str], i: int) -> bool:
    """A price, a percentage or a measure: "£40", "40 pounds", "5%", "12 degrees", "another 12 a day"."""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    return (i > 0 and words[i - 1] in _CURRENCY_SIGNS) or nxt in _CURRENCY_WORDS or nxt in _MEASURE_WORDS or \
        _rate(words, i)


_PERIODS = frozenset("day night week month year hour person head adult child room".split())
# what a price said with no currency follows: "it's 12 a night", "another 12 a day", "costs 30 per month"
_PRICED = frozenset("another extra additional plus only just is are be was costs cost costing charge for".split())


def _rate(words: list[str], i: int) -> bool:
    """A price by the day, night or head said with no currency: "full cover would be another 12 a
    day" (not "take two a day", "open 24 hours a day")."""
    return i + 2 < len(words) and i > 0 and words[i + 1] in ("a", "an", "per") and words[i + 2] in _PERIODS and \
        words[i - 1] in _PRICED and _number(words[i]) is not None


def _clauses(words: list[str]) -> list[list[str]]:
    out, current = [], []
    for word in words:
        if word in _CLAUSE_MARKS or word in _CLAUSE_WORDS:
            if current:
                out.append(current)
            current = []
        else:
            current.append(word)
    if current:
        out.append(current)
    return out


def _phrase_at(words: list[str], i: int, phrases: dict[str, list[tuple[str, ...]]]) -> tuple[str, ...] | None:
    for phrase in phrases.get(words[i], ()):
        if tuple(words[i: i + len(phrase)]) == phrase:
            return phrase
    return None


def _blocked(words: list[str], i: int, allow_negation: bool = False, allow_modal: bool = False,
             allow_future: bool = False) -> bool:
    """A negation, modal, condition or habit in the few words before ``i`` (``allow_*``: those
    do not count; ``allow_future``: will, should, going to)."""
    start = max(0, i - LOOK_BACK)
    before = words[start: i]
    for n, word in enumerate(before):
        nxt = before[n + 1] if n + 1 < len(before) else (words[i] if i < len(words) else "")
        if word == "that" and nxt not in _BE and nxt not in _AUX and _asks_about(words, start + n):
            return True  # "worth checking with the surgery that it's been sent": asked about, not said
        if word in ("until", "till") and _is_time(nxt):
            continue  # "late checkout until two is sorted": how long, not a condition
        if word in ("after", "before") and _noun_phrase(before[n + 1:]):
            continue  # "nothing in after your eleven o'clock": when, not a condition
        if word == "about" and (nxt in _NUMBER_WORDS or nxt[:1].isdigit()):
            continue  # "about twelve gigabytes": a rough number, not "about to" nor "about done"
        if word in _CONDITION or word in _HABITUAL:
            return True
        if word in _NEGATION and not allow_negation:
            if word == "no" and n + 1 < len(before) and before[n + 1] == "longer":
                continue  # "no longer active" states a change
            return True
        if word in _REPORTED and n and before[n - 1] == "you":
            return True  # "you said you were charged twice": the caller's words, not a finding
        if allow_modal and (word in _MODAL or word == "'d"):
            continue
        if allow_future and word in _FORECAST:
            continue
        if word == "going" and nxt != "to":
            continue  # "the 10:20 is going from platform six": a fact, not "going to"
        if word in _MODAL:
            if word in ("able", "to") and n and before[n - 1] in ("been", "was", "were", "managed", "able"):
                continue  # "I was able to cancel it" did it
            if word == "be" and n and before[n - 1] not in _MODAL:
                continue
            if word == "to" and n and before[n - 1] in ("have", "has", "ought", "got"):
                return True  # "they have to be changed with the site": an obligation, not a fact
            if word in ("to", "be"):
                continue  # only after a modal ("will be sent"), which counts by itself
            return True
        if word == "'d" and not (n + 1 < len(before) and before[n + 1] in _HAD_FOLLOWERS):
            return True  # I'd send it (not: I'd already sent it)
    return False


def _code(word: str) -> bool:
    """A seat, room or booking code said alone: 14C, B12 (digits and letters, not 12pm or 5kg)."""
    return any(c.isdigit() for c in word) and any(c.isalpha() for c in word) and not _CLOCK_WORD.fullmatch(word) \
        and not _MEASURE.fullmatch(word) and not _ORDINAL.fullmatch(word)


def _whole(word: str) -> int | None:
    """"four" or "4" -> 4; anything else None."""
    if word in _NUMBER_WORDS:
        return _NUMBER_WORDS[word]
    # isdecimal, not isdigit: "²" is a digit int() refuses (a reply's "m²" ended the check)
    return int(word) if word.isdecimal() and len(word) <= 6 else None


def _you_have_got(words: list[str], i: int) -> bool:
    """"You've got a new card on the way", "you have a parcel out for delivery": the caller's thing
    in a state, said as theirs (a few words back, no verb between)."""
    for j in range(i - 1, max(-1, i - LOOK_BACK), -1):
        if words[j] in ("have", "got") and j and words[j - 1] in ("you", "have"):
            return True
        if words[j] in _BE or words[j] in _CLAUSE_WORDS or words[j].endswith("ed"):
            return False
    return False


def _spoken_code(words: list[str], i: int) -> bool:
    """A seat said aloud: "fourteen C" (a number, then one letter that is no word)."""
    return i + 1 < len(words) and _whole(words[i]) is not None and len(words[i + 1]) == 1 and \
        words[i + 1] in "bcdefghjk"


def _is_time(word: str) -> bool:
    """A time or a day a duration runs to: two, 2pm, 14:00, noon, Tuesday, the 19th."""
    return (word in _NUMBER_WORDS or word[:1].isdigit() or (word in _WHEN and word != "it") or word in ("noon", "midday", "midnight")
            or word in _ORDINAL_WORDS)


def _subject(words: list[str], i: int) -> str:
    """``first``: I/we before the verb (auxiliaries and adverbs between); ``be``: a form
    of be before it (passive, state); ``you``: the caller did it; else ``other``."""
    j = i - 1
    seen_be = False
    while j >= 0 and i - j <= LOOK_BACK:
        word = words[j]
        if word in _SUBJECT:
            return "first"
        if word == "you":
            if j and words[j - 1] in ("is", "was") and all(w in ("all", "now", "just", "already")
                                                           for w in words[j + 1: i]):
                return "be"  # "that's you (all) booked in": the agent's act, said of the caller
            return "be" if seen_be else "you"
        if word in _BE or word == "is":
            seen_be = True
        elif word == "and" and not seen_be and j == i - 1 and \
                _SUBJECT.intersection(words[max(0, j - 2 * LOOK_BACK): j]):
            return "first"  # "I've logged it and escalated it": the first verb's subject
        elif word not in _AUX and word not in ("now", "already", "just"):
            break
        j -= 1
    return "be" if seen_be else ("start" if j < 0 else "other")


_HEDGES = frozenset("should will must would 'd".split())
# what may stand between the hedge and the state: "it'll have been paid", "they should be back",
# "it must have all gone through"
_HEDGED_VERB = frozenset("have be been all already gone come got".split())


def _hedged_now(words: list[str], i: int) -> bool:
    """"You should be all set now", "it should be sorted now", "they should be back by now",
    "it'll have been paid back by now", "it must have gone through by now": a completion or a
    state claimed with a hedge, said of now, not a forecast ("it should be done by Friday", "it
    will be paid once you sign")."""
    k = i - 1
    while k >= 0 and i - k <= LOOK_BACK and words[k] in _HEDGED_VERB:
        k -= 1
    if k < 0 or k == i - 1 or words[k] not in _HEDGES:
        return False
    after = words[i + 1: i + RELATION_REACH]
    by_now = any(w == "by" and after[n + 1: n + 2] == ["now"] for n, w in enumerate(after))
    said_now = words[k: i] == ["should", "be"] and "now" in after
    return (by_now or said_now) and not _blocked(words, k)


def _held_back(words: list[str], i: int) -> bool:
    """A negation, modal, condition or habit before ``i`` that makes it no claim (``_blocked``),
    but not a hedge said of now ("they should be back by now")."""
    return _blocked(words, i) and not _hedged_now(words, i)


def _first_be(words: list[str], i: int) -> bool:
    """"we're closed", "I'm booked", "we've been closed": I/we with a form of be before the word."""
    j = i - 1
    while j >= 0 and i - j <= LOOK_BACK and words[j] not in _SUBJECT:
        if words[j] in ("am", "are", "is", "was", "were", "been"):
            return True
        j -= 1
    return False


def _habitual_after(words: list[str], i: int) -> bool:
    """"closed on Mondays", "served from seven until ten every morning": a rule of the business."""
    return not _HABITUAL.isdisjoint(words[i + 1: i + RELATION_REACH])


def _be_subject(words: list[str], i: int) -> str:
    """The word before the form of be ahead of ``i`` ("line" of "the line's ported"), or ""."""
    j = i - 1
    while j >= 0 and i - j <= LOOK_BACK and (words[j] in _BE or words[j] in _AUX or words[j] in (
            "now", "already", "just")):
        j -= 1
    return words[j] if j >= 0 else "start"


def _third_party(words: list[str], i: int) -> bool:
    """Someone of the business did it: "our engineer reviewed", "the lab has checked",
    "someone has looked at it" (not the caller, not a thing)."""
    j = i - 1
    while j >= 0 and i - j <= LOOK_BACK and (words[j] in _AUX or words[j] in ("now", "already", "just")):
        j -= 1
    if j < 0:
        return False
    return words[j] in _STAFF or (j >= 1 and words[j].isalpha() and words[j - 1] in _TITLES)


class _Reader:
    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self._lookup: dict[str, bool] = {}
        self.tool_words = {t.name: self._words_of(t) for t in turn.tools}
        # the words of the call's tool results, each result read apart and once a call (_said_counts)
        earlier = [_said_counts(r.lower()) for r in turn.earlier_results]
        now = [(c, _said_counts(str(c.result or "").lower())) for c in turn.calls]
        self.results = _affirmed_of([*(counts for _, counts in now), *earlier])
        self.earlier = _affirmed_of(earlier)
        # what the call's tools gave: a failed call's "cannot cancel: already shipped" backs nothing;
        # each distinct word stemmed once
        given = _affirmed_of([*(counts for c, counts in now if c.outcome == "ok"), *earlier])
        self.result_stems = frozenset(_stem(w) for w in given)
        # the states a result says: not its nouns made of the verb ("out for delivery", "cancellation
        # requested", "booking pending") nor what is under way ("processing"), which back no
        # "delivered", "cancelled" or "booked"
        self.state_stems = frozenset(_stem(w) for w in given if not w.endswith(_NOMINAL) or w == "ready")
        self.failed_stems = frozenset(_stem(w) for w in _WORD.findall(" ".join(
            str(c.result or "") for c in turn.calls if c.outcome != "ok").lower()))
        # what this turn's calls that did not fail say (not the call's earlier results)
        self.now_said = _affirmed_of(counts for c, counts in now if c.outcome == "ok")
        self.now_words = frozenset(w for c, (said, _) in now if c.outcome == "ok" for w in said)
        self.acted = _affirmed_of(counts for c, counts in now if c.outcome == "ok" and not self.is_lookup_tool(c.tool))
        # the calls that did what they were asked: not one whose result says it waits ("awaiting confirmation")
        self.finished = [c for c in turn.calls if c.outcome == "ok" and not _waits(str(c.result or "").lower())]
        self.caller_did = _caller_did(turn.caller)
        self.told_stems = frozenset(_stem(w) for w in _WORD.findall(f"{turn.instructions} {turn.greeting}".lower()))
        self.reply_waits = False
        self._named: tuple[frozenset[str], frozenset[str]] | None = None
        self._finished_with: frozenset[str] | None = None
        self._none_free: bool | None = None
        # the lookups of this turn that found a record and say nothing denied or waiting (once per reply)
        self.records = [c for c in self.finished if str(c.result or "").strip() and
                        _DENIED_OR_WAITING.search(str(c.result or "").lower()) is None]
        self._now_stems: dict[str, str] | None = None
        self.switches = _switches(turn.results_text())

    @staticmethod
    def _words_of(tool: Tool) -> frozenset[str]:
        name = re.sub(r"([a-z])([A-Z])", r"\1 \2", tool.name).lower()
        # the description starts with what the tool does ("Cancel an order", "Create, change or
        # cancel a booking"); the rest names things ("... without sending it", "... by email")
        # and would back actions the tool does not do
        leading = []
        for n, word in enumerate(re.split(r"[^a-z]+", tool.description.lower())):
            if n and word not in _ANY_TOOL_WORD and word not in ("or", "and", ""):
                break
            leading.append(word)
        return frozenset(re.split(r"[^a-z]+", name) + leading) - {""}

    def can(self, tool: str, group: str) -> bool:
        words = self.tool_words.get(tool)
        if words is None:
            words = self._words_of(Tool(tool))
        return bool(words & _TOOL_WORDS[group])

    def is_lookup_tool(self, tool: str) -> bool:
        """A tool that reads: its name starts with a reading verb (get_order) or names what it
        reports (mot_status, run_line_test), or its description starts with one ("Get live
        departures"). Only the others act: a lookup's run backs no "done" nor "it's passed"."""
        if tool not in self._lookup:  # once per tool and reply
            words = re.split(r"[^a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", tool).lower())
            known = next((t for t in self.turn.tools if t.name == tool), None)
            first = re.split(r"[^a-z]+", known.description.lower().strip()) if known is not None else [""]
            # a noun of what it reports, past the name's first word (its verb): schedule_redelivery acts
            nouns = words[1:] if len(words) > 1 else words
            self._lookup[tool] = words[0] in _LOOKUP_TOOL_VERBS or not _LOOKUP_TOOL_NOUNS.isdisjoint(nouns) or \
                first[0] in _LOOKUP_TOOL_VERBS
        return self._lookup[tool]

    def action_backed(self, groups: tuple[str, ...] | None, word: str, form: str) -> str | None:
        """None when a call of this turn backs the action; else why not."""
        ok = self.finished
        if groups is None:  # "done", "all set": any call that did something
            if any(not self.is_lookup_tool(c.tool) for c in ok):
                return None
            if form != "first" and word in self.results:
                return None
            if form == "first" and len(word) >= 5 and word.endswith("ed") and any(
                    w.startswith(_stem(word)) for w in self.now_said):
                return None  # "we've quoted 145 to sort it": the act a result of this turn records ("repair quote")
            waiting = [c for c in self.turn.calls if c.outcome == "ok" and c not in self.finished]
            if waiting:
                return self.not_done(waiting[0])
            return "no tool that acts ran in this turn" if self.turn.calls else "no tool ran in this turn"
        if any(self.can(c.tool, g) for c in ok for g in groups):
            return None
        if word in (self.results if form != "first" else self.earlier) or (form == "first" and word in self.acted):
            return None  # "your order was cancelled": a result of the call says so (for "I've cancelled
            # it", a call of an earlier turn, or what this turn's act did: "card blocked; replacement
            # ordered"; this turn's lookup does not make it the agent's act)
        if form != "first" and self.record_of(word):
            return None  # "you're booked in for the 1st": get_booking found the booking
        if not any(self.can(t.name, g) for t in self.turn.tools for g in groups):
            return f"no tool of the agent can do this ({'/'.join(groups)})"
        failed = [c for c in self.turn.calls if any(self.can(c.tool, g) for g in groups)]
        if failed:
            return self.not_done(failed[0])
        return f"no {'/'.join(groups)} tool ran in this turn"

    def waits_as_said(self, why: str, sentence: str) -> bool:
        """A call that acts ran and its result waits ("cancellation requested; awaiting clinic
        confirmation"), and the sentence says so too ("I've put the cancellation request in",
        "I've sent in the request, but it still needs sign-off"): the act it reports is that request."""
        if not (why.endswith(_NOT_DONE_YET) or why.startswith("no tool of the agent can do this")):
            return False
        waiting = any(c.outcome == "ok" and c not in self.finished and not self.is_lookup_tool(c.tool)
                      for c in self.turn.calls)
        return waiting and _reports_pending(_words(sentence))

    def not_done(self, call: ToolRun) -> str:
        if call.outcome == "ok":
            return f"{call.tool} {_NOT_DONE_YET}"
        return f"{call.tool} did not succeed in this turn"

    def lookup_backed(self, word: str, words: list[str] | None = None, at: int = 0) -> str | None:
        """A lookup said in the first person ("I've checked", ``words`` None) is backed by any
        call of the turn; a stated fact ("the courier left it with your neighbour") only by a
        tool result of the call that relates to what it says."""
        if words is None:
            if self.turn.calls or (word and word in self.results):
                return None
            return "no tool ran in this turn"
        if self.relates(words, at, SUBJECT_REACH) or self.acted_ok():
            return None  # a result that says so, or a state this turn's act made ("I've ordered it; it's on the way")
        return self.no_result()

    def none_free(self) -> bool:
        """Whether a result of this turn says there is no room: it denies availability ("no
        availability", "no rooms", "not available") or says it is full ("full", "sold out")."""
        if self._none_free is None:  # once per reply
            said = self.now_said
            # "Fri: no availability; Sat: 2 rooms available": some
            self._none_free = _FREE_WORDS.isdisjoint(said) and (
                not _FREE_WORDS.isdisjoint(self.now_words) or not _NONE_FREE.isdisjoint(said))
        return self._none_free

    def unrun_tool(self, words: list[str], i: int) -> str | None:
        """The agent's tool that does what the act at ``i`` names and did not run: its thing (a word
        of its name past the verb: book_cart's "cart") is the act's object, and no call of this turn
        that did not fail names it (in its tool, arguments or result)."""
        objects = {w.rstrip("s") for w in words[i + 1: i + RELATION_REACH // 2] if w.isalpha() and len(w) >= 3 and
                   w not in _RELATION_STOP and w not in _NOT_NOUNS}
        if not objects:
            return None
        groups = _ALL_PAST.get(words[i])
        ran = {c.tool for c in self.turn.calls if c.outcome == "ok"}
        for tool in self.turn.tools:
            if tool.name in ran or self.is_lookup_tool(tool.name) or (
                    groups and not any(self.can(tool.name, g) for g in groups)):
                continue
            things = {n.rstrip("s") for n in re.split(r"[^a-z]+", tool.name.lower())[1:] if len(n) >= 3}
            if objects.isdisjoint(things):
                continue
            if (objects & things).isdisjoint(self.named_by_calls()[1]):
                return tool.name
        return None

    def record_of(self, participle: str) -> bool:
        """Whether a lookup of this turn found the record the state is ("booked" ~ get_booking,
        "reserved" ~ find_reservation, "registered" ~ get_registration): the record is the state.
        Not when its result denies or waits for anything ("no booking found", "pending")."""
        root = participle[:-2] if participle.endswith("ed") else participle
        if len(root) < 4:
            return False
        for call in self.records:
            names = re.split(r"[^a-z]+", call.tool.lower())
            if self.is_lookup_tool(call.tool) and any(n.startswith(root) for n in names[1:]):
                return True
        return False

    def contradicted(self, words: list[str], i: int) -> str | None:
        """The word of a result of this turn that says the opposite of the state the clause says at
        ``i`` ("available" against "reserved", "ready" against "in production", "paid" against
        "overdue"), when no result of the turn says that state itself too; else None (kin do not
        count here: "stock HM-4471" names a stock number, it says nothing of "available")."""
        for word in words[i: i + 3]:
            opposed = _OPPOSED.get(_stem(word))
            if opposed is None or (word.endswith(_NOMINAL) and word != "ready"):  # "out for delivery": no state
                continue
            if self._now_stems is None:
                self._now_stems = {_stem(w): w for w in self.now_said}
            said = self._now_stems
            # the result says that state too, or one of its row ("available: 2; reserved: 1", "outage
            # resolved; investigation ongoing" for "fixed"; not a noun of it, "delivery")
            for stem in _SAME_STATE[_stem(word)]:
                same = said.get(stem)
                if same is not None and (not same.endswith(_NOMINAL) or same == "ready"):
                    return None
            return next((said[o] for o in sorted(opposed) if o in said), None)
        return None

    def said_finished(self, subject: list[str]) -> bool:
        """Whether one part of a result of this turn says both the thing ``subject`` names and that
        it is finished ("interview_completed: 2026-11-12" says the interview is done)."""
        named = {_stem(w) for w in subject if w.isalpha() and len(w) >= 4 and w not in _RELATION_STOP}
        if not named:
            return False
        if self._finished_with is None:  # once per reply: the words of every part that says finished
            words: set[str] = set()
            this_turn = " ".join(str(c.result or "") for c in self.turn.calls if c.outcome == "ok").lower()
            for part in _RESULT_PARTS.split(this_turn):
                if any(mark in part for mark in ("complet", "done", "finish")):  # most parts: a scan in C
                    said = _WORD.findall(part.replace("_", " "))
                    if not _FINISHED.isdisjoint(said):
                        words.update(said)
            self._finished_with = frozenset(_stem(w) for w in words)  # each distinct word stemmed once
        return not named.isdisjoint(self._finished_with)

    def ran_about(self, subject: list[str]) -> bool:
        """Whether a call of this turn that did not fail is about the thing ``subject`` names (its
        tool's name or its result: "the test" ~ run_line_test)."""
        named = {_stem(w) for w in subject if w.isalpha() and len(w) >= 4 and w not in _RELATION_STOP}
        return not named.isdisjoint(self.named_by_calls()[0])

    def named_by_calls(self) -> tuple[frozenset[str], frozenset[str]]:
        """The words of this turn's calls that did not fail (tool names, arguments, results), once
        per reply: by stem, and as said (a plural's s aside)."""
        if self._named is None:
            words = set(_WORD.findall(" ".join(f"{c.tool.replace('_', ' ')} {c.arguments} {c.result}"
                                               for c in self.turn.calls if c.outcome == "ok").lower()))
            self._named = frozenset(_stem(w) for w in words), frozenset(w.rstrip("s") for w in words)
        return self._named

    def no_result(self) -> str:
        return "no tool result of the call says so" if self.turn.calls else "no tool ran in this turn"

    def relates(self, words: list[str], at: int, before: int = 0) -> bool:
        """Whether a tool result of the call holds what the clause says from ``at`` on (and
        ``before`` words before it, the subject): one of its words (by stem or kin: delivered
        ~ delivery, on its way ~ OUT_FOR_DELIVERY) or one of its numbers or times, whole
        (14:45 ~ "quarter to three"; a date's 12 is no 12)."""
        for k in range(max(0, at - before), min(len(words), at + RELATION_REACH)):
            word = words[k]
            if word == "and" and k > at:
                break  # "your card is blocked and a replacement is on its way": two facts
            if k > at and word in ("to", "at", "from") and _address_at(words, k + 1):
                break  # "on its way to 14 Harbour Road": where to, which says nothing of the state
            if word.isalpha() and word not in _NUMBER_WORDS:  # "two seats left" relates as "2 seats left" does
                # the words before the verb say what the fact is about ("the refund has been
                # processed"): a result naming the refund as pending backs none of it; only
                # the fact's own words (or a number, time or code of its subject) relate
                if k >= at and len(word) >= 3 and word not in _RELATION_STOP and self.states(word):
                    return True
            elif self.turn.grounds(words, k, results_only=True):
                return True
        return False

    def result_forms(self) -> frozenset[str]:
        return self.turn.result_forms()

    def states(self, word: str, relay: bool = False) -> bool:
        """Whether a result of the call says ``word`` or its kin (cancelled ~ CANCELLED,
        fully booked ~ full, on its way ~ out for delivery)."""
        stem = _stem(word)
        kin = _KIN.get(stem, (stem,))
        said = self.state_stems if word.endswith("ed") else self.result_stems
        # a failed call's message backs the setback it reports ("slot taken"; with ``relay``, any state
        # word said of the thing: "part discontinued"), never the act it failed to do ("could not be
        # changed" backs no "changed") nor the words around it ("plan code invalid" backs no "plan")
        relayed = word in _SETBACKS or (relay and word not in _ALL_PAST and word not in _EVENTS and word not in _LOOKUP)
        return not said.isdisjoint(kin) or (relayed and not self.failed_stems.isdisjoint(kin))

    def acted_ok(self) -> bool:
        """Whether a tool that acts (not a lookup) succeeded in this turn."""
        return any(not self.is_lookup_tool(c.tool) for c in self.finished)

    def state_backed(self, words: list[str], i: int) -> str | None:
        """A state the reply's own words give ("the line's ported now", "you're on the unlimited
        plan", "we're closed on Mondays"): backed by an act of this turn, a result that says it
        or the instructions; else why not."""
        if self.acted_ok() or self.relates(words, i) or self.told(words, i):
            return None
        return self.no_result()

    def clause(self, words: list[str], sentence: str) -> Finding | None:
        echoed = None  # whether the clause says the caller's act back: read once a clause, not once a
        # word ("it is being processed" x n re-read the clause n times: 100 k characters took 1 s)
        for i, word in enumerate(words):
            found = self._at(words, i, word)
            if found is not None:
                kind, why = found
                if why is not None and echoed is None:
                    echoed = self.echoes(words)
                if why is not None and echoed:
                    return None
                if why is None and kind == "action" and _subject(words, i) == "first":
                    tool = self.unrun_tool(words, i)
                    if tool is not None:  # "I've got you a cart" when book_tee_time ran and book_cart did not
                        return Finding("tool_aware", kind, sentence, why=f"{tool} did not run in this turn")
                if why is None and kind in ("state", "lookup_fact") and not _blocked(words, i):
                    against = self.contradicted(words, i)
                    if against is not None:  # "it's available" when the result says "status: reserved"
                        return Finding("tool_aware", kind, sentence,
                                       why=f"a tool result of this turn says {against!r}, not that")
                if why is not None and i and words[i - 1] == "being" and self.states(_progressive(word)):
                    continue  # "it's still being processed": what a result's "processing" says
                if why is not None and _subject(words, i) != "first" and self.relays_switch(words, i):
                    return None  # "auto-renew's switched off": what a lookup's auto_renew: false says
                if why is not None and why.endswith(_NOT_DONE_YET) and self.reply_waits:
                    return None  # the reply says it is not done yet, as the result does
                if why is not None and self.waits_as_said(why, sentence):
                    return None  # the reply says it waits, as the result does: backed
                if why is not None:
                    return Finding("tool_aware", kind, sentence, why=why)
        return None

    def echoes(self, words: list[str]) -> bool:
        """"So you've got your ticket for the ten fifteen sorted": the caller's own act said back
        to them (the caller said they did it; the clause is about "you" and names the same thing)."""
        return "you" in words and any(w.isalpha() and len(w) >= 4 and _stem(w) in self.caller_did for w in words)

    def _at(self, words: list[str], i: int, word: str) -> tuple[str, str | None] | None:
        # lookups in the first person: "I can see", "I couldn't find", "according to our records"
        if word == "see" and (_subject(words, i) == "first" or (i > 1 and words[i - 1] == "can"
                                                                 and words[i - 2] in _SUBJECT)):
            follows = words[i + 1] if i + 1 < len(words) else ""
            start = i - 1 if words[i - 1] == "can" else i
            if (follows in _DETERMINERS or follows in ("there", "a", "an") or follows in _REFERENCE_NOUNS or
                    _number(follows) is not None) and \
                    not _blocked(words, start, allow_negation=True):
                return "lookup_fact", self.lookup_backed("")
            return None
        if word in ("find", "locate", "see") and i >= 2 and words[i - 1] == "not" and (words[i - 2] in (
                "could", "did") or (word == "see" and words[i - 2] == "do")) and i >= 3 and words[i - 3] in _SUBJECT:
            return "lookup_fact", self.lookup_backed("")
        if word == "according" and i + 2 < len(words) and words[i + 1] == "to" and words[i + 2] in _DETERMINERS:
            return "lookup_fact", self.lookup_backed("")
        if word in ("shows", "showed", "says", "indicates") and i and words[i - 1] in (
                "records", "system", "account", "search", "file", "history", "tracking", "calendar"):
            return "lookup_fact", self.lookup_backed("")
        if word == "record" and i and words[i - 1] == "no" and i >= 2 and words[i - 2] in ("is", "have", "find"):
            return "lookup_fact", self.lookup_backed("")
        if word == "no" and i >= 2 and words[i - 1] in ("is", "are") and words[i - 2] == "there" and \
                "your" in words[i + 1: i + 7]:
            return "lookup_fact", self.lookup_backed("")  # "there are no open tickets on your account"
        if word == "had" and _subject(words, i) == "first" and not {"look", "check"}.isdisjoint(words[i + 1: i + 4]) \
                and not _blocked(words, i):
            return "lookup_fact", self.lookup_backed("")  # "I've had a look and ..."
        if word == "get" and i >= 2 and words[i - 1] == "to" and words[i - 2] in ("able", "managed") and \
                _subject(words, i) == "first" and not _blocked(words, i):
            return "action", self.action_backed(None, word, "first")  # "we've been able to get you a refund"
        if word in _FIRST_PERSON_ACTS and _subject(words, i) == "first" and not _blocked(words, i) and not (
                word == "set" and "up" in words[i + 1: i + 4]):
            after = words[i + 1] if i + 1 < len(words) else ""
            wanted = _FIRST_PERSON_ACTS[word]
            # "I've got an engineer heading to you": someone sent on their way (not "I've got your details here")
            sent_off = word == "got" and after in ("a", "an", "the", "your", "someone", "somebody") and \
                not _ON_THEIR_WAY.isdisjoint(words[i + 2: i + 5])
            # "I've got you a cart", "I've got her in with Priya", "I've got you down for 3" (not "I've got
            # you" = I understand, "I've got her details here", "we've got them in stock": a lookup's)
            if word == "got" and after in wanted and (i + 2 >= len(words) or words[i + 2] not in _GOT_OBJECT_THEN or
                                                      not _AVAILABILITY.isdisjoint(words[i + 2: i + 5])):
                after = ""
            if wanted is None or after in wanted or sent_off or (word == "let" and words[i - 1] == "have"):
                return "action", self.action_backed(("send",) if word in ("passed", "let") else None, word, "first")
        if word in ("have", "got") and _subject(words, i) == "first" and i + 1 < len(words) and (
                ((words[i + 1] in ("a", "an", "some") or _number(words[i + 1]) is not None) and
                 not _AVAILABILITY.isdisjoint(words[i + 2: i + 7])) or words[i + 1] in _ROOM_FOR) and \
                not _blocked(words, i):
            # "we've got a table free at eight", "we've space for him over Christmas": backed by a lookup
            # of the turn, unless it says there is none ("no availability 20-27 Dec", "fully booked")
            if self.none_free():
                return "lookup_fact", "a tool result of this turn says there is none"
            return "lookup_fact", self.lookup_backed("")
        if word in ("have", "got") and _subject(words, i) == "you" and i + 2 < len(words) and \
                words[i + 1] in ("a", "an", "your") and words[i + 2] in _HELD and not _blocked(words, i):
            return "state", self.state_backed(words, i + 2)  # "you've got a place on Thursday's class"
        if word in ("in", "on") and i + 2 < len(words) and words[i + 1] in ("your", "the") and \
                words[i + 2] in _CONTAINERS and \
                _subject(words, i) == "be" and not _blocked(words, i):
            return "state", self.state_backed(words, i + 2)  # "the label is in your inbox"
        if word == "with" and i and words[i - 1] in ("is", "are", "now") and _subject(words, i) == "be" and \
                not _STAFF.isdisjoint(words[i + 1: i + 4]) and not _blocked(words, i):
            return "state", self.state_backed(words, i + 1)  # "your parcel's with the courier"
        if word in _VISITS and i and words[i - 1] in ("is", "are") and not _STAFF.isdisjoint(words[max(0, i - 6): i]) \
                and not _blocked(words, i) and not _habitual_after(words, i):
            return "state", self.state_backed(words, i)  # "someone from the team is calling you back"
        if word == "due" and self._due_when(words, i):
            # "his kennel cough vaccine is due next month", "your car's due back at noon": a date on a
            # record, which a result of the call or the instructions give
            # (from the word after "due": a result's "service due ..." says nothing of the tax)
            return "lookup_fact", (None if self.relates(words, i + 1, SUBJECT_REACH + 1) or self.told(words, i)
                                   or self.acted_ok() or self.dated(words, i - 1) else self.no_result())
        if word == "there" and i + 1 < len(words) and words[i + 1] in ("is", "are") and not _blocked(words, i):
            room = _room_said(words, i + 2)
            if room is not None:
                # "there are still plenty of seats at the 5:45": availability a lookup of it gives, not a
                # lookup of the times; a result that says there is none says otherwise
                if self.none_free():
                    return "lookup_fact", "a tool result of this turn says there is none"
                backed = not _FREE_WORDS.isdisjoint(self.results) or self.states(words[room]) or \
                    self.told(words, room)
                return "lookup_fact", None if backed else self.no_result()
        if word in _MONEY_MOVES and i + 1 < len(words) and words[i + 1] in ("from", "to", "by") and \
                _said_to_be(words, i) and not _blocked(words, i):
            # "the hundred on hold is a pre-authorisation from the hotel": where a charge came from, which
            # a result naming that counterparty (a transactions lookup) gives
            return "lookup_fact", (None if self.relates(words, i + 2) or self.told(words, i + 2) else
                                   self.no_result())
        if word == "with" and self._coming_to_you(words, i):
            # "he should be with you within the hour": when someone gets to the caller, which a
            # lookup of this turn (a tracking, a job) or an act that booked them gives; nothing did
            return "lookup_fact", (None if self.finished or self.turn.earlier_results or self.told(words, i + 2)
                                   else self.no_result())
        if word in _WEATHER and i >= 2 and (words[i - 1] in ("looks", "look", "looking") or (
                words[i - 1] in ("is", "was") and words[i - 2] in _WHEN)) and not _blocked(words, i):
            return ("lookup_fact", None if self.relates(words, i) or self.told(words, i) else self.no_result())
        if word in ("on", "in") and i >= 2 and words[i - 1] in ("are", "were") and words[i - 2] == "you" and \
                i + 2 < len(words) and words[i + 1] in ("the", "a", "an", "your", "our") and \
                words[i + 2] not in ("right", "wrong", "best", "safe", "phone", "line", "call", "way") and \
                not _blocked(words, i - 1):
            return "state", self.state_backed(words, i + 2)  # "you're on the unlimited plan from today"
        if word == "in" and i >= 2 and words[i - 1] == "are" and words[i - 2] == "you" and (i + 1 == len(words) or (
                _code(words[i + 1]) or _spoken_code(words, i + 1) or (words[i + 1] in _PLACES and i + 2 < len(words) and _forms(words, i + 2)) or (
                words[i + 1] in ("for", "at") and i + 2 < len(words) and _is_time(words[i + 2])) or (
                words[i + 1] == "with" and i + 2 < len(words) and _named(words[i + 2])))) and \
                not _blocked(words, i - 1):
            # "you're in 14C", "you're in room 12", "you're in for twenty to four", "you're in with Aoife
            # at ten", "you're in!": a booking made
            return "state", self.action_backed(("book", "change"), "booked", "other")
        if word == "in" and i + 1 == len(words) and i >= 2 and words[i - 1] in ("is", "are") and \
                words[i - 2] not in _SUBJECT and words[i - 2] != "you" and not _blocked(words, i - 1):
            # "they're in", "your renewal's in": it arrived or was received
            # (or a call of the turn about the thing: "the request for six is in" ~ "requested")
            backed = self.acted_ok() or self.told(words, i - 2) or any(self.states(w) for w in _ARRIVED) or \
                self.ran_about(words[max(0, i - 1 - LOOK_BACK): i - 1])
            return "state", None if backed else self.no_result()
        if word in ("sat", "sitting", "waiting") and i >= 2 and words[i - 1] in ("is", "are") and \
                words[i - 2] not in _SUBJECT and words[i - 2] != "you" and _here_for_you(words, i) and \
                not _blocked(words, i - 1):
            # "they're sat here waiting for you", "the money's sitting in your savings now": it arrived
            backed = self.acted_ok() or any(self.states(w) for w in _ARRIVED) or self.relates(words, i + 1)
            return "state", None if backed else self.no_result()
        place = _rank(words, i) if i and words[i - 1] in ("is", "are") else None
        if place is not None and not _blocked(words, i - 1):
            # "you're third on the list", "you're number 4 in the queue": a place only a lookup gives
            return "lookup_fact", None if str(place) in self.turn.sources() else self.no_result()
        if word == "yours" and i and words[i - 1] in ("is", "are") and not _blocked(words, i) and \
                not {"now", "through", "until", "till", "from", "for"}.isdisjoint(words[i + 1: i + 4]):
            return "state", self.state_backed(words, i)  # "the car's yours through Tuesday now"
        if word in ("has", "have") and i + 2 < len(words) and words[i + 1] == "your" and words[i + 2].isalpha() and \
                words[i + 2] not in ("best", "back", "interests", "attention", "word") and \
                not any(w.endswith("ed") for w in words[i + 3: i + 5]) and \
                _subject(words, i) == "other" and i and words[i - 1] not in _NOT_NOUNS and \
                words[i - 1] not in ("who", "which", "everyone", "everybody", "nobody") and \
                {"each", "every", "all", "any"}.isdisjoint(words[max(0, i - 3): i]) and not _blocked(words, i):
            return "state", self.state_backed(words, i + 2)  # "the kitchen has your note"
        if word == "running" and i and words[i - 1] in ("is", "are") and (
                not {"late", "behind", "early", "ahead", "delayed", "slow"}.isdisjoint(words[i + 1: i + 6])
                or _phrase_at(words, i + 1, _STATUS_AT) == ("on", "time")) and \
                not _blocked(words, i) and not self._general(words, i):
            return "lookup_fact", self.lookup_backed(word, words, i)  # "your flight is running forty minutes late"
        # "you have 3,200 points", "there are two rooms left": counts are grounded by the specifics rule
        groups = _ALL_PAST.get(word)
        if word == "set" and "up" in words[i + 1: i + 4] and words[i + 1] not in _CLAUSE_MARKS:
            groups = ("create",)  # "direct debit is set up", "I've set up the transfer", "I've set that up"
        if groups is not None or word in _LOOKUP or word in _EVENTS:
            if word in ("looked", "pulled") and not (i + 1 < len(words) and words[i + 1] in (
                    "up", "into", "at", "for", "it", "that", "this", "your")):
                return None
            if word == "left" and _subject(words, i) in ("you", "start"):
                return None
            if word == "left" and i >= 2 and _number(words[i - 2]) is not None and words[i - 1].endswith("s"):
                # "only got two seats left": a count a search gives, not a departure
                return "lookup_fact", self.lookup_backed(word, words, i)
            if i + 1 < len(words) and words[i + 1] in ("nothing", "none"):
                return None  # "I cancelled nothing"
            if i and words[i - 1] in _POSSESSIVES:
                return None  # "your cancelled order": an adjective
            if (i == 0 or words[i - 1] in ("a", "an", "all", "any", "some", "no")) and i + 2 < len(words) and \
                    words[i + 1].isalpha() and words[i + 1] not in _NOT_NOUNS and words[i + 2] in _BE:
                return None  # "reserved items are held for 48 hours": an adjective before its noun
            if i and (words[i - 1], word) in _STATUS:
                return None  # "fully booked": the status phrase, read at its first word
            form = _subject(words, i)
            if form == "you" or _held_back(words, i):
                return None
            if form == "start" and self.told(words, i):
                return None  # "..., paid up front": a term of the instructions said after a price, no act
            if form == "be" and self._general(words, i):
                return None
            if form == "first" and _first_be(words, i):
                # "we're closed on Mondays", "we're fully booked": the business's state
                return None if _habitual_after(words, i) else ("state", self.state_backed(words, i))
            if word in _LOOKUP and groups is None:
                if form == "first":
                    return "lookup_fact", self.lookup_backed("")
                if form == "be":  # "it's been confirmed": a state someone made so, or a result says so
                    # ("your bag's been found" ~ "located at DUB")
                    return "state", None if self.states(word) else self.action_backed(None, word, form)
                if _third_party(words, i):  # "our engineer reviewed your logs": a fact of a lookup
                    return "lookup_fact", self.lookup_backed(word, words, i)
                return None
            if word in _EVENTS and groups is None:
                if form == "first":  # "we've processed your refund"
                    return "action", self.action_backed(None, word, form)
                return "state", self.lookup_backed(word, words, i)
            kind = "action" if form == "first" else "state"
            why = self.action_backed(groups, word, form)
            # who did it, for someone else's act ("Priya replied"); what it is now, for a passive
            if why is not None and form in ("other", "be") and not _third_party(words, i) and (
                    self.states(word) or (form == "other" and self.relates(words, i, SUBJECT_REACH))):
                return None  # "you're booked in with Dr Lee", "Priya replied at 8:05": what a result says
            return kind, why
        if (word.endswith("ed") or word in _IRREGULAR_PAST or word in _IRREGULAR_PARTICIPLES) and word.isalpha() and \
                _third_party(words, i) and \
                not _blocked(words, i):  # "the driver put it in your bin", "Dr Patel has signed it"
            return "lookup_fact", self.lookup_backed(word, words, i)
        found = self._participle(words, i, word) or self._near(words, i)
        if found is not None:
            return found
        if word in _FUTURE_MARKS:
            found = self._future_fact(words, i)
            if found is not None or word != "going":  # "it's going ahead" is a status (below)
                return found
        phrase = _phrase_at(words, i, _COMPLETION_AT)
        if phrase is not None:
            form = _subject(words, i)
            if phrase in (("done",), ("sorted",), ("in", "hand"), ("all", "in", "hand"), ("all", "good", "for")):
                # "that's done", "I've sorted it", "it's in hand"; not "well done", "cash in hand"
                if not (i == 0 or words[i - 1] in _BE or words[i - 1] in ("all", "that", "it") or form == "first"):
                    return None
            if phrase[0] in ("went", "gone", "come", "came") and form == "you":
                return None
            if phrase[1:] == ("through",) and form == "first":  # I went / I've gone through the calendar
                return (None if _blocked(words, i) else ("lookup_fact", self.lookup_backed("")))
            if _held_back(words, i):
                return None
            if phrase[-1] == "back":  # "the results came back clear", "we've heard back from the insurer"
                if self.ran_about(words[max(0, i - SUBJECT_REACH - 1): i]):
                    return None  # "the test's come back clean": what this turn's line test returned
                return "lookup_fact", self.lookup_backed(phrase[0], words, i)
            if phrase[-1] == "out" and form != "first" and not self.state_stems.isdisjoint(_SENT_OUT):
                return None  # "it went out with DPD yesterday": what a result's "dispatched" says
            if self.said_finished(words[max(0, i - LOOK_BACK): i]):
                return None  # "your interview was done on the 12th": the result's "interview_completed: ..."
            return "state", self.action_backed(None, phrase[-1], "other")
        if word == "now" and i and words[i - 1] in ("is", "are") and i + 1 < len(words) and \
                words[i + 1] not in _ALL_PAST and not _blocked(words, i):
            # "the address is now 14 Mill Lane": a change, or a fact a lookup gave ("it's now leaving at 14:45")
            return "state", (None if self.relates(words, i + 1) else self.action_backed(None, "now", "other"))
        phrase = _phrase_at(words, i, _STATUS_AT)
        if phrase is not None:
            if _subject(words, i) != "be" and words[i] not in ("now",) and phrase[-1] not in ("now",) and \
                    not _you_have_got(words, i):
                return None
            if _held_back(words, i) or self._general(words, i):
                return None
            return "lookup_fact", (None if self.told(words, i) else self.lookup_backed(phrase[-1], words, i))
        return None

    def _due_when(self, words: list[str], i: int) -> bool:
        """"(your|his) X is due next month / on the 4th / back at noon": when a thing of the caller's
        falls due (not "due to", a cause or a forecast; not "payments are due within 30 days", a rule)."""
        if not (2 <= i and i + 1 < len(words) and words[i - 1] in ("is", "are") and words[i + 1] in _DUE_WHEN):
            return False
        return not _POSSESSIVES.isdisjoint(words[max(0, i - 5): i - 1]) and not _blocked(words, i) and \
            not _habitual_after(words, i) and not self._general(words, i)

    def dated(self, words: list[str], be: int) -> bool:
        """Whether a result names every word of the thing before ``be`` and gives a date: "your
        renewal is due next month" ~ "renewal date 2027-01-14" (not "his kennel cough vaccine"
        against "vaccinations: rabies 2026-04-11": no kennel cough in it)."""
        k = be - 1
        while k >= 0 and be - k <= 4 and words[k] not in _POSSESSIVES:
            k -= 1
        thing = [w for w in words[k + 1: be] if w.isalpha() and len(w) >= 3 and w not in _RELATION_STOP]
        return bool(thing) and all(_stem(w) in self.result_stems for w in thing) and any(
            f.startswith("day:") for f in self.result_forms())

    @staticmethod
    def _coming_to_you(words: list[str], i: int) -> bool:
        """"(he) should be with you within the hour", "they'll be with you by three": someone else's
        arrival, said with when (not "I'll be with you in a moment": the agent's own)."""
        if not (2 <= i and i + 2 < len(words) and words[i - 1] == "be" and words[i - 2] in ("will", "should") and
                words[i + 1] == "you"):
            return False
        # a when with a number or a day in it ("by three", "Thursday") is an ungrounded specific already
        when = words[i + 2: i + 2 + SUBJECT_REACH]
        return when[0] in _ETA_WHEN and words[i - 3: i - 2] not in (["i"], ["we"], ["you"]) and not any(
            w in _WEEKDAYS or _forms(when, n) for n, w in enumerate(when)) and not _blocked(words, i - 2)

    def relays_switch(self, words: list[str], i: int) -> bool:
        """"auto-renew's switched off", "paperless billing is turned on", "roaming is disabled":
        a setting's state, backed by a result field that says the same (auto_renew: false,
        "paperless": true, roaming: disabled) — a state read, not a change made."""
        word, after = words[i], words[i + 1] if i + 1 < len(words) else ""
        # "switched off", or a participle that is the state itself ("disabled"; not "no", "on")
        state = _SWITCH_STATES.get(after) if word in ("switched", "turned", "set") else \
            _SWITCH_STATES.get(word) if word.endswith("ed") else None
        if state is None or not self.switches:
            return False
        subject = [w.replace("-", "") for w in words[max(0, i - SUBJECT_REACH - 1): i] if w.isalpha() or "-" in w]
        names = set(subject) | {a + b for a, b in zip(subject, subject[1:])}
        return any(self.switches.get(name) == state for name in names)

    def _near(self, words: list[str], i: int) -> tuple[str, str | None] | None:
        """Where a thing on the move is now, which only a tracking lookup gives: "the next 42's
        about six minutes away", "your rider's just round the corner", "your driver is outside"
        (not "the station is ten minutes away", "ten minutes away from the beach": a place)."""
        word = words[i]
        after = words[i + 1] if i + 1 < len(words) else ""
        if after in ("from", "by", "on", "walk", "drive", "of", "the", "your", "our", "hours"):
            return None  # "ten minutes away from the beach", "outside the entrance": a place
        if word == "away":
            if not (i >= 2 and words[i - 1] in _TRAVEL_UNITS and _number(words[i - 2]) is not None):
                return None
            start = i - 2
        elif word == "corner" and i >= 2 and words[i - 1] == "the" and words[i - 2] in ("round", "around"):
            start = i - 2
        elif word in ("outside", "nearby"):
            start = i
        else:
            return None
        k = start - 1
        while k >= 0 and start - k <= 3 and (words[k] in _APPROX or words[k] in ("only", "now", "currently")):
            k -= 1
        if k < 1 or words[k] not in ("is", "are", "s"):  # "the next 42's" reads 42, s
            return None
        subject = words[max(0, k - 4): k]
        # the thing itself ("your rider", "the next 42"), not "the bus stop"
        if not (words[k - 1] in _MOVERS or "next" in subject) or _blocked(words, k) or \
                _habitual_after(words, k):
            return None
        # a tracking result that names the thing ("rider 300m away", "driver arrived") or relates
        named = any(w.isalpha() and len(w) >= 3 and w not in _RELATION_STOP and _stem(w) in self.result_stems
                    for w in subject)
        # (not any act of the turn: a booking made is no rider round the corner)
        backed = named or self.told(words, k) or self.relates(words, k, SUBJECT_REACH)
        return "lookup_fact", (None if backed else self.no_result())

    def _participle(self, words: list[str], i: int, word: str) -> tuple[str, str | None] | None:
        """A verb no list names, by its form: the agent's own act in the past ("I've popped a
        credit on your account": any call of the turn that did not fail backs it) or a
        participle after a form of be, said of the caller's things ("the line's ported now",
        "the charge has been reversed", "you're covered for that": a state)."""
        participle = word in _STATE_PARTICIPLES or word in _FIRST_ACTS or (word.endswith("ed") and len(word) >= 5)
        if not participle or word in _NOT_ACTS or not word.isalpha() or (i and words[i - 1] in _POSSESSIVES):
            return None
        after = words[i + 1] if i + 1 < len(words) else ""
        if after in ("by", "under") and not _RULES.isdisjoint(words[i + 2: i + 6]):
            return None  # "you're covered by our returns policy": the business's rules, not an act
        infinitive = after == "to" and (i + 2 >= len(words) or words[i + 2] not in _DETERMINERS | {"a", "an"})
        if infinitive or (word in _STATE_PARTICIPLES and word != "put" and after not in ("up", "in", "on", "off")):
            return None  # "you're required to bring", "it's set for Friday" (a schedule); not "passed to the team"
        form = _subject(words, i)
        if form not in ("first", "be") or _held_back(words, i) or _habitual_after(words, i) or (
                word in _FIRST_ACTS and form != "first"):
            return None
        if form == "first" and not _first_be(words, i):  # a lookup said so is in _LOOKUP
            return "action", self.action_backed(None, word, form)
        if form == "be" and (self._general(words, i) or _be_subject(words, i) in ("", "start")):
            return None
        return "state", (None if self.states(word, relay=True) else self.state_backed(words, i))

    def _future_fact(self, words: list[str], i: int) -> tuple[str, str | None] | None:
        """A forecast or a schedule in the future tense, which only a lookup (or the
        instructions) can give: "it'll rain tomorrow", "the ferry will leave from berth 3",
        "it's going to be sunny", "the pharmacy will be open until 9". The agent's own future
        ("I'll send it", "it'll be cancelled once you confirm") stays an intent."""
        j = i - 1  # the subject
        if words[i] != "will":  # "is going to", "is due to", "is expected to", "is scheduled to"
            if not (i and words[i - 1] in _BE and i + 1 < len(words) and words[i + 1] == "to"):
                return None
            i, j = i + 1, i - 2
        subject = words[j] if j >= 0 else ""
        if subject in _SUBJECT or subject == "you" or subject in _BE or _blocked(words, j + 1):
            return None
        k = i + 1
        while k < len(words) and words[k] in _FUTURE_ADVERBS:
            k += 1
        verb = words[k] if k < len(words) else ""
        after = words[k + 1] if k + 1 < len(words) else ""
        if any((w in _CONDITION and not (w in ("before", "after") and _noun_phrase(words[n + 1:n + 5]))) or
               w in _HABITUAL for n, w in enumerate(words[k: k + RELATION_REACH], k)):
            return None  # "it will be open once you confirm", "trains will run every 20 minutes"
        if subject.endswith("s") and not (j and (words[j - 1] in _DETERMINERS or _number(words[j - 1]))):
            return None  # "shops will close early on Christmas Eve": bare plurals, a general fact
        if verb in _FUTURE_VERBS or (verb == "be" and (after in _FUTURE_STATES or (
                after == "at" and k + 2 < len(words) and bool(_forms(words, k + 2))))):
            if self.relates(words, k, k - max(0, j - SUBJECT_REACH)) or self.told(words, k):
                return None
            return "lookup_fact", self.no_result()
        return None

    def told(self, words: list[str], at: int) -> bool:
        """Whether the instructions or the greeting say it ("we open at 9 on Saturdays")."""
        # the thing a state is about ("on the policy") is no state: "the policy line of Meridian" says nothing of it
        return any(w.isalpha() and len(w) >= 3 and w not in _RELATION_STOP and w not in _CONTAINERS and
                   _stem(w) in self.told_stems for w in words[at: at + RELATION_REACH])

    @staticmethod
    def _general(words: list[str], i: int) -> bool:
        """"Refunds are processed in 5 days": a policy, not this caller's state."""
        j = i - 1
        while j >= 0 and i - j <= LOOK_BACK and (words[j] in _AUX or words[j] in ("now", "already", "just",
                                                                                  "currently")):
            if words[j] in ("now", "already", "currently"):
                return False  # "engineers are already on site": this event, not a policy
            j -= 1
        if j < 1 or words[j] not in ("are", "is", "get", "be"):
            return False
        subject = words[j - 1]
        # the noun phrase's first words: "your test results are back" is this caller's
        before = words[max(0, j - 4): j - 1]
        # a bare plural in the present: a policy ("complaints are logged within a day")
        return words[j] != "is" and subject.endswith("s") and not any(
            w in _DETERMINERS or w in ("both", "all") or _number(w) for w in before[-3:])


def question(sentence: str) -> bool:
    return sentence.rstrip("\"'”’) ").endswith("?")


# a sentence longer than this (no spoken sentence is; a model stuck in a loop writes one) is read
# in pieces cut after a clause's comma or semicolon, else at a space (a word, a 5,000-digit number
# too, stays whole): the time budget is checked between pieces, so one 1 MB sentence no longer runs
# 2.7 s past a budget of 1 s; a cut inside a clause had split "if we | booked it" into a claim
LONGEST_SENTENCE = 2000


def _cut(sentence: str, start: int) -> int:
    low, high = start + LONGEST_SENTENCE // 2, start + LONGEST_SENTENCE
    clause = max(sentence.rfind(", ", low, high), sentence.rfind("; ", low, high))
    return clause + 1 if clause >= 0 else sentence.rfind(" ", low, high)


def sentences(text: str) -> Iterable[str]:
    for sentence in _SENTENCES.split(text or ""):
        start, end = 0, len(sentence)
        while end - start > LONGEST_SENTENCE:  # by index: the rest is never copied
            cut = _cut(sentence, start)
            if cut < 0:
                cut = sentence.find(" ", start + LONGEST_SENTENCE)
                if cut < 0:
                    break
            piece = sentence[start:cut].strip()
            if piece:
                yield piece
            start = cut
        piece = sentence[start:end].strip()
        if piece:
            yield piece


def _asserted(clauses: list[list[str]], is_question: bool) -> list[list[str]]:
    """The clauses a sentence asserts. A question asserts nothing when it is one from its
    start ("Would you like the 9:40, which ...?") or ends in a tag ("..., is that right?");
    otherwise only its last clause asks: "The flight would cost 40 pounds, shall I book it?"
    states the price."""
    if not is_question:
        return clauses
    if len(clauses) < 2 or clauses[0][0] in _QUESTION_START:
        return []
    tail = clauses[-1]
    if len(tail) <= 4 and any(w in _TAG_WORDS for w in tail):
        return []
    return clauses[:-1]


def read(reply: str, turn: Turn, deadline: float | None = None, clock: Any = None) -> list[Finding]:
    """Every finding of ``reply``: at most one ``tool_aware`` per sentence and one
    ``ungrounded_specific`` per token. ``clock`` and ``deadline`` bound the time
    (``TimeoutError`` past it)."""
    reader = _Reader(turn)
    findings: list[Finding] = []
    seen_tokens: set[str] = set()
    for sentence in sentences(reply):
        if deadline is not None and clock() > deadline:
            raise TimeoutError
        words = _words(sentence)  # here, not all ahead: a long reply's words are in the time budget too
        clauses = _asserted(_clauses(words), question(sentence))
        if not clauses:
            continue
        # a sentence that itself says the thing is not done ("it's still awaiting a decision") relays
        # the waiting result: it claims nothing done against it (its neighbours are read as they are)
        reader.reply_waits = _says_not_yet(words)
        raw = _raw_tokens(sentence)
        # "If that works, you're in for two": what would follow, not what happened
        conditional = [bool(n) and _condition_clause(clauses[n - 1]) for n in range(len(clauses))]
        # "If a payment's late there's a twelve pound fee added": condition and consequence in one
        # clause, no comma: a general rule when the instructions say so ("Late payment fee is 12
        # pounds"), unless the agent says it did something in it; not "if you check the app
        # there's a twelve pound credit added" (this caller's account, said of no rule)
        conditional = [c or (clause[0] in ("if", "unless") and _SUBJECT.isdisjoint(clause) and
                             reader.told(clause, 1)) for c, clause in zip(conditional, clauses)]
        for n, clause in enumerate(clauses):
            if conditional[n]:
                continue
            found = reader.clause(clause, sentence)
            if found is not None:
                findings.append(found)
                break
        for n, clause in enumerate(clauses):
            # where I or we first comes: before it, what the clause says is others' (found once a
            # clause, not by re-reading all the words before each one: a 100 k-character clause took 10 s)
            agent_at = next((k for k, w in enumerate(clause) if w in _SUBJECT), len(clause))
            for i in range(len(clause)):
                # an amount said in the conditional or the future must come from somewhere too ("the
                # Tuesday flight would cost 40 pounds", "it'll be 12 degrees"); a time there is offered
                # ("I can book you in at 3 pm"), a condition's number is the caller's case
                # the time or day of what others will do is a specific too ("they'll be round this
                # Thursday", "you'll be back on by about four"); the agent's own future is offered
                future = i <= agent_at
                if not (_specific(clause, i) or (future and _forecast_day(clause, i))) or _blocked(
                        clause, i, allow_negation=True, allow_modal=_amount(clause, i), allow_future=future) or (
                        (conditional[n] or (_habitual_after(clause, i) and _whole(clause[i]) is not None))
                        and not _amount(clause, i)):
                    # after "if that works", a time is offered; "open until 5 on weekdays" (a bare hour) is
                    # a rule of the house, not an event; a price or "16:30" still must come from somewhere
                    continue
                forms = _forms(clause, i)
                if not forms or turn.grounds(clause, i):
                    continue
                token = raw.get(clause[i], clause[i].replace("~", "."))
                if token not in seen_tokens:
                    seen_tokens.add(token)
                    findings.append(Finding("ungrounded_specific", "ungrounded_specific", sentence, token=token,
                                            why=f"{token!r} is in nothing the caller said, the instructions, the "
                                                "greeting or a tool result of this call"))
    return findings


_PAST_MARKS = frozenset("was were did had 'd came went ran began broke fell gave".split())


def _condition_clause(clause: list[str]) -> bool:
    """"If that works", "unless you'd rather not", "once you've signed", "when you confirm" (not
    "when I checked", "once it had arrived": a time in the past)."""
    if clause[0] in ("if", "unless"):
        return True
    if clause[0] not in ("once", "when", "whenever"):
        return False
    if "have" in clause[1:3]:
        return True  # "once you've signed": a perfect still ahead
    return not any(w in _PAST_MARKS or (w.isalpha() and w.endswith("ed")) or w in _IRREGULAR_PAST
                   for w in clause[1:])


def _raw_tokens(sentence: str) -> dict[str, str]:
    """Lower-case word -> as written (a finding names the token as the reply wrote it)."""
    return {raw.lower(): raw for raw in _TOKEN.findall(sentence.replace("’", "'"))}
