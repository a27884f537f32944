"""Consents on the node that holds the case: record, narrow, withdraw, show.

Service functions over a :class:`NodeContext` returning plain dataclasses.
Withdrawing (fully) or narrowing a consent is one transaction that

* appends the change to the consent's history,
* stops at once every disclosure under it that is still waiting to be sent
  (state ``withdrawn``; the deliverer only sends ``queued``/``sending``),
* queues a signed ``consent_withdrawal`` to every recipient that received,
  or may have received, data under it — an offline recipient gets it when it
  comes back, because the outbox retries —
* and audits all of it.

Recipients answer with signed erasure receipts (node.intake.withdrawal records
them); :func:`consent_status` shows which recipients have confirmed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.core.clock import rfc3339
from node.delivery.outbox import queue_disclosure
from node.intake.summaries import audit_case_ref
from node.intake.withdrawal import confirmations_for
from node.rules.consent import (
    ACTIVE_STATUSES,
    ConsentError,
    ConsentRecord,
    Officer,
    RecipientRef,
    Scope,
    lapse,
    narrow,
    new_consent,
    withdraw,
)
from node.storage.consent_models import (
    CaseDisclosure,
    CaseRow,
    ConsentHistoryRow,
    ConsentRow,
    WithdrawalNotice,
)
from node.storage.context import NodeContext
from node.storage.models import Disclosure

# A withdrawal must outlast a long outage of the recipient: the longest lifetime
# an envelope may have (node.wire.envelope.MAX_LIFETIME).
WITHDRAWAL_TTL = dt.timedelta(days=30)
STOPPABLE_STATES = ("queued", "sending")


async def _case_row(session: AsyncSession, case_ref: str, authority: str) -> CaseRow:
    """The case ``authority`` holds under ``case_ref`` (another authority's is unknown)."""
    row = (
        await session.execute(
            select(CaseRow).where(CaseRow.case_ref == case_ref, CaseRow.authority == authority)
        )
    ).scalar_one_or_none()
    if row is None:
        raise ConsentError("unknown_case", f"no case {case_ref} on this node")
    return row


def _check_officer(ctx: NodeContext, officer: Officer) -> None:
    own = ctx.directory.node(ctx.node_id)
    if officer.node != ctx.node_id or own is None or officer.authority not in own.authorities:
        raise ConsentError("unknown_authority", "the officer's authority is not of this node")


async def _save(
    ctx: NodeContext, session: AsyncSession, record: ConsentRecord, case_id: str, now: dt.datetime
) -> None:
    row = await session.get(ConsentRow, record.consent_id)
    document = record.as_document()
    if row is None:
        session.add(
            ConsentRow(
                consent_id=record.consent_id,
                case_id=case_id,
                status=record.status,
                valid_until=record.scope.valid_until,
                created_at=now,
                updated_at=now,
                record=document,
            )
        )
    else:
        row.status = record.status
        row.valid_until = record.scope.valid_until
        row.updated_at = now
        row.record = document
    last = record.history[-1]
    session.add(
        ConsentHistoryRow(
            consent_id=record.consent_id, status=last.status, at=last.at, entry=last.as_json()
        )
    )
    await session.flush()


async def record_consent(ctx: NodeContext, draft: Mapping[str, Any]) -> ConsentRecord:
    """Record a consent (schemas/consent-draft) for a case of the recording officer's authority."""
    now = ctx.now()
    record = new_consent(draft, consent_id=str(uuid.uuid4()), now=now)
    _check_officer(ctx, record.recorded_by)
    async with ctx.sessions.begin() as session:
        case = await _case_row(session, record.case_ref, record.recorded_by.authority)
        await _save(ctx, session, record, case.case_id, now)
        await audit.append(
            session,
            node=ctx.node_id,
            event="consent.given",
            at=now,
            case_ref=audit_case_ref(ctx, record.case_ref),
            consent_id=record.consent_id,
            grantor=record.grantor_role,
            best_interest_determination=record.best_interest_determination is not None,
            purposes=sorted(record.scope.purposes),
            categories=sorted(record.scope.categories),
            recipients=[m.as_json() for m in record.scope.recipients],
            valid_until=rfc3339(record.scope.valid_until),
            informed_language=record.informed["language"],
            informed_method=record.informed["method"],
            interpreter=record.informed["interpreter"],
            officer=record.recorded_by.as_json(),
            evidence_sha256=(record.evidence or {}).get("sha256"),
        )
    return record


async def get_consent(ctx: NodeContext, consent_id: str) -> ConsentRecord:
    async with ctx.sessions() as session:
        row = await session.get(ConsentRow, consent_id)
    if row is None:
        raise ConsentError("unknown_consent", f"no consent {consent_id} on this node")
    return ConsentRecord.from_document(row.record)


async def case_of_consent(ctx: NodeContext, consent_id: str) -> str:
    """The id of the case a consent is for; :class:`ConsentError` ``unknown_consent``."""
    async with ctx.sessions() as session:
        row = await session.get(ConsentRow, consent_id)
    if row is None:
        raise ConsentError("unknown_consent", f"no consent {consent_id} on this node")
    return row.case_id


async def consents_for_case(ctx: NodeContext, case_id: str) -> list[ConsentRecord]:
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(ConsentRow)
                .where(ConsentRow.case_id == case_id)
                .order_by(ConsentRow.created_at)
            )
        ).scalars()
        return [ConsentRecord.from_document(r.record) for r in rows]


@dataclass(frozen=True)
class WithdrawalOutcome:
    """What a withdrawal or narrowing did at once."""

    consent: ConsentRecord
    stopped: tuple[str, ...]  # disclosures that had not left and now never will
    notices: tuple[str, ...]  # consent_withdrawal messages queued, one per recipient authority


async def withdraw_consent(ctx: NodeContext, consent_id: str, *, by: Officer) -> WithdrawalOutcome:
    """Withdraw a consent in full: stop what waits, tell every recipient to erase."""
    _check_officer(ctx, by)
    return await _change(ctx, consent_id, by=by, scope=None)


async def narrow_consent(
    ctx: NodeContext, consent_id: str, scope: Scope, *, by: Officer
) -> WithdrawalOutcome:
    """Narrow a consent: what it no longer covers is stopped or erased at the recipients."""
    _check_officer(ctx, by)
    return await _change(ctx, consent_id, by=by, scope=scope)


def _still_covered(row: CaseDisclosure, disclosure: Disclosure, kind: str, scope: Scope) -> bool:
    recipient = RecipientRef(disclosure.recipient_node, disclosure.recipient_authority, kind)
    return (
        row.purpose in scope.purposes
        and scope.permits_recipient(recipient)
        and set(row.categories) <= scope.categories
    )


async def _change(
    ctx: NodeContext, consent_id: str, *, by: Officer, scope: Scope | None
) -> WithdrawalOutcome:
    now = ctx.now()
    async with ctx.sessions.begin() as session:
        # The row lock orders this change against a disclosure being queued under it
        # (node.casework.disclose re-reads the consent under the same lock).
        row = await session.get(ConsentRow, consent_id, with_for_update=True)
        case = await session.get(CaseRow, row.case_id) if row is not None else None
        if row is None or case is None or case.authority != by.authority:
            # Only the authority holding the case changes her consent; to any other
            # the consent is unknown, as one that does not exist.
            raise ConsentError("unknown_consent", f"no consent {consent_id} on this node")
        before = ConsentRecord.from_document(row.record)
        record = (
            withdraw(before, at=now, by=by)
            if scope is None
            else narrow(before, scope, at=now, by=by)
        )
        await _save(ctx, session, record, row.case_id, now)
        pairs = (
            await session.execute(
                select(CaseDisclosure, Disclosure)
                .join(Disclosure, Disclosure.message_id == CaseDisclosure.message_id)
                .where(CaseDisclosure.consent_id == consent_id)
                .order_by(Disclosure.created_at)
                .with_for_update()
            )
        ).all()
        affected: list[Disclosure] = []
        for case_disclosure, disclosure in pairs:
            kind = _recipient_kind(ctx, disclosure)
            if scope is None or not _still_covered(case_disclosure, disclosure, kind, scope):
                affected.append(disclosure)
        stopped = []
        for disclosure in affected:
            if disclosure.state in STOPPABLE_STATES:
                disclosure.state = "withdrawn"
                stopped.append(disclosure.message_id)
                await audit.append(
                    session,
                    node=ctx.node_id,
                    event="disclosure.withdrawn",
                    at=now,
                    message_id=disclosure.message_id,
                    counterparty=disclosure.recipient_node,
                    **(disclosure.audit_context or {}),
                    consent_id=consent_id,
                    withdrawn_by=by.officer,
                )
        notices = await _queue_withdrawals(
            ctx, session, record, [d for _, d in pairs], affected, now, user=by.officer
        )
        await audit.append(
            session,
            node=ctx.node_id,
            event="consent.withdrawn" if scope is None else "consent.narrowed",
            at=now,
            case_ref=audit_case_ref(ctx, record.case_ref),
            consent_id=consent_id,
            officer=by.as_json(),
            scope=None if scope is None else scope.as_json(),
            stopped=stopped,
            notices=notices,
        )
    return WithdrawalOutcome(record, tuple(stopped), tuple(notices))


def _recipient_kind(ctx: NodeContext, disclosure: Disclosure) -> str:
    peer = ctx.directory.node(disclosure.recipient_node)
    authority = peer.authorities.get(disclosure.recipient_authority) if peer else None
    return authority.kind if authority else "unknown"


async def _queue_withdrawals(
    ctx: NodeContext,
    session: AsyncSession,
    record: ConsentRecord,
    disclosures: Sequence[Disclosure],
    affected: Sequence[Disclosure],
    now: dt.datetime,
    *,
    user: str,
) -> list[str]:
    """One consent_withdrawal per recipient authority that may hold data under the consent.

    "May hold" is every disclosure but those the recipient refused: one marked
    withdrawn while sending may have arrived, one that expired may have
    arrived with its receipt lost. Listing too much costs a ``not_held``.
    """
    scope = "full" if record.status == "withdrawn" else "narrowed"
    recipients: dict[tuple[str, str], tuple[str, list[Disclosure]]] = {}
    for disclosure in disclosures:
        if disclosure.state == "refused":
            continue
        key = (disclosure.recipient_node, disclosure.recipient_authority)
        sender, listed = recipients.setdefault(key, (disclosure.sender_authority, []))
        if disclosure in affected:
            listed.append(disclosure)
    queued = []
    for (node, authority), (sender, listed) in recipients.items():
        body: dict[str, Any] = {
            "consent_id": record.consent_id,
            "case_ref": record.case_ref,
            "scope": scope,
            "withdrawn_at": rfc3339(now),
            "messages": [
                {"message_id": d.message_id, "envelope_sha256": d.envelope_sha256} for d in listed
            ],
        }
        if scope == "narrowed":
            body["remaining"] = record.scope.as_json()
        notice = await queue_disclosure(
            ctx,
            sender_authority=sender,
            recipient_node=node,
            recipient_authority=authority,
            doc_type="consent_withdrawal",
            body=body,
            ttl=WITHDRAWAL_TTL,
            audit_details={
                "consent_id": record.consent_id,
                "case_ref": audit_case_ref(ctx, record.case_ref),
                "user": user,
                "scope": scope,
                "erase": [d.message_id for d in listed],
            },
            session=session,
        )
        session.add(
            WithdrawalNotice(
                message_id=notice.message_id,
                consent_id=record.consent_id,
                recipient_node=node,
                recipient_authority=authority,
                scope=scope,
                messages=[d.message_id for d in listed],
                created_at=now,
            )
        )
        queued.append(notice.message_id)
    return queued


async def lapse_due(ctx: NodeContext) -> int:
    """Mark lapsed every active consent whose validity has ended. Returns how many."""
    now = ctx.now()
    async with ctx.sessions.begin() as session:
        rows = list(
            (
                await session.execute(
                    select(ConsentRow)
                    .where(
                        ConsentRow.status.in_(sorted(ACTIVE_STATUSES)),
                        ConsentRow.valid_until <= now,
                    )
                    .with_for_update()
                )
            ).scalars()
        )
        for row in rows:
            record = lapse(ConsentRecord.from_document(row.record), at=now)
            await _save(ctx, session, record, row.case_id, now)
            await audit.append(
                session,
                node=ctx.node_id,
                event="consent.lapsed",
                at=now,
                case_ref=audit_case_ref(ctx, record.case_ref),
                authority=record.recorded_by.authority,  # the case's holder
                consent_id=record.consent_id,
            )
    return len(rows)


@dataclass(frozen=True)
class RecipientErasure:
    """One recipient authority told to erase, and whether it confirmed."""

    node: str
    authority: str
    withdrawal_message_id: str
    withdrawal_state: str
    scope: str
    erase: tuple[str, ...]
    confirmed_at: dt.datetime | None
    erased: tuple[str, ...]
    not_held: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "recipient": f"{self.node}/{self.authority}",
            "withdrawal_message_id": self.withdrawal_message_id,
            "withdrawal_state": self.withdrawal_state,
            "scope": self.scope,
            "erase": list(self.erase),
            "confirmed_at": rfc3339(self.confirmed_at) if self.confirmed_at else None,
            "erased": list(self.erased),
            "not_held": list(self.not_held),
        }


@dataclass(frozen=True)
class ConsentDisclosure:
    message_id: str
    recipient: str
    doc_type: str
    purpose: str
    state: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class ConsentStatus:
    """A consent, what was disclosed under it, and who confirmed erasure."""

    consent: ConsentRecord
    effective_status: str
    disclosures: tuple[ConsentDisclosure, ...]
    erasures: tuple[RecipientErasure, ...]

    @property
    def all_confirmed(self) -> bool:
        return all(e.confirmed_at is not None for e in self.erasures)

    def as_json(self) -> dict[str, Any]:
        return {
            "consent": self.consent.as_document(),
            "effective_status": self.effective_status,
            "disclosures": [
                {
                    "message_id": d.message_id,
                    "recipient": d.recipient,
                    "doc_type": d.doc_type,
                    "purpose": d.purpose,
                    "state": d.state,
                    "categories": list(d.categories),
                }
                for d in self.disclosures
            ],
            "erasures": [e.as_json() for e in self.erasures],
        }


async def consent_status(ctx: NodeContext, consent_id: str) -> ConsentStatus:
    """The consent with its disclosures and, per recipient, the erasure confirmations."""
    record = await get_consent(ctx, consent_id)
    async with ctx.sessions() as session:
        pairs = (
            await session.execute(
                select(CaseDisclosure, Disclosure)
                .join(Disclosure, Disclosure.message_id == CaseDisclosure.message_id)
                .where(CaseDisclosure.consent_id == consent_id)
                .order_by(Disclosure.created_at)
            )
        ).all()
        notices = list(
            (
                await session.execute(
                    select(WithdrawalNotice, Disclosure)
                    .join(Disclosure, Disclosure.message_id == WithdrawalNotice.message_id)
                    .where(WithdrawalNotice.consent_id == consent_id)
                    .order_by(WithdrawalNotice.created_at)
                )
            ).all()
        )
    confirmations = await confirmations_for(ctx, consent_id)
    erasures = []
    for notice, disclosure in notices:
        confirmation = confirmations.get(notice.message_id)
        erasures.append(
            RecipientErasure(
                node=notice.recipient_node,
                authority=notice.recipient_authority,
                withdrawal_message_id=notice.message_id,
                withdrawal_state=disclosure.state,
                scope=notice.scope,
                erase=tuple(notice.messages),
                confirmed_at=confirmation.erased_at if confirmation else None,
                erased=confirmation.erased if confirmation else (),
                not_held=confirmation.not_held if confirmation else (),
            )
        )
    return ConsentStatus(
        consent=record,
        effective_status=record.effective_status(ctx.now()),
        disclosures=tuple(
            ConsentDisclosure(
                message_id=d.message_id,
                recipient=f"{d.recipient_node}/{d.recipient_authority}",
                doc_type=d.doc_type,
                purpose=c.purpose,
                state=d.state,
                categories=tuple(c.categories),
            )
            for c, d in pairs
        ),
        erasures=tuple(erasures),
    )
