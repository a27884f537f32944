"""A reception officer's inbox: received summaries as work items of one authority.

Items are indexed from ``received_messages`` on demand, sorted by arrival date
with priority cases first. Opening a summary is a *view* and is audited with
the user; acknowledging arrival and recording the outcome are the officer's
follow-up. An officer only ever sees items of their own authority. A
protection institution's officer receives the critical route's documents the
same way, with the fields withheld for her safety named as withheld
(:func:`withheld_for_safety`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.core.errors import PuenteError
from node.intake.summaries import readable_body
from node.intake.terms import CASE_SUMMARIES
from node.rules.consent import RecipientRef
from node.rules.critical_route import ROUTE_DOCUMENTS, WITHHELD_FOR_SAFETY, route_withheld
from node.rules.policy import default_policy_set
from node.storage.api_models import InboxItem
from node.storage.consent_models import ReceivedSummary
from node.storage.context import NodeContext
from node.storage.models import ReceivedMessage
from node.wire.fields import field_paths

OUTCOMES = (
    "received_at_reception",
    "referred_to_shelter",
    "referred_to_health_care",
    "referred_to_protection",
    "reunited_with_family",
    "did_not_arrive",
    "other",
)
# The summaries that become work items: returns, handoffs and the critical route's documents.
INBOX_DOCUMENTS = tuple(sorted(CASE_SUMMARIES))
# Flags that move a case up the list; the weights only order, they do not judge.
_PRIORITY_WEIGHTS = {
    "minor": 3,
    "age_in_doubt": 3,
    "trafficking_indicators": 3,
    "pregnant": 2,
    "health_condition": 2,
    "gender_based_violence": 2,
    "alone_with_children": 1,
    "disability": 1,
    "emotional_distress": 1,
    "needs_interpreter": 1,
    "indigenous": 0,
}


class InboxError(PuenteError):
    reason = "not_found"
    http_status = 404


class OutcomeError(PuenteError):
    reason = "bad_outcome"
    http_status = 422


@dataclass(frozen=True)
class InboxPage:
    items: list[InboxItem]
    total: int


def priority_of(document: Mapping[str, Any]) -> int:
    flags = document.get("priority_flags") or []
    return sum(_PRIORITY_WEIGHTS.get(str(flag), 1) for flag in flags)


async def readable_document(
    ctx: NodeContext, session: AsyncSession, row: ReceivedMessage
) -> dict[str, Any] | None:
    """The received summary (decrypted if kept encrypted), or None once it has been erased."""
    return await readable_body(ctx, session, row)


async def index_new_messages(ctx: NodeContext) -> int:
    """Create inbox items for received summaries that have none yet."""
    async with ctx.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(ReceivedMessage)
                    .outerjoin(InboxItem, InboxItem.received_id == ReceivedMessage.id)
                    .where(InboxItem.id.is_(None))
                    .where(ReceivedMessage.doc_type.in_(INBOX_DOCUMENTS))
                    .order_by(ReceivedMessage.id)
                )
            )
            .scalars()
            .all()
        )
    if not rows:
        return 0
    async with ctx.sessions.begin() as session:
        for row in rows:
            document = await readable_document(ctx, session, row) or {}
            arrival = document.get("arrival", {})
            session.add(
                InboxItem(
                    received_id=row.id,
                    authority=row.recipient_authority,
                    doc_type=row.doc_type,
                    sender_node=row.sender_node,
                    message_id=row.message_id,
                    arrival_date=arrival.get("date") if isinstance(arrival, dict) else None,
                    priority=priority_of(document),
                    received_at=row.received_at,
                )
            )
    return len(rows)


async def list_inbox(
    ctx: NodeContext,
    authority: str,
    *,
    arrival_from: dt.date | None = None,
    arrival_to: dt.date | None = None,
    doc_type: str | None = None,
    acknowledged: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> InboxPage:
    """Items of one authority: by arrival date, priority cases first within a day."""
    await index_new_messages(ctx)
    conditions = [InboxItem.authority == authority]
    if arrival_from is not None:
        conditions.append(InboxItem.arrival_date >= arrival_from.isoformat())
    if arrival_to is not None:
        conditions.append(InboxItem.arrival_date <= arrival_to.isoformat())
    if doc_type is not None:
        conditions.append(InboxItem.doc_type == doc_type)
    if acknowledged is not None:
        conditions.append(
            InboxItem.acknowledged_at.is_not(None)
            if acknowledged
            else InboxItem.acknowledged_at.is_(None)
        )
    where = and_(*conditions)
    async with ctx.sessions() as session:
        total = (
            await session.execute(select(func.count()).select_from(InboxItem).where(where))
        ).scalar_one()
        items = (
            (
                await session.execute(
                    select(InboxItem)
                    .where(where)
                    .order_by(
                        InboxItem.arrival_date.is_(None),
                        InboxItem.arrival_date,
                        InboxItem.priority.desc(),
                        InboxItem.id,
                    )
                    .limit(limit)
                    .offset(offset)
                )
            )
            .scalars()
            .all()
        )
    return InboxPage(items=list(items), total=int(total))


async def _own_item(ctx: NodeContext, authority: str, item_id: int) -> InboxItem:
    async with ctx.sessions() as session:
        item = await session.get(InboxItem, item_id)
    # Another authority's item is reported as absent, not as forbidden:
    # its existence is itself information.
    if item is None or item.authority != authority:
        raise InboxError("not_found", f"no inbox item {item_id}")
    return item


async def view_item(
    ctx: NodeContext, *, authority: str, username: str, item_id: int
) -> tuple[InboxItem, dict[str, Any] | None]:
    """The summary behind an item; the view is audited (who, which message, which fields)."""
    item = await _own_item(ctx, authority, item_id)
    async with ctx.sessions.begin() as session:
        row = await session.get(ReceivedMessage, item.received_id)
        document = await readable_document(ctx, session, row) if row is not None else None
        await audit.append(
            session,
            node=ctx.node_id,
            event="summary.viewed",
            at=ctx.now(),
            message_id=item.message_id,
            counterparty=item.sender_node,
            authority=authority,
            user=username,
            fields=field_paths(document) if document else [],
            erased=document is None,
        )
    return item, document


async def withheld_for_safety(
    ctx: NodeContext, item: InboxItem, document: Mapping[str, Any] | None
) -> list[dict[str, str]]:
    """The fields of a route document withheld from this authority for her safety.

    What the document itself shows (danger named in this country, her
    location released to nobody here) and its policy (which would carry the
    field) say what was withheld; the recipient marks it rather than showing
    a silent gap (docs/critical-route.md, S2).
    """
    if document is None or item.doc_type not in ROUTE_DOCUMENTS:
        return []
    async with ctx.sessions() as session:
        summary = (
            await session.execute(
                select(ReceivedSummary).where(
                    ReceivedSummary.received_message_id == item.received_id
                )
            )
        ).scalar_one_or_none()
    own = ctx.directory.node(ctx.node_id)
    authority = own.authorities.get(item.authority) if own else None
    policy = (
        default_policy_set().get(summary.policy_id, summary.policy_version) if summary else None
    )
    if summary is None or authority is None or policy is None:
        return []
    rule = policy.rule_for(summary.purpose, authority.kind)
    recipient = RecipientRef(ctx.node_id, item.authority, authority.kind)
    return [
        {"field": pattern, "reason": WITHHELD_FOR_SAFETY}
        for pattern in route_withheld(document, recipient=recipient)
        if rule is not None and rule.allows(pattern)
    ]


async def acknowledge(
    ctx: NodeContext, *, authority: str, username: str, item_id: int
) -> InboxItem:
    item = await _own_item(ctx, authority, item_id)
    async with ctx.sessions.begin() as session:
        stored = await session.get(InboxItem, item.id)
        assert stored is not None
        if stored.acknowledged_at is None:
            stored.acknowledged_at = ctx.now()
            stored.acknowledged_by = username
            await audit.append(
                session,
                node=ctx.node_id,
                event="arrival.acknowledged",
                at=stored.acknowledged_at,
                message_id=stored.message_id,
                counterparty=stored.sender_node,
                authority=authority,
                user=username,
            )
        return stored


async def record_outcome(
    ctx: NodeContext, *, authority: str, username: str, item_id: int, outcome: str, note: str | None
) -> InboxItem:
    if outcome not in OUTCOMES:
        raise OutcomeError("bad_outcome", f"outcome must be one of {', '.join(OUTCOMES)}")
    item = await _own_item(ctx, authority, item_id)
    async with ctx.sessions.begin() as session:
        stored = await session.get(InboxItem, item.id)
        assert stored is not None
        stored.outcome = outcome
        stored.outcome_note = note
        await audit.append(
            session,
            node=ctx.node_id,
            event="arrival.outcome_recorded",
            at=ctx.now(),
            message_id=stored.message_id,
            counterparty=stored.sender_node,
            authority=authority,
            user=username,
            outcome=outcome,
        )
        return stored
