"""An exception as one line for a person, with the durations in it rounded.

livekit's fallback adapters put raw float seconds into their errors ("all LLMs failed
(...) after 0.008476972579956055 seconds"); a chat line, a call report or a test
failure showing that says nothing more than "after 0.0 seconds" would, and reads as a bug.
"""

from __future__ import annotations

import re

# a number with two or more decimals followed by a unit of seconds; not part of a version
# ("1.8.9") or of a longer number
_LONG_SECONDS = re.compile(r"(?<![\d.])(\d+\.\d{2,})(?![\d.])(\s*)(seconds|second|secs|sec|s)\b")


def rounded_seconds(text: str) -> str:
    """``text`` with each duration in seconds given to one decimal ("after 2.0 seconds"),
    or as "less than 0.1" when it rounds to nothing."""
    def one(match: re.Match[str]) -> str:
        value = float(match.group(1))
        shown = f"{value:.1f}" if value >= 0.05 else "less than 0.1"
        return f"{shown}{match.group(2)}{match.group(3)}"

    return _LONG_SECONDS.sub(one, text)


def error_text(exc: BaseException) -> str:
    """``"APIConnectionError: ... after 2.0 seconds"``: the type, then the message (if any)."""
    text = rounded_seconds(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
