"""What one peer may ask of our federation endpoint: a request rate and a number at once.

A member that sends faster than ``inbound_rate_per_peer`` (after a burst of
``inbound_burst_per_peer``), or has more than
``inbound_max_concurrent_per_peer`` requests open, is answered 429 with
``Retry-After`` before its body is read; the sender treats that as "later"
(node.delivery.peer_queue). A body that takes longer than ``inbound_body_timeout``
to arrive is answered 408. So one slow or flooding peer cannot take the
connections, memory or database time the others need. The witness endpoint
has its own allowance (``witness_*_per_peer``), so a flood of checkpoints
cannot hold back messages, nor messages checkpoints.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from node.core.config import DeliveryConfig
from node.core.errors import PuenteError
from node.core.ratelimit import TokenBucket


class Throttled(PuenteError):
    """The peer must slow down; ``retry_after`` says for how many seconds."""

    reason = "rate_limited"
    http_status = 429

    def __init__(self, reason: str, detail: str, retry_after: float) -> None:
        super().__init__(reason, detail)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """RFC 9110 delta-seconds, rounded up so the peer does not come back too early."""
        return str(max(1, math.ceil(self.retry_after)))


class BodyTimeout(PuenteError):
    """The request body did not arrive in time."""

    reason = "request_timeout"
    http_status = 408


@dataclass(frozen=True)
class PeerAllowance:
    """What one peer may ask of one endpoint: a rate, a burst, a number at once, a body time."""

    rate: float
    burst: int
    max_concurrent: int
    body_timeout: float

    @classmethod
    def messages(cls, config: DeliveryConfig) -> PeerAllowance:
        """Envelopes and batches (``inbound_*``)."""
        return cls(
            config.inbound_rate_per_peer,
            config.inbound_burst_per_peer,
            config.inbound_max_concurrent_per_peer,
            config.inbound_body_timeout,
        )

    @classmethod
    def witness(cls, config: DeliveryConfig) -> PeerAllowance:
        """Checkpoints submitted to be witnessed (``witness_*``)."""
        return cls(
            config.witness_rate_per_peer,
            config.witness_burst_per_peer,
            config.witness_max_concurrent_per_peer,
            config.inbound_body_timeout,
        )


class InboundLimits:
    """Per-peer token buckets and in-flight counters for one federation endpoint."""

    def __init__(
        self, allowance: PeerAllowance, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._allowance = allowance
        self._monotonic = monotonic
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[str, int] = {}

    @property
    def body_timeout(self) -> float:
        return self._allowance.body_timeout

    def in_flight(self, peer: str) -> int:
        """How many of ``peer``'s requests are being handled now."""
        return self._in_flight.get(peer, 0)

    @asynccontextmanager
    async def admitted(self, peer: str) -> AsyncIterator[None]:
        """Hold one of ``peer``'s request slots, or raise :class:`Throttled`."""
        self._admit(peer)
        self._in_flight[peer] = self._in_flight.get(peer, 0) + 1
        try:
            yield
        finally:
            self._in_flight[peer] -= 1

    def charge(self, peer: str, messages: int) -> None:
        """Charge an admitted batch of ``messages`` for the rest of its cost, or raise Throttled.

        The rate counts messages: a batch of n costs what n requests would (at
        most the burst, so any batch can get through), and admission already
        took one.
        """
        bucket = self._buckets.get(peer)
        if bucket is None:  # pragma: no cover - admitted() made it
            return
        rest = min(messages, self._allowance.burst) - 1
        if rest < 1:
            return
        wait = bucket.try_take(self._monotonic(), rest)
        if wait > 0:
            # Refused whole: give back what admission took, or a peer retrying a
            # batch faster than the bucket refills would never save up enough.
            bucket.refund(1)
            raise Throttled(
                "rate_limited",
                f"more than {self._allowance.rate:g} messages a second",
                retry_after=wait,
            )

    def _admit(self, peer: str) -> None:
        allowance = self._allowance
        if self._in_flight.get(peer, 0) >= allowance.max_concurrent:
            raise Throttled(
                "too_many_concurrent_requests",
                f"at most {allowance.max_concurrent} requests at once per peer",
                retry_after=1.0,
            )
        now = self._monotonic()
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = TokenBucket.full(allowance.rate, allowance.burst, now)
        wait = bucket.try_take(now)
        if wait > 0:
            raise Throttled(
                "rate_limited",
                f"more than {allowance.rate:g} requests a second",
                retry_after=wait,
            )

    async def read_body(self, request: web.Request) -> bytes:
        """The request body, or :class:`BodyTimeout` if it does not arrive in time."""
        try:
            async with asyncio.timeout(self.body_timeout):
                return await request.read()
        except TimeoutError as exc:
            raise BodyTimeout(detail="the request body did not arrive in time") from exc
