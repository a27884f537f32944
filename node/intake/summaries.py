"""Received case summaries at rest: sealed under their own data key, read, erased.

A summary that arrives with disclosure terms is stored only encrypted
(AES-256-GCM under a fresh data key from node.intake.datakeys), its body and its
evidence envelope alike; ``received_messages`` keeps the envelope's digest and
the receipt in clear. Erasure — on withdrawal of consent or at the end of the
retention period — destroys the data key (crypto-shredding), drops the
ciphertext and audits it. Functions that take a session work inside the
caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.auditlog.entries import CaseRef, case_pseudonym
from node.core.canonical import canonical_json
from node.core.clock import rfc3339
from node.core.errors import PuenteError
from node.intake.datakeys import DataKey, DataKeyError, DataKeyStore, decrypt, encrypt
from node.intake.terms import AcceptedTerms
from node.storage.consent_models import ReceivedSummary, SummaryKey
from node.storage.context import NodeContext
from node.storage.models import ReceivedMessage
from node.wire.fields import field_paths

ERASURE_METHOD = "crypto-shredding: data key destroyed"


class SummaryError(PuenteError):
    """A received summary cannot be read: unknown, or erased."""

    reason = "unknown_summary"
    http_status = 404


def key_store(ctx: NodeContext) -> DataKeyStore:
    """This node's store of per-summary data keys (``keys/summaries``)."""
    return DataKeyStore(ctx.config.keys_dir / "summaries")


def audit_case_ref(ctx: NodeContext, case_ref: str) -> CaseRef | None:
    """The audit log's pseudonym for a case reference (never the reference itself)."""
    if ctx.audit is None:
        return None
    return case_pseudonym(ctx.audit.case_secret, case_ref)


def _context(sender: str, message_id: str, part: str) -> str:
    # Bound as AES-GCM associated data: a ciphertext cannot be swapped between rows.
    return f"puente/summary/{sender}/{message_id}/{part}"


@dataclass(frozen=True)
class SealedSummary:
    """A summary encrypted and ready to store (its key is already in the key store)."""

    data_key_id: str
    body_ciphertext: bytes
    envelope_ciphertext: bytes


def seal_summary(
    store: DataKeyStore,
    *,
    sender: str,
    message_id: str,
    body: Mapping[str, Any],
    envelope: bytes,
    data_key: DataKey | None = None,
) -> SealedSummary:
    """Encrypt the body and the evidence envelope under a new data key.

    The key is made here, or is ``data_key`` made beforehand with
    :meth:`DataKeyStore.create_many` (a batch makes its keys in one go).
    """
    key_id, key = data_key if data_key is not None else store.create()
    return SealedSummary(
        data_key_id=key_id,
        body_ciphertext=encrypt(
            key, canonical_json(body), context=_context(sender, message_id, "body")
        ),
        envelope_ciphertext=encrypt(
            key, envelope, context=_context(sender, message_id, "envelope")
        ),
    )


async def store_sealed(
    ctx: NodeContext,
    session: AsyncSession,
    *,
    received_message_id: int,
    sender_node: str,
    message_id: str,
    sender_authority: str,
    recipient_authority: str,
    doc_type: str,
    case_ref: str,
    accepted: AcceptedTerms,
    sealed: SealedSummary,
    now: dt.datetime,
) -> ReceivedSummary:
    """Record a sealed summary and its key's bookkeeping in the caller's transaction."""
    session.add(SummaryKey(key_id=sealed.data_key_id, created_at=now))
    row = ReceivedSummary(
        received_message_id=received_message_id,
        sender_node=sender_node,
        message_id=message_id,
        sender_authority=sender_authority,
        recipient_authority=recipient_authority,
        doc_type=doc_type,
        case_ref=case_ref,
        consent_id=accepted.consent_id,
        purpose=accepted.purpose,
        legal_basis=accepted.legal_basis,
        policy_id=accepted.rule.policy.policy_id,
        policy_version=accepted.rule.policy.version,
        review_required=accepted.review_required,
        terms=dict(accepted.terms),
        fields=list(accepted.fields),
        data_key_id=sealed.data_key_id,
        body_ciphertext=sealed.body_ciphertext,
        envelope_ciphertext=sealed.envelope_ciphertext,
        retain_until=accepted.retain_until,
    )
    session.add(row)
    await session.flush()
    return row


def open_body(store: DataKeyStore, row: ReceivedSummary) -> dict[str, Any]:
    """The decrypted body; :class:`DataKeyError` once erased."""
    if row.erased_at is not None or row.body_ciphertext is None:
        raise DataKeyError("data_key_destroyed", f"summary {row.message_id} was erased")
    key = store.get(row.data_key_id)
    plain = decrypt(
        key, row.body_ciphertext, context=_context(row.sender_node, row.message_id, "body")
    )
    body: dict[str, Any] = json.loads(plain)
    return body


def open_envelope_bytes(store: DataKeyStore, row: ReceivedSummary) -> bytes:
    """The evidence envelope as received; :class:`DataKeyError` once erased."""
    if row.erased_at is not None or row.envelope_ciphertext is None:
        raise DataKeyError("data_key_destroyed", f"summary {row.message_id} was erased")
    key = store.get(row.data_key_id)
    return decrypt(
        key,
        row.envelope_ciphertext,
        context=_context(row.sender_node, row.message_id, "envelope"),
    )


async def erase(
    ctx: NodeContext,
    session: AsyncSession,
    row: ReceivedSummary,
    *,
    reason: str,
    event: str,
    now: dt.datetime,
    **details: Any,
) -> None:
    """Crypto-shred one summary: destroy its key, drop its ciphertext, audit it.

    The key file goes first: if the transaction then fails, the summary is
    already unreadable and the next attempt only completes the bookkeeping.
    """
    key_store(ctx).destroy(row.data_key_id)
    row.body_ciphertext = None
    row.envelope_ciphertext = None
    row.erased_at = now
    row.erasure_reason = reason
    key = await session.get(SummaryKey, row.data_key_id)
    if key is not None and key.destroyed_at is None:
        key.destroyed_at = now
        key.destroyed_reason = reason
    await audit.append(
        session,
        node=ctx.node_id,
        event=event,
        at=now,
        message_id=row.message_id,
        counterparty=row.sender_node,
        case_ref=audit_case_ref(ctx, row.case_ref),
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        reason=reason,
        consent_id=row.consent_id,
        policy_id=row.policy_id,
        policy_version=row.policy_version,
        data_key_id=row.data_key_id,
        method=ERASURE_METHOD,
        **details,
    )


@dataclass(frozen=True)
class SummaryView:
    """A received summary as a caseworker at the recipient sees it (body None once erased)."""

    sender_node: str
    message_id: str
    sender_authority: str
    recipient_authority: str
    doc_type: str
    case_ref: str
    purpose: str
    legal_basis: str
    consent_id: str | None
    policy: str
    retain_until: dt.datetime
    erased_at: dt.datetime | None
    erasure_reason: str | None
    body: Mapping[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "sender": f"{self.sender_node}/{self.sender_authority}",
            "recipient_authority": self.recipient_authority,
            "message_id": self.message_id,
            "doc_type": self.doc_type,
            "case_ref": self.case_ref,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "consent_id": self.consent_id,
            "policy": self.policy,
            "retain_until": rfc3339(self.retain_until),
            "erased_at": rfc3339(self.erased_at) if self.erased_at else None,
            "erasure_reason": self.erasure_reason,
            "body": self.body,
        }


def view(store: DataKeyStore, row: ReceivedSummary) -> SummaryView:
    try:
        body: Mapping[str, Any] | None = open_body(store, row)
    except DataKeyError:
        body = None
    return SummaryView(
        sender_node=row.sender_node,
        message_id=row.message_id,
        sender_authority=row.sender_authority,
        recipient_authority=row.recipient_authority,
        doc_type=row.doc_type,
        case_ref=row.case_ref,
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        consent_id=row.consent_id,
        policy=f"{row.policy_id} {row.policy_version}",
        retain_until=row.retain_until,
        erased_at=row.erased_at,
        erasure_reason=row.erasure_reason,
        body=body,
    )


async def list_received(
    ctx: NodeContext, case_ref: str | None = None, *, recipient_authority: str | None = None
) -> list[SummaryView]:
    """Received case summaries (decrypted where still readable), oldest first.

    ``recipient_authority`` keeps only what was sent to that authority: one
    authority of this node never sees, or learns of, another's.
    """
    query = select(ReceivedSummary).order_by(ReceivedSummary.id)
    if case_ref is not None:
        query = query.where(ReceivedSummary.case_ref == case_ref)
    if recipient_authority is not None:
        query = query.where(ReceivedSummary.recipient_authority == recipient_authority)
    async with ctx.sessions() as session:
        rows = list((await session.execute(query)).scalars())
    store = key_store(ctx)
    return [view(store, row) for row in rows]


async def get_received(ctx: NodeContext, sender_node: str, message_id: str) -> ReceivedSummary:
    async with ctx.sessions() as session:
        row = (
            await session.execute(
                select(ReceivedSummary).where(
                    ReceivedSummary.sender_node == sender_node,
                    ReceivedSummary.message_id == message_id,
                )
            )
        ).scalar_one_or_none()
    if row is None:
        raise SummaryError("unknown_summary", f"no summary {message_id} from {sender_node}")
    return row


async def readable_body(
    ctx: NodeContext, session: AsyncSession, row: ReceivedMessage
) -> dict[str, Any] | None:
    """The body of any received message: in clear, decrypted, or None once erased."""
    if row.body is not None:
        return dict(row.body)
    summary = (
        await session.execute(
            select(ReceivedSummary).where(ReceivedSummary.received_message_id == row.id)
        )
    ).scalar_one_or_none()
    if summary is None:
        return None
    try:
        return open_body(key_store(ctx), summary)
    except DataKeyError:
        return None


async def read_received(
    ctx: NodeContext, case_ref: str | None, *, viewer: str, recipient_authority: str | None = None
) -> list[SummaryView]:
    """Received summaries for a person to read: every readable one shown is audited as a view."""
    views = await list_received(ctx, case_ref, recipient_authority=recipient_authority)
    shown = [v for v in views if v.body is not None]
    if shown:
        async with ctx.sessions.begin() as session:
            for v in shown:
                await audit.append(
                    session,
                    node=ctx.node_id,
                    event="summary.viewed",
                    at=ctx.now(),
                    message_id=v.message_id,
                    counterparty=v.sender_node,
                    case_ref=audit_case_ref(ctx, v.case_ref),
                    authority=v.recipient_authority,
                    user=viewer,
                    fields=field_paths(v.body or {}),
                )
    return views
