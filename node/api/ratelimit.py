"""Per-user token buckets: a burst is allowed, a sustained flood is refused with 429."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``allow(key)`` spends one token; ``retry_after(key)`` says when one returns."""

    def __init__(
        self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_second
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False

    def retry_after(self, key: str) -> float:
        bucket = self._buckets.get(key)
        if bucket is None or self.rate <= 0:
            return 1.0
        return max(0.0, (1 - bucket.tokens) / self.rate)
