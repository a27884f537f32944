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
