"""What the sending authority can see of delivery: each disclosure's state, each peer's health.

One module of read-only queries that ``puente status`` and the local API both
call, so they can never disagree. Every query is bounded: lists are paged,
counts use the state and pending indexes, nothing loads the whole outbox.
Views carry ids, states, reason codes and times, never case contents.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text

from node.core.clock import rfc3339
from node.delivery.store import oldest_pending
from node.storage.context import NodeContext
from node.storage.delivery_models import PENDING_PREDICATE, DeliveryPeer
from node.storage.models import Disclosure

STATES = ("queued", "sending", "delivered", "refused", "expired")
MAX_PAGE = 1000


def _time(moment: dt.datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


@dataclass(frozen=True)
class DisclosureView:
    """One disclosure as its sender sees it."""

    message_id: str
    doc_type: str
    sender_authority: str
    recipient_node: str
    recipient_authority: str
    state: str
    attempts: int
    created_at: dt.datetime
    expires_at: dt.datetime
    next_attempt_at: dt.datetime | None  # only while pending
    delivered_at: dt.datetime | None
    refusal_reason: str | None
    last_error: str | None
    has_receipt: bool

    @classmethod
    def of(cls, row: Disclosure, queue_head_due: dt.datetime | None = None) -> DisclosureView:
        """The view of ``row``; a pending one waits at least until its queue's head is due."""
        pending = row.state in ("queued", "sending")
        next_attempt = row.next_attempt_at
        if queue_head_due is not None and queue_head_due > next_attempt:
            next_attempt = queue_head_due
        return cls(
            message_id=row.message_id,
            doc_type=row.doc_type,
            sender_authority=row.sender_authority,
            recipient_node=row.recipient_node,
            recipient_authority=row.recipient_authority,
            state=row.state,
            attempts=row.attempts,
            created_at=row.created_at,
            expires_at=row.expires_at,
            next_attempt_at=next_attempt if pending else None,
            delivered_at=row.delivered_at,
            refusal_reason=row.refusal_reason,
            last_error=row.last_error,
            has_receipt=row.receipt is not None,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "doc_type": self.doc_type,
            "sender_authority": self.sender_authority,
            "recipient": f"{self.recipient_node}/{self.recipient_authority}",
            "state": self.state,
            "attempts": self.attempts,
            "created_at": _time(self.created_at),
            "expires_at": _time(self.expires_at),
            "next_attempt_at": _time(self.next_attempt_at),
            "delivered_at": _time(self.delivered_at),
            "refusal_reason": self.refusal_reason,
            "last_error": self.last_error,
            "receipt": self.has_receipt,
        }


@dataclass(frozen=True)
class PeerHealth:
    """One destination node: can we reach it, how much waits for it, when we try next."""

    peer: str
    reachable: bool | None  # None: never tried
    backlog: int
    oldest_pending_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    consecutive_failures: int
    last_attempt_at: dt.datetime | None
    last_success_at: dt.datetime | None
    last_failure_at: dt.datetime | None
    last_error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "reachable": self.reachable,
            "backlog": self.backlog,
            "oldest_pending_at": _time(self.oldest_pending_at),
            "next_attempt_at": _time(self.next_attempt_at),
            "consecutive_failures": self.consecutive_failures,
            "last_attempt_at": _time(self.last_attempt_at),
            "last_success_at": _time(self.last_success_at),
            "last_failure_at": _time(self.last_failure_at),
            "last_error": self.last_error,
        }


def _reachable(health: DeliveryPeer | None) -> bool | None:
    if health is None or health.last_attempt_at is None:
        return None
    if health.last_failure_at is None:
        return True
    return health.last_success_at is not None and health.last_success_at >= health.last_failure_at


async def peers(ctx: NodeContext) -> list[PeerHealth]:
    """Every member node (and any former one with history), with backlog and next retry."""
    async with ctx.sessions() as session:
        backlog = {
            peer: int(count)
            for peer, count in (
                await session.execute(
                    select(Disclosure.recipient_node, func.count())
                    .where(text(PENDING_PREDICATE))
                    .group_by(Disclosure.recipient_node)
                )
            ).all()
        }
        known_peers = (await session.execute(select(DeliveryPeer))).scalars()
        health = {row.peer_node: row for row in known_peers}
    peer_ids = sorted(
        {p for p in ctx.directory.nodes if p != ctx.node_id} | set(backlog) | set(health)
    )
    views = []
    for peer in peer_ids:
        head = await oldest_pending(ctx, peer, 1) if backlog.get(peer) else []
        known = health.get(peer)
        views.append(
            PeerHealth(
                peer=peer,
                reachable=_reachable(known),
                backlog=backlog.get(peer, 0),
                oldest_pending_at=head[0].created_at if head else None,
                next_attempt_at=head[0].next_attempt_at if head else None,
                consecutive_failures=known.consecutive_failures if known else 0,
                last_attempt_at=known.last_attempt_at if known else None,
                last_success_at=known.last_success_at if known else None,
                last_failure_at=known.last_failure_at if known else None,
                last_error=known.last_error if known else None,
            )
        )
    return views


async def counts(ctx: NodeContext) -> dict[str, int]:
    """How many disclosures are in each state."""
    async with ctx.sessions() as session:
        rows = (
            await session.execute(select(Disclosure.state, func.count()).group_by(Disclosure.state))
        ).all()
    found = {state: int(count) for state, count in rows}
    return {state: found.get(state, 0) for state in (*STATES, *sorted(set(found) - set(STATES)))}


async def disclosures(
    ctx: NodeContext,
    *,
    state: str | None = None,
    peer: str | None = None,
    limit: int = 50,
    before: dt.datetime | None = None,
) -> list[DisclosureView]:
    """The newest disclosures first (optionally of one state or peer), one page at a time."""
    query = select(Disclosure).order_by(Disclosure.created_at.desc(), Disclosure.message_id.desc())
    if state is not None:
        query = query.where(Disclosure.state == state)
    if peer is not None:
        query = query.where(Disclosure.recipient_node == peer)
    if before is not None:
        query = query.where(Disclosure.created_at < before)
    async with ctx.sessions() as session:
        rows = list((await session.execute(query.limit(max(1, min(limit, MAX_PAGE))))).scalars())
    heads = await _queue_heads_due(ctx, {r.recipient_node for r in rows if _pending(r)})
    return [DisclosureView.of(row, heads.get(row.recipient_node)) for row in rows]


async def disclosure(ctx: NodeContext, message_id: str) -> DisclosureView | None:
    """One disclosure's state, or None."""
    async with ctx.sessions() as session:
        row = await session.get(Disclosure, message_id)
    if row is None:
        return None
    heads = await _queue_heads_due(ctx, {row.recipient_node} if _pending(row) else set())
    return DisclosureView.of(row, heads.get(row.recipient_node))


def _pending(row: Disclosure) -> bool:
    return row.state in ("queued", "sending")


async def _queue_heads_due(ctx: NodeContext, peers: set[str]) -> dict[str, dt.datetime]:
    """When each peer's oldest pending disclosure is due: nothing behind it goes sooner."""
    heads = {}
    for peer in sorted(peers):
        head = await oldest_pending(ctx, peer, 1)
        if head:
            heads[peer] = head[0].next_attempt_at
    return heads
