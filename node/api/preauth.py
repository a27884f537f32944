"""Before a token is checked: a limit per client address; refusals counted, not logged singly.

Every request to the local API is first charged to its client address (a
token bucket: ``[api] preauth_rate_per_second`` after ``preauth_burst``), so a
flood is answered 429 before the database is touched. A request refused
before it is authenticated (401: no token, a made-up, expired or revoked one;
429 from this limit) is not audited on its own — a stranger's flood would
otherwise grow the append-only log without bound — but counted per source
and minute, and each minute that had refusals becomes one
``api.unauthenticated`` entry per source, with the count by reason
(docs/audit-log.md). The log grows with sources times minutes, not with requests.

A source is the client's IP address; an IPv6 client is counted by its /64,
the block one host usually holds. At most ``MAX_SOURCES_A_MINUTE`` sources
are counted apart in one minute; the rest are counted together as ``other``.
A crash loses the counts of the minute in progress (they are also logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from node.auditlog import entries as audit
from node.core.clock import rfc3339
from node.core.config import ApiConfig
from node.core.logs import get_logger
from node.core.ratelimit import KeyedBuckets
from node.storage.context import NodeContext

log = get_logger(__name__)

EVENT = "api.unauthenticated"
MAX_SOURCES_A_MINUTE = 1000
MAX_USERS_NAMED = 32
OTHER_SOURCES = "other"
FLUSH_INTERVAL_SECONDS = 10.0


def source_of(request: web.Request) -> str:
    """The client's address as counted here: IPv4 as is, IPv6 by its /64."""
    remote = request.remote or "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _minute(at: dt.datetime) -> dt.datetime:
    return at.replace(second=0, microsecond=0)


@dataclass
class _Count:
    reasons: Counter[str] = field(default_factory=Counter)
    users: set[str] = field(default_factory=set)


class RefusalTally:
    """Refusals before authentication, counted by (minute, source) until written."""

    def __init__(self, max_sources: int = MAX_SOURCES_A_MINUTE) -> None:
        self._max_sources = max_sources
        self._counts: dict[tuple[dt.datetime, str], _Count] = {}
        self._sources: Counter[dt.datetime] = Counter()

    def add(self, source: str, reason: str, at: dt.datetime, *, user: str | None = None) -> None:
        minute = _minute(at)
        key = (minute, source)
        if key not in self._counts:
            if self._sources[minute] >= self._max_sources:
                key = (minute, OTHER_SOURCES)
            else:
                self._sources[minute] += 1
        count = self._counts.setdefault(key, _Count())
        count.reasons[reason] += 1
        if user is not None and len(count.users) < MAX_USERS_NAMED:
            count.users.add(user)

    def take(self, *, before: dt.datetime | None) -> list[tuple[dt.datetime, str, _Count]]:
        """Remove and return the counts of minutes that ended ``before`` (all if None)."""
        cutoff = _minute(before) if before is not None else None
        taken = [
            (minute, source, count)
            for (minute, source), count in self._counts.items()
            if cutoff is None or minute < cutoff
        ]
        for minute, source, _ in taken:
            del self._counts[(minute, source)]
            self._sources.pop(minute, None)
        return sorted(taken, key=lambda item: (item[0], item[1]))

    async def flush(self, ctx: NodeContext, *, everything: bool = False) -> int:
        """Write one entry per finished (minute, source); ``everything`` includes this minute."""
        now = ctx.now()
        taken = self.take(before=None if everything else now)
        if not taken:
            return 0
        for minute, source, count in taken:  # logged first: a failed write loses nothing
            log.warning(
                "api_unauthenticated",
                source=source,
                minute=rfc3339(minute),
                count=sum(count.reasons.values()),
            )
        async with ctx.sessions.begin() as session:
            await audit.append_many(
                session,
                node=ctx.node_id,
                events=[
                    audit.event(
                        EVENT,
                        now,
                        source=source,
                        minute=rfc3339(minute),
                        count=sum(count.reasons.values()),
                        reasons=dict(sorted(count.reasons.items())),
                        users=sorted(count.users) or None,
                    )
                    for minute, source, count in taken
                ],
            )
        return len(taken)


class PreauthGate:
    """The per-address buckets and the tally of one API application."""

    def __init__(self, config: ApiConfig) -> None:
        self.buckets = KeyedBuckets(config.preauth_rate_per_second, config.preauth_burst)
        self.tally = RefusalTally()

    def admit(self, source: str) -> float:
        """0 if ``source`` may send one more request now, else the seconds to wait."""
        return self.buckets.take(source, time.monotonic())


async def flushing(
    ctx: NodeContext, gate: PreauthGate, interval: float = FLUSH_INTERVAL_SECONDS
) -> AsyncIterator[None]:
    """Write finished minutes every ``interval`` seconds, and what is left at shutdown."""

    async def run() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await gate.tally.flush(ctx)
            except Exception:  # the next pass tries again; the counts are also logged
                log.exception("api_unauthenticated_flush_failed")

    task = asyncio.create_task(run(), name="api-preauth-tally")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await gate.tally.flush(ctx, everything=True)
