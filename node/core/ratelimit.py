"""Token buckets: a burst is allowed, a sustained rate above the limit is not. Pure.

Used on both sides of the federation link: the sender paces each peer
(node.delivery.peer_queue), the receiver answers 429 with ``Retry-After`` to a peer
that sends faster than its limit (node.federation.peer_limits). Time is a monotonic
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

    def try_take(self, now: float, cost: float = 1) -> float:
        """Take ``cost`` tokens if they are there and return 0; else the seconds until they are.

        ``cost`` above ``burst`` is charged as ``burst`` (a batch of messages is
        one request, never refused for good).
        """
        self._refill(now)
        cost = min(cost, self.burst)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def reserve(self, now: float, cost: float = 1) -> float:
        """Take ``cost`` tokens now, possibly going into debt; return how long to wait first.

        A paced sender calls this and sleeps the answer: messages leave at the rate.
        """
        self._refill(now)
        self.tokens -= cost
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def refund(self, cost: float = 1) -> None:
        """Give back what :meth:`reserve` took for a send that never reached the peer.

        Without it a peer that is down would run the pace into a debt that
        delays the first sends once it is back.
        """
        self.tokens = min(self.burst, self.tokens + cost)
