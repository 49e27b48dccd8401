"""The claims check's cost per reply at 100, 1,000 and 40,000 characters: p50 and p99
of CPU time, and how it grows (linear: 40 k costs about 40x 1 k).

What each session pays after every assistant message, off its event loop
(``claims.find_claims``: the tool-aware reading, the grounding of specifics, a spec's
own patterns), with the context a real turn has: the agent's tools, a tool call of
the turn with its result, the caller's words. The reply mixes every form the reader
looks at (claims, conditions, offers, amounts, codes, times), repeated to the length;
the old worst case (one sentence of many conditions, quadratic before) is measured
at 40 k too. Prints one JSON object.

    python benchmarks/claims.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import time

from _common import emit, machine, percentile
from voice_runtime.session.claim_rules import Tool, ToolRun, Turn
from voice_runtime.session.claims import CHECK_BUDGET_S, compile_patterns, find_claims

UNIT = ("Once I've checked the calendar, if we booked it, I can cancel order 55120. Your balance is £1,204.50 "
        "and you have 3,200 points left. I've emailed you the invoice, reference QX7P2L, at 10:12. ")
CONDITIONS = "once I've checked the calendar, if we booked it, "
TURN = Turn(tools=[Tool("get_order", "Look up an order by its number."), Tool("cancel_order", "Cancel an order."),
                   Tool("send_email", "Send an email to the caller.")],
            calls=[ToolRun("get_order", {"order": "55120"}, "55120: processing; balance 1204.50 GBP")],
            caller="I want to cancel order 55120, how many points do I have?",
            instructions="You are the shop's assistant.")
SIZES = (100, 1_000, 40_000)
TARGET_P99_MS_1K = 5.0


def reply(chars: int, unit: str = UNIT) -> str:
    return (unit * (chars // len(unit) + 1))[:chars]


def cpu_ms(text: str, repeat: int) -> list[float]:
    """CPU times of ``repeat`` checks (a thread's time: the check runs in one)."""
    patterns = compile_patterns()
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        find_claims(text, TURN, patterns, budget_s=600.0)
        times.append((time.thread_time() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="checks per size (40 k: a tenth, at least 3)")
    args = parser.parse_args()
    result: dict[str, object] = {"benchmark": "claims", "repeat": args.repeat}
    p50 = {}
    for size in SIZES:
        times = cpu_ms(reply(size), args.repeat if size < 40_000 else max(3, args.repeat // 10))
        p50[size] = percentile(times, 50)
        result[f"p50_ms_{size}"] = round(p50[size], 3)
        result[f"p99_ms_{size}"] = round(percentile(times, 99), 3)
    conditions = cpu_ms(CONDITIONS * (40_000 // len(CONDITIONS)) + "fine. I've emailed you the invoice.",
                        max(3, args.repeat // 10))
    result.update({
        "p50_ms_40000_conditions": round(percentile(conditions, 50), 3),
        "ratio_40k_vs_1k": round(p50[40_000] / p50[1_000], 2), "linear_ratio": 40,
        "target_p99_ms_1000": TARGET_P99_MS_1K,
        "meets_target": result["p99_ms_1000"] <= TARGET_P99_MS_1K,  # type: ignore[operator]
        "budget_s_per_reply": CHECK_BUDGET_S, "machine": machine(),
    })
    emit(result)


if __name__ == "__main__":
    main()
