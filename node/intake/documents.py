"""What the receiving pipeline does with each kind of document, beyond storing the envelope.

node.intake.receive opens, de-duplicates and stores every envelope and issues its
receipt; it asks :func:`prepare` first and runs the returned
:class:`Intake` inside its storing transaction:

* a case summary with terms is checked against them (node.intake.terms) and
  stored only encrypted under its own data key (node.intake.summaries) — nothing of
  it in clear in ``received_messages``;
* a ``consent_withdrawal`` erases what it names and queues the signed
  erasure receipt (node.intake.withdrawal);
* an ``erasure_receipt`` is checked against the withdrawal it answers and
  recorded;
* anything else is stored as before.

A refusal raised by :func:`prepare` is an EnvelopeError with a reason code:
the receiving pipeline audits it and answers problem+json, and nothing is
stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.intake.datakeys import DataKey
from node.intake.summaries import (
    SealedSummary,
    audit_case_ref,
    key_store,
    seal_summary,
    store_sealed,
)
from node.intake.terms import TERMS_REQUIRED, AcceptedTerms, TermsRefused, check_terms
from node.intake.withdrawal import (
    apply_withdrawal,
    check_erasure_receipt,
    is_withdrawn,
    record_erasure_receipt,
    withdrawal_audit_details,
)
from node.rules.consent import ConsentRecord
from node.rules.policy import default_policy_set
from node.storage.consent_models import ConsentRow
from node.storage.context import NodeContext
from node.storage.models import ReceivedMessage
from node.wire.envelope import OpenedEnvelope

Finish = Callable[[AsyncSession], Awaitable[None]]
CONTROL_DOCUMENTS = frozenset({"consent_withdrawal", "erasure_receipt"})


@dataclass
class Intake:
    """How to store one accepted envelope, and what else to do in the same transaction."""

    body: dict[str, Any] | None  # ReceivedMessage.body (None: kept only encrypted)
    envelope: bytes | None  # ReceivedMessage.envelope (None: kept only encrypted)
    audit_details: dict[str, Any] = field(default_factory=dict)
    finish: Finish | None = None

    async def run(self, session: AsyncSession) -> None:
        """Called by the receiving pipeline after its own rows and audit entry."""
        if self.finish is not None:
            await self.finish(session)


async def prepare(
    ctx: NodeContext,
    envelope: bytes,
    opened: OpenedEnvelope,
    now: dt.datetime,
    *,
    session: AsyncSession | None = None,
    fresh: bool = False,
    data_key: DataKey | None = None,
) -> Intake:
    """Check an opened envelope by document type and plan how to store it.

    A batch (node.intake.receive.receive_batch) passes its read ``session``, says
    the message id is ``fresh`` (it checked the whole batch at once) and
    hands over a ``data_key`` it made with the others in one go.
    """
    message = opened.message
    plain = Intake(body=dict(message.body), envelope=envelope)
    if message.doc_type in CONTROL_DOCUMENTS and message.terms is not None:
        raise TermsRefused("terms_unexpected", f"a {message.doc_type} carries no case data")
    if message.doc_type == "consent_withdrawal":
        # A retry fails on the unique constraint before any erasure runs.
        return _withdrawal_intake(ctx, plain, opened, now)
    if message.terms is None and message.doc_type not in ("erasure_receipt", *TERMS_REQUIRED):
        return plain  # nothing to check, nothing sealed (a return notice without terms)
    if session is None:
        async with ctx.sessions() as own:
            return await _prepare_checked(ctx, own, plain, envelope, opened, now, fresh, data_key)
    return await _prepare_checked(ctx, session, plain, envelope, opened, now, fresh, data_key)


async def _prepare_checked(
    ctx: NodeContext,
    session: AsyncSession,
    plain: Intake,
    envelope: bytes,
    opened: OpenedEnvelope,
    now: dt.datetime,
    fresh: bool,
    data_key: DataKey | None,
) -> Intake:
    message = opened.message
    if not fresh and await _already_stored(session, message.sender.node, message.message_id):
        # A retry: the pipeline's unique constraint answers it with the first receipt.
        return plain
    if message.doc_type == "erasure_receipt":
        await check_erasure_receipt(session, message)
        return _erasure_receipt_intake(ctx, plain, opened, now)
    accepted = await _check(ctx, session, opened)
    if accepted is None:
        return plain
    sealed = seal_summary(
        key_store(ctx),
        sender=message.sender.node,
        message_id=message.message_id,
        body=message.body,
        envelope=envelope,
        data_key=data_key,
    )
    return _sealed_intake(ctx, opened, accepted, sealed, now)


def needs_data_key(opened: OpenedEnvelope) -> bool:
    """Whether :func:`prepare` would seal this message under a data key if it accepts it."""
    message = opened.message
    return message.doc_type not in CONTROL_DOCUMENTS and (
        message.terms is not None or message.doc_type in TERMS_REQUIRED
    )


async def _already_stored(session: AsyncSession, sender: str, message_id: str) -> bool:
    found = await session.execute(
        select(ReceivedMessage.id).where(
            ReceivedMessage.sender_node == sender, ReceivedMessage.message_id == message_id
        )
    )
    return found.first() is not None


async def _check(
    ctx: NodeContext, session: AsyncSession, opened: OpenedEnvelope
) -> AcceptedTerms | None:
    message = opened.message
    own = ctx.directory.node(ctx.node_id)
    authority = own.authorities.get(message.recipient.authority) if own else None
    if authority is None:  # pragma: no cover - open_envelope already checked it
        raise TermsRefused("unknown_authority", "receiving authority is not in the directory")
    terms = message.terms or {}
    consent_id = (terms.get("consent") or {}).get("id")
    withdrawn = consent_id is not None and await is_withdrawn(
        session, origin=message.sender.node, consent_id=consent_id, message_id=message.message_id
    )
    accepted = check_terms(
        message,
        policies=default_policy_set(),
        recipient_kind=authority.kind,
        consent_withdrawn=withdrawn,
    )
    if accepted is not None and accepted.purpose == "case_continuity":
        await _check_share_back(
            session, message.body, accepted, ctx.now(), holder=message.recipient.authority
        )
    return accepted


async def _check_share_back(
    session: AsyncSession,
    body: Mapping[str, Any],
    accepted: AcceptedTerms,
    now: dt.datetime,
    *,
    holder: str,
) -> None:
    """A share-back comes to the authority holding her consent, which checks its record."""
    row = await session.get(ConsentRow, accepted.consent_id) if accepted.consent_id else None
    record = ConsentRecord.from_document(row.record) if row is not None else None
    if record is None or record.recorded_by.authority != holder:
        # Another authority of this node holding that consent is not the addressee.
        raise TermsRefused("recipient_not_consented", "share-back goes to the consent's holder")
    if record.case_ref != body.get("case_ref"):
        raise TermsRefused("recipient_not_consented", "the consent is for another case")
    status = record.effective_status(now)
    if status == "withdrawn":
        raise TermsRefused("consent_withdrawn", "this consent was withdrawn")
    if status == "lapsed":
        raise TermsRefused("consent_expired", "this consent has lapsed")
    if not record.scope.share_back:
        raise TermsRefused("purpose_not_consented", "she did not agree to share-back")


def _summary_audit(
    ctx: NodeContext, opened: OpenedEnvelope, accepted: AcceptedTerms
) -> dict[str, Any]:
    terms = accepted.terms
    return {
        "case_ref": audit_case_ref(ctx, str(opened.message.body.get("case_ref", ""))),
        "purpose": accepted.purpose,
        "legal_basis": accepted.legal_basis,
        "consent_id": accepted.consent_id,
        "exception_id": (terms.get("exception") or {}).get("id"),
        "review_required": True if accepted.review_required else None,
        "policy_id": accepted.rule.policy.policy_id,
        "policy_version": accepted.rule.policy.version,
        "policy_sha256": accepted.rule.policy.sha256,
        "agreements": [a.agreement_id for a in accepted.rule.agreements] or None,
        "retain_until": terms["handling"]["retain_until"],
        "onward_sharing": terms["handling"]["onward_sharing"],
        "encrypted_at_rest": True,
    }


def _sealed_intake(
    ctx: NodeContext,
    opened: OpenedEnvelope,
    accepted: AcceptedTerms,
    sealed: SealedSummary,
    now: dt.datetime,
) -> Intake:
    message = opened.message

    async def finish(session: AsyncSession) -> None:
        received_id = (
            await session.execute(
                select(ReceivedMessage.id).where(
                    ReceivedMessage.sender_node == message.sender.node,
                    ReceivedMessage.message_id == message.message_id,
                )
            )
        ).scalar_one()
        await store_sealed(
            ctx,
            session,
            received_message_id=received_id,
            sender_node=message.sender.node,
            message_id=message.message_id,
            sender_authority=message.sender.authority,
            recipient_authority=message.recipient.authority,
            doc_type=message.doc_type,
            case_ref=str(message.body["case_ref"]),
            accepted=accepted,
            sealed=sealed,
            now=now,
        )

    details = _summary_audit(ctx, opened, accepted)
    details["data_key_id"] = sealed.data_key_id
    return Intake(body=None, envelope=None, audit_details=details, finish=finish)


def _withdrawal_intake(
    ctx: NodeContext, plain: Intake, opened: OpenedEnvelope, now: dt.datetime
) -> Intake:
    message = opened.message

    async def finish(session: AsyncSession) -> None:
        await apply_withdrawal(ctx, session, message, now)

    plain.audit_details = withdrawal_audit_details(ctx, message)
    plain.finish = finish
    return plain


def _erasure_receipt_intake(
    ctx: NodeContext, plain: Intake, opened: OpenedEnvelope, now: dt.datetime
) -> Intake:
    message = opened.message

    async def finish(session: AsyncSession) -> None:
        details = await record_erasure_receipt(ctx, session, message, now)
        await audit.append(
            session,
            node=ctx.node_id,
            event="erasure.confirmed",
            at=now,
            message_id=message.message_id,
            counterparty=message.sender.node,
            **details,
        )

    plain.finish = finish
    return plain
