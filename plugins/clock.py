"""Example local plugin: date and time tools that need no network.

Drop a file like this into plugins/ and list its tools in a spec (`tools: [clock.now]`).
A factory returns plain functions: the model sees each one's name, docstring and
typed parameters, and neither `check`, `tools` nor `call` needs to import livekit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import voice_runtime


def now_in(timezone: str) -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris"
    return dt.datetime.now(zone).strftime("%A %d %B %Y, %H:%M %Z")


def days_until(date: str, today: dt.date | None = None) -> str:
    try:
        target = dt.date.fromisoformat(date)
    except ValueError:
        return f"{date!r} is not a date; use YYYY-MM-DD"
    days = (target - (today or dt.date.today())).days
    if days == 0:
        return "that is today"
    return f"{days} days from today" if days > 0 else f"{-days} days ago"


async def current_time(timezone: str) -> str:
    """The current date and time in a time zone.

    Args:
        timezone: IANA time zone name, e.g. Europe/Paris or America/New_York.
    """
    return now_in(timezone)


async def count_days_until(date: str) -> str:
    """How many days from today until a date (negative dates are in the past).

    Args:
        date: the date, as YYYY-MM-DD.
    """
    return days_until(date)


@voice_runtime.hookimpl
def voice_runtime_register_tools(register: Any) -> None:
    register("clock.now", lambda: current_time, description="Current date and time in a time zone")
    register("clock.days_until", lambda: count_days_until, description="Days from today until a date")
