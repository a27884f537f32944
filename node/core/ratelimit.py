"""Token buckets: a burst is allowed, a sustained rate above the limit is not. Pure.

Used on both sides of the federation link: the sender paces each peer
(node.delivery.peer_queue), the receiver answers 429 with ``Retry-After`` to a peer
that sends faster than its limit (node.federation.peer_limits); the local API
keeps one bucket per user and one per client address (:class:`KeyedBuckets`).
Time is a monotonic number of seconds passed in by the caller, so the logic is
testable without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class KeyedBuckets:
    """One :class:`TokenBucket` per key (a user, a client address), full on first use.

    Keys are chosen by whoever sends requests, so the map is kept small: once
    it holds ``max_keys`` buckets, those that have refilled (and so behave
    exactly like a new one) are forgotten.
    """

    rate: float
    burst: float
    max_keys: int = 65_536
    _buckets: dict[str, TokenBucket] = field(default_factory=dict, init=False, repr=False)

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``'s bucket: 0 if allowed, else the seconds until one is back."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = TokenBucket.full(self.rate, self.burst, now)
        return bucket.try_take(now)

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            bucket._refill(now)
            if bucket.tokens >= bucket.burst:
                del self._buckets[key]
        while len(self._buckets) >= self.max_keys:  # all busy: the oldest starts afresh
            del self._buckets[next(iter(self._buckets))]
