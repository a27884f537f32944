"""Time in one place: timezone-aware UTC, RFC 3339 text, a clock tests can move."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def rfc3339(moment: dt.datetime) -> str:
    """RFC 3339 text in UTC with a ``Z`` suffix and whole seconds."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str) -> dt.datetime:
    """Parse RFC 3339 text into an aware datetime; raises ValueError."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return moment.astimezone(dt.UTC)


def parse_bound(text: str, zone: dt.tzinfo, *, end: bool = False) -> dt.datetime:
    """A time bound a person typed: RFC 3339, or a date (``2026-11-23``) as a whole day.

    A date is that day in ``zone`` (the node's time zone): its first instant,
    or with ``end`` the first instant of the next day, so that ``since=D`` and
    ``until=D`` together cover all of day D. Raises ValueError for anything else.
    """
    if len(text) == 10:
        day = dt.date.fromisoformat(text)
        if end:
            day += dt.timedelta(days=1)
        return dt.datetime.combine(day, dt.time(), tzinfo=zone).astimezone(dt.UTC)
    return parse_rfc3339(text)
