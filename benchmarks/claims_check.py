"""The claims check on long replies: CPU time at 4 k and 40 k characters, and their ratio.

What each session pays after every assistant message (``claims.find_claim``, built-in
patterns). The reply is the check's worst case found so far: one sentence of many
matches that are conditions ("once I've checked ..., if we booked ..."), each of which
made the old check re-read the whole sentence before it (quadratic: 6.7 s at 40 k
characters). Linear means a ratio near 10. Prints one JSON object.

    python benchmarks/claims_check.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from voice_runtime.session.claims import CHECK_BUDGET_S, compile_patterns, find_claim

UNIT = "once I've checked the calendar, if we booked it, "
CLAIM = "fine. I've emailed you the invoice."


def reply(chars: int) -> str:
    body = (UNIT * (chars // len(UNIT) + 1))[: chars - len(CLAIM)]
    return body + CLAIM


def cpu_seconds(text: str, repeat: int) -> float:
    """The median CPU time of one check (a thread's time: find_claim runs in one)."""
    patterns = compile_patterns()
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        found = find_claim(text, patterns, budget_s=600.0)
        times.append(time.thread_time() - started)
        if found != "I've emailed you the invoice.":
            sys.exit(f"the check missed the claim at the end of {len(text)} characters: {found!r}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    short, long = cpu_seconds(reply(4_000), args.repeat), cpu_seconds(reply(40_000), args.repeat)
    print(json.dumps({
        "benchmark": "claims_check", "repeat": args.repeat,
        "cpu_ms_4k": round(short * 1000, 2), "cpu_ms_40k": round(long * 1000, 2),
        "ratio_40k_vs_4k": round(long / short, 2), "target_ratio": "about 10 (linear)",
        "budget_s_per_reply": CHECK_BUDGET_S,
    }))


if __name__ == "__main__":
    main()
