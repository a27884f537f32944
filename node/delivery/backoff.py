"""When to try a peer again: jittered exponential backoff and ``Retry-After``. Pure.

Synapse's retry rule, simplified: after the n-th consecutive failure, wait a
random time between half of and the full ``base * 2**(n-1)``, never more than
``ceiling``. The jitter keeps many senders from returning to a recovered peer
in lock-step; the ceiling bounds how late a peer back from a long outage is
noticed.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random


def retry_delay(
    failures: int, *, base: float, ceiling: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (at least 1)."""
    exponent = min(max(failures, 1) - 1, 62)
    top = min(ceiling, base * 2.0**exponent)
    if rng is None:
        return random.uniform(top / 2, top)  # noqa: S311 - timing jitter, not security
    return rng.uniform(top / 2, top)


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """RFC 9110 ``Retry-After``: delta-seconds or an HTTP-date; None if absent or invalid."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
