"""Queueing a disclosure: check, seal, commit — before anything is sent.

The disclosure row, its sealed envelope and its audit entry are committed in
one transaction; the deliverer (node.delivery.deliverer) sends only what is committed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.core import schemas
from node.core.canonical import sha256_hex
from node.core.errors import DirectoryError, PuenteError
from node.storage.context import NodeContext
from node.storage.models import Disclosure
from node.wire.envelope import Message, Party, seal
from node.wire.fields import field_paths

# Members of a disclosure's queued entry that every later entry about it repeats
# (Disclosure.audit_context), so each row of the trail says who sent what to whom.
CONTEXT_MEMBERS: Final = (
    "case_ref",
    "purpose",
    "legal_basis",
    "user",
    "authority",
    "counterparty_authority",
    "doc_type",
)


class DisclosureRefused(PuenteError):
    """The sending node refuses to queue this disclosure."""

    reason = "disclosure_refused"
    http_status = 422


@dataclass(frozen=True)
class QueuedDisclosure:
    """A sealed disclosure and its audit entry, ready to commit (:func:`prepare_disclosure`)."""

    row: Disclosure
    event: audit.AuditEvent


async def queue_disclosure(
    ctx: NodeContext,
    *,
    sender_authority: str,
    recipient_node: str,
    recipient_authority: str,
    doc_type: str,
    body: Mapping[str, Any],
    ttl: dt.timedelta | None = None,
    message_id: str | None = None,
    terms: Mapping[str, Any] | None = None,
    audit_details: Mapping[str, Any] | None = None,
    session: AsyncSession | None = None,
) -> Disclosure:
    """Validate, seal and durably queue one case summary for one recipient.

    ``terms`` (schemas/disclosure-terms) are signed into the message with the
    body; ``audit_details`` are added to the ``disclosure.queued`` entry. With
    ``session`` the row and its audit entry join the caller's transaction.
    """
    queued = prepare_disclosure(
        ctx,
        sender_authority=sender_authority,
        recipient_node=recipient_node,
        recipient_authority=recipient_authority,
        doc_type=doc_type,
        body=body,
        ttl=ttl,
        message_id=message_id,
        terms=terms,
        audit_details=audit_details,
    )
    if session is None:
        async with ctx.sessions.begin() as own_session:
            await commit_queued(ctx, own_session, [queued])
    else:
        await commit_queued(ctx, session, [queued])
    return queued.row


def prepare_disclosure(
    ctx: NodeContext,
    *,
    sender_authority: str,
    recipient_node: str,
    recipient_authority: str,
    doc_type: str,
    body: Mapping[str, Any],
    ttl: dt.timedelta | None = None,
    message_id: str | None = None,
    terms: Mapping[str, Any] | None = None,
    audit_details: Mapping[str, Any] | None = None,
) -> QueuedDisclosure:
    """Check, validate and seal one disclosure, outside any transaction.

    The seal (the costly part) is done before the write lock is taken, so a
    busy node's transactions stay short; :func:`commit_queued` stores it.
    """
    own = ctx.directory.node(ctx.node_id)
    if own is None or sender_authority not in own.authorities:
        raise DisclosureRefused("unknown_authority", "sending authority is not served by this node")
    peer = ctx.directory.node(recipient_node)
    if peer is None or recipient_node == ctx.node_id:
        raise DisclosureRefused("unknown_recipient", "recipient node is not a federation member")
    if recipient_authority not in peer.authorities:
        raise DisclosureRefused("unknown_authority", "recipient authority is not in the directory")
    schema_id = schemas.DOCUMENT_SCHEMAS.get(doc_type)
    if schema_id is None:
        raise DisclosureRefused("unsupported_document", f"unknown document type {doc_type}")
    schemas.validate(schema_id, body)
    now = ctx.now()
    if ctx.directory.is_expired(now):
        # Fail closed: a stale member list may name removed nodes or revoked keys.
        raise DirectoryError("directory_expired", "refresh the federation directory first")
    if not own.key_validity(str(ctx.keys.signing.kid)).in_force(now):
        # Peers would refuse what it signs (expired or revoked): rotate first (keys/README.md).
        raise DisclosureRefused("signing_key_not_in_force", "this node's signing key is not valid")
    expires = now + (ttl or dt.timedelta(hours=ctx.config.delivery.message_ttl_hours))
    message = Message(
        message_id=message_id or str(uuid.uuid4()),
        sender=Party(ctx.node_id, sender_authority),
        recipient=Party(recipient_node, recipient_authority),
        doc_type=doc_type,
        schema=schema_id,
        issued_at=int(now.timestamp()),
        expires_at=int(expires.timestamp()),
        body=body,
        terms=terms,
    )
    envelope = seal(
        message, signing_key=ctx.keys.signing, recipient_key=peer.encryption_key_at(now)
    )
    fields = field_paths(body)
    row = Disclosure(
        message_id=message.message_id,
        created_at=now,
        sender_authority=sender_authority,
        recipient_node=recipient_node,
        recipient_authority=recipient_authority,
        doc_type=doc_type,
        schema_id=schema_id,
        case_ref=str(body.get("case_ref", "")),
        fields=fields,
        envelope=envelope,
        envelope_sha256=sha256_hex(envelope.encode("ascii")),
        expires_at=dt.datetime.fromtimestamp(message.expires_at, dt.UTC),
        state="queued",
        attempts=0,
        next_attempt_at=now,
    )
    details = {
        "authority": row.sender_authority,
        "counterparty_authority": row.recipient_authority,
        "doc_type": row.doc_type,
        **(audit_details or {}),
    }
    row.audit_context = {k: details[k] for k in CONTEXT_MEMBERS if details.get(k) is not None}
    queued = audit.event(
        "disclosure.queued",
        now,
        message_id=row.message_id,
        counterparty=row.recipient_node,
        schema=row.schema_id,
        fields=row.fields,
        envelope_sha256=row.envelope_sha256,
        directory_version=ctx.directory.version,
        **details,
    )
    return QueuedDisclosure(row, queued)


async def commit_queued(
    ctx: NodeContext, session: AsyncSession, queued: Sequence[QueuedDisclosure]
) -> None:
    """Add prepared disclosures and their audit entries to the caller's transaction."""
    if not queued:
        return
    session.add_all([q.row for q in queued])
    # Wake the deliverer once the rows are committed, whoever commits them.
    event.listen(session.sync_session, "after_commit", lambda _: ctx.disclosure_queued(), once=True)
    await session.flush()
    await audit.append_many(session, node=ctx.node_id, events=[q.event for q in queued])


async def get_disclosure(ctx: NodeContext, message_id: str) -> Disclosure | None:
    async with ctx.sessions() as session:
        return await session.get(Disclosure, message_id)


async def list_disclosures(ctx: NodeContext, state: str | None = None) -> list[Disclosure]:
    query = select(Disclosure).order_by(Disclosure.created_at, Disclosure.message_id)
    if state is not None:
        query = query.where(Disclosure.state == state)
    async with ctx.sessions() as session:
        return list((await session.execute(query)).scalars().all())
