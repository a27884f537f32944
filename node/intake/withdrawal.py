"""Consent withdrawal across the border: recipients erase, origins record the receipts.

At a recipient, a ``consent_withdrawal`` envelope is handled in the same
transaction that stores it: every summary from that sender under that
consent (full) or named by it (narrowed) is crypto-shredded, the node
remembers the withdrawal so that anything still in flight under it is
refused on arrival, and a signed ``erasure_receipt`` is queued back to the
sender. A recipient that was offline gets the withdrawal when it comes back
(the sender's outbox retries) and erases then.

At the origin, an ``erasure_receipt`` is checked against the withdrawal it
answers and recorded; node.casework.consents shows per recipient who confirmed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.core.clock import parse_rfc3339, rfc3339
from node.delivery.outbox import queue_disclosure
from node.intake.summaries import ERASURE_METHOD, audit_case_ref, erase
from node.intake.terms import TermsRefused
from node.storage.consent_models import (
    ConsentNotice,
    ErasureReceiptRow,
    ReceivedSummary,
    WithdrawalNotice,
)
from node.storage.context import NodeContext
from node.storage.models import Disclosure, ReceivedMessage
from node.wire.envelope import Message

# An erasure receipt must reach an origin that may itself be offline for a while.
RECEIPT_TTL = dt.timedelta(days=30)


async def is_withdrawn(
    session: AsyncSession, *, origin: str, consent_id: str, message_id: str
) -> bool:
    """Whether ``origin`` told this node to erase this message or everything under the consent."""
    notice = await session.get(ConsentNotice, (origin, consent_id))
    return notice is not None and (notice.scope == "full" or message_id in notice.messages)


async def apply_withdrawal(
    ctx: NodeContext, session: AsyncSession, message: Message, now: dt.datetime
) -> dict[str, Any]:
    """Erase what a withdrawal names and queue the erasure receipt. Returns its body."""
    body = message.body
    origin, consent_id = message.sender.node, body["consent_id"]
    named = {m["message_id"]: m["envelope_sha256"] for m in body["messages"]}
    scope = body["scope"]
    await _remember(session, message, named, now)

    condition: ColumnElement[bool] = ReceivedSummary.message_id.in_(list(named))
    if scope == "full":
        # Everything under the consent that came to this authority (each authority
        # that received data gets its own withdrawal), named or not.
        condition = or_(
            condition,
            and_(
                ReceivedSummary.consent_id == consent_id,
                ReceivedSummary.recipient_authority == message.recipient.authority,
            ),
        )
    rows = list(
        (
            await session.execute(
                select(ReceivedSummary)
                .where(ReceivedSummary.sender_node == origin, condition)
                .order_by(ReceivedSummary.id)
                .with_for_update()
            )
        ).scalars()
    )
    reason = "consent_withdrawn" if scope == "full" else "consent_narrowed"
    erased: list[dict[str, str]] = []
    for row in rows:
        if row.consent_id != consent_id:
            continue  # a withdrawal erases only what was sent under its own consent
        if row.erased_at is None:
            await erase(
                ctx,
                session,
                row,
                reason=reason,
                event="summary.erased",
                now=now,
                withdrawal_message_id=message.message_id,
            )
        envelope_sha256 = await _envelope_digest(session, row)
        erased.append(
            {
                "message_id": row.message_id,
                "envelope_sha256": envelope_sha256,
                "erased_at": rfc3339(row.erased_at or now),
                "reason": row.erasure_reason or reason,
            }
        )
    held = {e["message_id"] for e in erased}
    receipt = {
        "withdrawal_message_id": message.message_id,
        "consent_id": consent_id,
        "erased_at": rfc3339(now),
        "method": ERASURE_METHOD,
        "erased": erased,
        "not_held": sorted(set(named) - held),
    }
    await queue_disclosure(
        ctx,
        sender_authority=message.recipient.authority,
        recipient_node=origin,
        recipient_authority=message.sender.authority,
        doc_type="erasure_receipt",
        body=receipt,
        ttl=RECEIPT_TTL,
        audit_details={
            "case_ref": audit_case_ref(ctx, body["case_ref"]),
            "consent_id": consent_id,
            "withdrawal_message_id": message.message_id,
            "erased": [e["message_id"] for e in erased],
            "not_held": receipt["not_held"],
        },
        session=session,
    )
    return receipt


async def _remember(
    session: AsyncSession, message: Message, named: Mapping[str, str], now: dt.datetime
) -> None:
    body = message.body
    key = (message.sender.node, body["consent_id"])
    notice = await session.get(ConsentNotice, key)
    if notice is None:
        session.add(
            ConsentNotice(
                origin_node=key[0],
                consent_id=key[1],
                scope=body["scope"],
                remaining=body.get("remaining"),
                messages=sorted(named),
                withdrawal_message_id=message.message_id,
                at=now,
            )
        )
    else:
        if notice.scope != "full":
            notice.scope = body["scope"]
            notice.remaining = body.get("remaining")
        notice.messages = sorted(set(notice.messages) | set(named))
        notice.withdrawal_message_id = message.message_id
        notice.at = now
    await session.flush()


async def _envelope_digest(session: AsyncSession, row: ReceivedSummary) -> str:
    received = await session.get(ReceivedMessage, row.received_message_id)
    return received.envelope_sha256 if received else ""


@dataclass(frozen=True)
class Confirmation:
    """One recipient's erasure receipt, as recorded by the origin."""

    recipient_node: str
    receipt_message_id: str
    erased_at: dt.datetime
    erased: tuple[str, ...]
    not_held: tuple[str, ...]


async def check_erasure_receipt(session: AsyncSession, message: Message) -> WithdrawalNotice:
    """The withdrawal an erasure receipt answers; refuses one this node never sent that peer."""
    body = message.body
    withdrawal = await session.get(WithdrawalNotice, body["withdrawal_message_id"])
    if (
        withdrawal is None
        or withdrawal.recipient_node != message.sender.node
        or withdrawal.consent_id != body["consent_id"]
    ):
        raise TermsRefused("unknown_withdrawal", "this node sent no such withdrawal to the sender")
    try:
        parse_rfc3339(body["erased_at"])
    except ValueError as exc:
        raise TermsRefused("malformed_message", "erased_at unreadable") from exc
    return withdrawal


async def record_erasure_receipt(
    ctx: NodeContext, session: AsyncSession, message: Message, now: dt.datetime
) -> dict[str, Any]:
    """Record an erasure receipt answering a withdrawal this node sent. Returns audit details."""
    body = message.body
    withdrawal = await check_erasure_receipt(session, message)
    erased_at = parse_rfc3339(body["erased_at"])
    existing = (
        await session.execute(
            select(ErasureReceiptRow).where(
                ErasureReceiptRow.withdrawal_message_id == withdrawal.message_id
            )
        )
    ).scalar_one_or_none()
    if existing is None:
        session.add(
            ErasureReceiptRow(
                withdrawal_message_id=withdrawal.message_id,
                consent_id=withdrawal.consent_id,
                recipient_node=message.sender.node,
                receipt_message_id=message.message_id,
                erased_at=erased_at,
                erased=list(body["erased"]),
                not_held=list(body["not_held"]),
                received_at=now,
            )
        )
    erased_ids = [e["message_id"] for e in body["erased"]]
    missing = sorted(set(withdrawal.messages) - set(erased_ids) - set(body["not_held"]))
    # The withdrawal this answers names the case and both authorities: so does its receipt's entry.
    sent = await session.get(Disclosure, withdrawal.message_id)
    context = dict(sent.audit_context or {}) if sent is not None else {}
    context.pop("user", None)  # the receipt is the recipient's act, not our user's
    context.pop("doc_type", None)
    return {
        **context,
        "consent_id": withdrawal.consent_id,
        "withdrawal_message_id": withdrawal.message_id,
        "erased": erased_ids,
        "not_held": list(body["not_held"]),
        # Named in the withdrawal yet absent from the receipt: flagged for follow-up.
        "unanswered": missing or None,
        "review_required": True if missing else None,
        "method": body["method"],
    }


async def confirmations_for(ctx: NodeContext, consent_id: str) -> dict[str, Confirmation]:
    """Erasure receipts for a consent, by the withdrawal message they answer."""
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(ErasureReceiptRow).where(ErasureReceiptRow.consent_id == consent_id)
            )
        ).scalars()
        return {
            row.withdrawal_message_id: Confirmation(
                recipient_node=row.recipient_node,
                receipt_message_id=row.receipt_message_id,
                erased_at=row.erased_at,
                erased=tuple(e["message_id"] for e in row.erased),
                not_held=tuple(row.not_held),
            )
            for row in rows
        }


def withdrawal_audit_details(ctx: NodeContext, message: Message) -> dict[str, Any]:
    body = message.body
    return {
        "consent_id": body["consent_id"],
        "case_ref": audit_case_ref(ctx, body["case_ref"]),
        "scope": body["scope"],
        "erase": [m["message_id"] for m in body["messages"]],
    }
