"""The outbox in the database: the deliverer's reads and its state transitions.

Every transition of a disclosure (queued → sending → delivered, refused,
expired, or back to queued to retry) is one transaction together with its
audit entry and the peer's health, so a crash at any instant leaves either
the old state or the new one, never a state without its audit entry. Reads
are bounded: the oldest ``limit`` pending disclosures of one peer through a
partial index, never the whole queue.

The ``sending`` state means "may have left this node": a disclosure in it is
sent again after a crash (the recipient answers a repeat with the same
receipt), and it is not expired without a last attempt to learn whether the
recipient already holds it (docs/delivery.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.core.canonical import sha256_hex
from node.delivery.backoff import retry_delay
from node.storage.context import NodeContext
from node.storage.delivery_models import PENDING_PREDICATE, DeliveryPeer
from node.storage.models import Disclosure

_PENDING = text(PENDING_PREDICATE)


class Result(Enum):
    """What became of one disclosure in one delivery round."""

    DELIVERED = "delivered"  # receipt verified; stored with the row
    REFUSED = "refused"  # the recipient refused it for good, with a reason code
    EXPIRED = "expired"  # no receipt before its expiry
    RETRY = "retry"  # failed in a way that may succeed later
    UNTRIED = "untried"  # marked sending but not sent (an earlier one failed first)


@dataclass(frozen=True)
class Outcome:
    message_id: str
    result: Result
    attempted: bool = True
    receipt: str | None = None
    reason: str | None = None  # refusal reason code, or the error of a failed attempt
    retry_after: float | None = None  # the peer's Retry-After, if it sent one


class PeerVerdict(Enum):
    """What one round says about the peer itself."""

    WORKING = "working"  # it answered (a receipt or a refusal): reachable
    FAILING = "failing"  # network error, timeout, 5xx, bad receipt: back off
    THROTTLED = "throttled"  # it asked us to slow down (429): wait as told
    SILENT = "silent"  # nothing was sent this round


async def oldest_pending(ctx: NodeContext, peer: str, limit: int) -> list[Disclosure]:
    """The peer's oldest ``limit`` pending disclosures, in queue order."""
    query = (
        select(Disclosure)
        .where(Disclosure.recipient_node == peer, _PENDING)
        .order_by(Disclosure.created_at, Disclosure.message_id)
        .limit(limit)
    )
    async with ctx.sessions() as session:
        return list((await session.execute(query)).scalars())


async def mark_sending(ctx: NodeContext, message_ids: Sequence[str]) -> set[str]:
    """Mark pending disclosures as sending; returns the ids still pending (safe to send)."""
    if not message_ids:
        return set()
    async with ctx.sessions.begin() as session:
        rows = (
            await session.execute(
                select(Disclosure)
                .where(Disclosure.message_id.in_(message_ids), _PENDING)
                .with_for_update()
            )
        ).scalars()
        pending = set()
        for row in rows:
            row.state = "sending"
            pending.add(row.message_id)
    return pending


async def record_outcomes(
    ctx: NodeContext, peer: str, outcomes: Sequence[Outcome], verdict: PeerVerdict
) -> None:
    """Store one round's outcomes, their audit entries and the peer's health, atomically."""
    for _attempt in range(2):
        try:
            async with ctx.sessions.begin() as session:
                await _record(ctx, session, peer, outcomes, verdict)
            return
        except IntegrityError:
            # Another process created the peer's health row first; run again.
            continue
    raise RuntimeError("could not record delivery outcomes")  # pragma: no cover


async def _record(
    ctx: NodeContext,
    session: AsyncSession,
    peer: str,
    outcomes: Sequence[Outcome],
    verdict: PeerVerdict,
) -> None:
    now = ctx.now()
    health = await _peer_health(session, peer)
    config = ctx.config.delivery
    if verdict is PeerVerdict.WORKING:
        health.consecutive_failures = 0
        health.last_success_at = now
    elif verdict is PeerVerdict.FAILING:
        health.consecutive_failures += 1
        health.last_failure_at = now
    if verdict is not PeerVerdict.SILENT:
        health.last_attempt_at = now
    rows = {
        row.message_id: row
        for row in (
            await session.execute(
                select(Disclosure)
                .where(Disclosure.message_id.in_([o.message_id for o in outcomes]))
                .with_for_update()
            )
        ).scalars()
    }
    events: list[audit.AuditEvent] = []
    backoff: float | None = None
    for outcome in outcomes:
        row = rows.get(outcome.message_id)
        if row is None or row.state not in ("queued", "sending"):
            continue  # settled meanwhile (e.g. by a second deliverer): keep the first word
        if outcome.attempted:
            row.attempts += 1
        if outcome.result is Result.DELIVERED:
            events.append(_delivered(row, outcome, now))
        elif outcome.result is Result.REFUSED:
            events.append(_refused(row, outcome.reason or "refused", now))
        elif outcome.result is Result.EXPIRED:
            if outcome.reason:
                row.last_error = outcome.reason[:200]
            events.append(_expired(row, now))
        elif outcome.result is Result.RETRY:
            wait = outcome.retry_after
            if wait is None:
                # One jittered delay a round: what failed together (a batch) is
                # tried again together, and nothing behind the head comes due first.
                if backoff is None:
                    backoff = retry_delay(
                        health.consecutive_failures,
                        base=config.retry_base,
                        ceiling=config.retry_max,
                    )
                wait = backoff
            row.state = "queued"
            row.last_error = (outcome.reason or "error")[:200]
            row.next_attempt_at = now + dt.timedelta(seconds=min(wait, config.retry_max))
            health.last_error = row.last_error
        else:
            row.state = "queued"
    await session.flush()
    if events:
        await audit.append_many(session, node=ctx.node_id, events=events)
    ctx.crash_points.reached("sender.outcome_uncommitted")


async def _peer_health(session: AsyncSession, peer: str) -> DeliveryPeer:
    health = await session.get(DeliveryPeer, peer, with_for_update=True)
    if health is None:
        health = DeliveryPeer(peer_node=peer, consecutive_failures=0)
        session.add(health)
    return health


# Each transition below changes the row and returns its audit entry; the
# caller appends a round's entries together (audit.append_many) before commit.


def _delivered(row: Disclosure, outcome: Outcome, now: dt.datetime) -> audit.AuditEvent:
    assert outcome.receipt is not None
    row.state = "delivered"
    row.receipt = outcome.receipt
    row.delivered_at = now
    row.last_error = None
    return audit.event(
        "disclosure.delivered",
        now,
        message_id=row.message_id,
        counterparty=row.recipient_node,
        **(row.audit_context or {}),
        envelope_sha256=row.envelope_sha256,
        receipt_sha256=sha256_hex(outcome.receipt.encode("ascii")),
    )


def _refused(row: Disclosure, reason: str, now: dt.datetime) -> audit.AuditEvent:
    row.state = "refused"
    row.refusal_reason = reason[:64]
    row.last_error = reason[:200]
    return audit.event(
        "disclosure.refused",
        now,
        message_id=row.message_id,
        counterparty=row.recipient_node,
        **(row.audit_context or {}),
        reason=row.refusal_reason,
    )


def _expired(row: Disclosure, now: dt.datetime) -> audit.AuditEvent:
    row.state = "expired"
    return audit.event(
        "disclosure.expired",
        now,
        message_id=row.message_id,
        counterparty=row.recipient_node,
        **(row.audit_context or {}),
        attempts=row.attempts,
        last_error=row.last_error,
    )


async def expire_unsent(ctx: NodeContext, limit: int = 500) -> int:
    """Expire overdue disclosures that never left this node. Returns how many.

    Only ``queued`` rows with no attempt are certain never to have reached the
    recipient; the others get a last attempt from their peer queue first.
    """
    now = ctx.now()
    overdue = (
        _PENDING,
        Disclosure.expires_at <= now,
        Disclosure.state == "queued",
        Disclosure.attempts == 0,
    )
    async with ctx.sessions() as session:
        # Usually there is nothing to expire: find out without taking the write lock.
        first = await session.execute(select(Disclosure.message_id).where(*overdue).limit(1))
        if first.first() is None:
            return 0
    async with ctx.sessions.begin() as session:
        rows = list(
            (
                await session.execute(
                    select(Disclosure)
                    .where(*overdue)
                    .order_by(Disclosure.expires_at)
                    .limit(limit)
                    .with_for_update()
                )
            ).scalars()
        )
        if rows:
            events = [_expired(row, now) for row in rows]
            await audit.append_many(session, node=ctx.node_id, events=events)
    return len(rows)


async def refuse_orphans(ctx: NodeContext, members: Collection[str], limit: int = 500) -> int:
    """Refuse pending disclosures to nodes no longer in the directory. Returns how many."""
    now = ctx.now()
    async with ctx.sessions.begin() as session:
        rows = list(
            (
                await session.execute(
                    select(Disclosure)
                    .where(_PENDING, Disclosure.recipient_node.not_in(list(members)))
                    .limit(limit)
                    .with_for_update()
                )
            ).scalars()
        )
        if rows:
            events = [_refused(row, "recipient_not_a_member", now) for row in rows]
            await audit.append_many(session, node=ctx.node_id, events=events)
    return len(rows)


async def retry_now(ctx: NodeContext, peer: str) -> int:
    """Cancel the peer's backoff (an operator knows it is back). Returns rows made due."""
    now = ctx.now()
    async with ctx.sessions.begin() as session:
        result = await session.execute(
            update(Disclosure)
            .where(Disclosure.recipient_node == peer, _PENDING, Disclosure.next_attempt_at > now)
            .values(next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)
