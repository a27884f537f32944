"""Token buckets: a burst is allowed, a sustained rate above the limit is not. Pure.

Used on both sides of the federation link: the sender paces each peer
(node.peer_queue), the receiver answers 429 with ``Retry-After`` to a peer
that sends faster than its limit (node.inbound_limits). Time is a monotonic
number of seconds passed in by the caller, so the logic is testable without
waiting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one token per request."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def try_take(self, now: float) -> float:
        """Take a token if one is there and return 0; else the seconds until one is."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def reserve(self, now: float) -> float:
        """Take a token now, possibly going into debt; return how long to wait before using it.

        A paced sender calls this and sleeps the answer: requests leave at the rate.
        """
        self._refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
