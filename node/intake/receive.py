"""Accepting an envelope from a peer: open, de-duplicate, store, receipt, audit.

An accepted envelope is stored byte for byte with its signed receipt and an
audit entry, in one transaction. A retry of the same bytes gets the same
receipt and creates nothing new; other bytes under a used message id are
refused. Every refusal is audited with its reason code.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from node.auditlog import entries as audit
from node.core.canonical import sha256_hex
from node.core.errors import EnvelopeError, PuenteError
from node.core.logs import get_logger
from node.intake.documents import Intake
from node.intake.documents import prepare as prepare_intake
from node.storage.context import NodeContext
from node.storage.models import ReceivedMessage
from node.wire.envelope import OpenedEnvelope, open_envelope
from node.wire.fields import field_paths
from node.wire.receipts import issue_receipt

log = get_logger(__name__)


class MessageIdReused(EnvelopeError):
    reason = "message_id_reused"
    http_status = 409


@dataclass(frozen=True)
class Accepted:
    receipt: str
    duplicate: bool


async def receive(ctx: NodeContext, envelope: bytes, *, peer_node: str) -> Accepted:
    """Accept one envelope from the TLS-authenticated ``peer_node``, or raise a refusal."""
    now = ctx.now()
    digest = sha256_hex(envelope)
    try:
        opened = open_from(ctx, envelope, peer_node, now)
    except EnvelopeError as refusal:
        # The exact bytes we already accepted from this peer (a retry after a
        # lost answer) get the same receipt, even once the message has expired
        # or keys have rotated since.
        same_bytes = await _find_same_bytes(ctx, peer_node, digest)
        if same_bytes is not None:
            return await _answer_duplicate(ctx, same_bytes, now)
        await record_refusal(ctx, refusal, peer_node=peer_node, envelope_sha256=digest)
        raise
    try:
        return await _store(ctx, envelope, opened, now)
    except IntegrityError:
        # This sender used this message id before (a retry, or a concurrent
        # retry that stored it first): the unique constraint decided.
        existing = await _find(ctx, peer_node, opened.message.message_id)
        if existing is None:  # pragma: no cover - the constraint just said it exists
            raise EnvelopeError("conflict", "could not store the envelope") from None
        return await _answer_repeat(ctx, existing, opened, now)


def open_from(
    ctx: NodeContext, envelope: bytes, peer_node: str, now: dt.datetime
) -> OpenedEnvelope:
    """Open an envelope that came from the TLS-authenticated ``peer_node``, or refuse it."""
    return open_envelope(
        envelope,
        own_node=ctx.node_id,
        own_encryption_keys=ctx.keys.encryption,
        directory=ctx.directory,
        now=now,
        peer_node=peer_node,
    )


async def _find(ctx: NodeContext, sender: str, message_id: str) -> ReceivedMessage | None:
    async with ctx.sessions() as session:
        result = await session.execute(
            select(ReceivedMessage).where(
                ReceivedMessage.sender_node == sender, ReceivedMessage.message_id == message_id
            )
        )
        return result.scalar_one_or_none()


async def _find_same_bytes(ctx: NodeContext, sender: str, digest: str) -> ReceivedMessage | None:
    async with ctx.sessions() as session:
        result = await session.execute(
            select(ReceivedMessage)
            .where(ReceivedMessage.sender_node == sender, ReceivedMessage.envelope_sha256 == digest)
            .limit(1)
        )
        return result.scalar_one_or_none()


async def _answer_duplicate(
    ctx: NodeContext, existing: ReceivedMessage, now: dt.datetime
) -> Accepted:
    async with ctx.sessions.begin() as session:
        await audit.append(
            session,
            node=ctx.node_id,
            event="envelope.duplicate",
            at=now,
            message_id=existing.message_id,
            counterparty=existing.sender_node,
            envelope_sha256=existing.envelope_sha256,
        )
    log.info("envelope_duplicate", message_id=existing.message_id, sender=existing.sender_node)
    return Accepted(receipt=existing.receipt, duplicate=True)


async def _answer_repeat(
    ctx: NodeContext, existing: ReceivedMessage, opened: OpenedEnvelope, now: dt.datetime
) -> Accepted:
    message = opened.message
    if existing.envelope_sha256 != opened.envelope_sha256:
        refusal = MessageIdReused(detail="this message id was already used for other bytes")
        await record_refusal(
            ctx,
            refusal,
            peer_node=message.sender.node,
            envelope_sha256=opened.envelope_sha256,
            message_id=message.message_id,
        )
        raise refusal
    return await _answer_duplicate(ctx, existing, now)


async def _store(
    ctx: NodeContext, envelope: bytes, opened: OpenedEnvelope, now: dt.datetime
) -> Accepted:
    message = opened.message
    try:
        intake = await prepare_intake(ctx, envelope, opened, now)
    except (
        EnvelopeError
    ) as refusal:  # refused on its terms (node.intake.documents): audited, not stored
        await record_refusal(
            ctx,
            refusal,
            peer_node=message.sender.node,
            envelope_sha256=opened.envelope_sha256,
            message_id=message.message_id,
        )
        raise
    ready = Ready(envelope, opened, intake, receipt_for(ctx, opened, now))
    async with ctx.sessions.begin() as session:
        session.add(received_row(ready, now))
        await session.flush()
        await audit.append_many(session, node=ctx.node_id, events=[received_event(ctx, ready, now)])
        await intake.run(session)
        ctx.crash_points.reached("recipient.store_uncommitted")
    ctx.crash_points.reached("recipient.stored")
    log.info(
        "envelope_received",
        message_id=message.message_id,
        sender=message.sender.node,
        doc_type=message.doc_type,
    )
    return Accepted(receipt=ready.receipt, duplicate=False)


@dataclass(frozen=True)
class Ready:
    """An envelope that opened and passed its checks, with its receipt, not yet stored."""

    envelope: bytes
    opened: OpenedEnvelope
    intake: Intake
    receipt: str


def receipt_for(ctx: NodeContext, opened: OpenedEnvelope, now: dt.datetime) -> str:
    return issue_receipt(
        opened.message,
        envelope_sha256=opened.envelope_sha256,
        received_at=now,
        signing_key=ctx.keys.signing,
    )


def received_row(ready: Ready, now: dt.datetime) -> ReceivedMessage:
    message, intake = ready.opened.message, ready.intake
    return ReceivedMessage(
        sender_node=message.sender.node,
        message_id=message.message_id,
        sender_authority=message.sender.authority,
        recipient_authority=message.recipient.authority,
        doc_type=message.doc_type,
        schema_id=message.schema,
        envelope=intake.envelope,
        envelope_sha256=ready.opened.envelope_sha256,
        body=intake.body,
        issued_at=dt.datetime.fromtimestamp(message.issued_at, dt.UTC),
        expires_at=dt.datetime.fromtimestamp(message.expires_at, dt.UTC),
        received_at=now,
        receipt=ready.receipt,
    )


def received_event(ctx: NodeContext, ready: Ready, now: dt.datetime) -> audit.AuditEvent:
    message, opened = ready.opened.message, ready.opened
    return audit.event(
        "envelope.received",
        now,
        message_id=message.message_id,
        counterparty=message.sender.node,
        authority=message.recipient.authority,
        counterparty_authority=message.sender.authority,
        doc_type=message.doc_type,
        schema=message.schema,
        fields=field_paths(message.body),
        envelope_sha256=opened.envelope_sha256,
        signing_kid=opened.signing_kid,
        directory_version=ctx.directory.version,
        **ready.intake.audit_details,
    )


async def record_refusal(
    ctx: NodeContext,
    refusal: PuenteError,
    *,
    peer_node: str | None,
    envelope_sha256: str | None = None,
    message_id: str | None = None,
) -> None:
    """Audit a refused inbound request (reason code and digest only)."""
    async with ctx.sessions.begin() as session:
        await audit.append(
            session,
            node=ctx.node_id,
            event="envelope.refused",
            at=ctx.now(),
            message_id=message_id,
            counterparty=peer_node,
            reason=refusal.reason,
            envelope_sha256=envelope_sha256,
        )
    log.warning("envelope_refused", reason=refusal.reason, peer=peer_node, message_id=message_id)
