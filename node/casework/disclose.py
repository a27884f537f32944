"""Previewing and sending a case summary: the caseworker's two buttons.

``preview_disclosure`` and ``disclose`` load the case and its consents and
call the same pure planner (node.rules.planning), so what the preview shows is
exactly what is sent. ``disclose`` then queues the minimized document through
the outbox with its terms signed in, records the terms (policy id, version
and digest, consent or exception, purpose, legal basis) and audits it, in one
transaction that re-checks the consent under its row lock: a withdrawal that
lands between preview and send wins.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.casework.cases import Case, find_case, own_authority_kind, resolve_case
from node.casework.consents import consents_for_case
from node.core.clock import rfc3339
from node.delivery.outbox import (
    DisclosureRefused,
    QueuedDisclosure,
    commit_queued,
    prepare_disclosure,
)
from node.intake.summaries import audit_case_ref
from node.rules.consent import ConsentRecord, RecipientRef
from node.rules.planning import Plan, VitalInterest, plan_disclosure
from node.rules.policy import default_policy_set
from node.storage.consent_models import CaseDisclosure, CaseRow, ConsentRow
from node.storage.context import NodeContext
from node.storage.group_commit import GroupCommit
from node.storage.models import Disclosure


@dataclass(frozen=True)
class Preview:
    """What would go to one recipient for one purpose, and why each other field stays."""

    case_id: str
    case_ref: str
    sender_authority: str
    plan: Plan
    case_updated_at: dt.datetime  # the version of the case it was computed from

    @property
    def ok(self) -> bool:
        return self.plan.ok

    @property
    def document(self) -> Mapping[str, Any]:
        return self.plan.summary.document

    @property
    def sent_fields(self) -> tuple[str, ...]:
        return self.plan.summary.sent_fields

    @property
    def withheld(self) -> Mapping[str, str]:
        return self.plan.summary.withheld

    def as_json(self) -> dict[str, Any]:
        plan = self.plan
        rule = plan.rule
        return {
            "case_ref": self.case_ref,
            "doc_type": plan.doc_type,
            "purpose": plan.purpose,
            "sender_authority": self.sender_authority,
            "recipient": {
                "node": plan.recipient.node,
                "authority": plan.recipient.authority,
                "kind": plan.recipient.kind,
            },
            "ok": plan.ok,
            "refusal": (
                {"reason": plan.refusal.reason, "detail": plan.refusal.detail}
                if plan.refusal
                else None
            ),
            "legal_basis": plan.legal_basis,
            "consent_id": plan.consent.consent_id if plan.consent else None,
            "policy": rule.policy.ref.as_json() if rule else None,
            "agreements": [a.ref.as_json() for a in rule.agreements] if rule else [],
            "retain_until": rfc3339(plan.retain_until) if plan.retain_until else None,
            "sent_fields": list(self.sent_fields),
            "withheld": dict(self.withheld),
            "document": dict(self.document),
        }


@dataclass(frozen=True)
class Sent:
    """A queued disclosure and the preview it was sent from."""

    message_id: str
    preview: Preview


def _recipient(ctx: NodeContext, node: str, authority: str) -> RecipientRef:
    peer = ctx.directory.node(node)
    if peer is None or node == ctx.node_id:
        raise DisclosureRefused("unknown_recipient", "recipient node is not a federation member")
    found = peer.authorities.get(authority)
    if found is None:
        raise DisclosureRefused("unknown_authority", "recipient authority is not in the directory")
    return RecipientRef(node, authority, found.kind)


async def preview_disclosure(
    ctx: NodeContext,
    *,
    case: str | Case,
    doc_type: str,
    purpose: str,
    recipient_node: str,
    recipient_authority: str,
    sender_authority: str | None = None,
    consent_id: str | None = None,
    vital_interest: str | None = None,
) -> Preview:
    """The exact summary that would be sent, with every withheld field and its reason.

    ``case`` is a case id or case_ref, or the case already loaded; ``vital_interest`` is the written
    justification of a disclosure without consent because a life is in danger. A case_ref
    names the sending authority's own case first (node.casework.cases.resolve_case).
    """
    if isinstance(case, Case):
        record = case
    elif sender_authority is not None:
        record = await resolve_case(ctx, case, acting=sender_authority)
    else:
        record = await find_case(ctx, case)
    sender = sender_authority or record.authority
    own_authority_kind(ctx, sender)
    recipient = _recipient(ctx, recipient_node, recipient_authority)
    consents = await consents_for_case(ctx, record.case_id)
    plan = plan_disclosure(
        case=record.document,
        doc_type=doc_type,
        purpose=purpose,
        recipient=recipient,
        sender_country=ctx.node_id,
        policies=default_policy_set(),
        consents=consents,
        now=ctx.now(),
        vital_interest=(
            VitalInterest(str(uuid.uuid4()), vital_interest) if vital_interest is not None else None
        ),
        consent_id=consent_id,
    )
    return Preview(record.case_id, record.case_ref, sender, plan, record.updated_at)


async def disclose(
    ctx: NodeContext,
    *,
    case: str | Case,
    doc_type: str,
    purpose: str,
    recipient_node: str,
    recipient_authority: str,
    sender_authority: str | None = None,
    consent_id: str | None = None,
    vital_interest: str | None = None,
    ttl: dt.timedelta | None = None,
    user: str | None = None,
) -> Sent:
    """Plan and queue a summary in one step (:func:`preview_disclosure` + :func:`send_preview`).

    ``user`` names the person sending, as the audit trail records it.
    """
    preview = await preview_disclosure(
        ctx,
        case=case,
        doc_type=doc_type,
        purpose=purpose,
        recipient_node=recipient_node,
        recipient_authority=recipient_authority,
        sender_authority=sender_authority,
        consent_id=consent_id,
        vital_interest=vital_interest,
    )
    return await send_preview(ctx, preview, ttl=ttl, user=user)


async def send_preview(
    ctx: NodeContext,
    preview: Preview,
    *,
    ttl: dt.timedelta | None = None,
    user: str | None = None,
) -> Sent:
    """Queue exactly what a caseworker previewed, or raise the refusal it carries.

    Refused as ``preview_stale`` if the case or the consent changed since.
    ``user`` (who sends) is named in the audit entries of the disclosure.
    """
    plan = preview.plan
    recipient_node, recipient_authority = plan.recipient.node, plan.recipient.authority
    doc_type, purpose = plan.doc_type, plan.purpose
    if plan.refusal is not None or plan.terms is None or plan.rule is None:
        reason = plan.refusal.reason if plan.refusal else "disclosure_refused"
        detail = plan.refusal.detail if plan.refusal else ""
        await _audit_refusal(ctx, preview, reason, user)
        raise DisclosureRefused(reason, detail)
    assert plan.retain_until is not None
    review = plan.exception is not None
    categories = sorted(plan.summary.categories(plan.rule))
    queued = prepare_disclosure(
        ctx,
        sender_authority=preview.sender_authority,
        recipient_node=recipient_node,
        recipient_authority=recipient_authority,
        doc_type=doc_type,
        body=preview.document,
        ttl=ttl,
        terms=plan.terms,
        audit_details={
            "case_ref": audit_case_ref(ctx, preview.case_ref),
            "user": user,
            "purpose": purpose,
            "legal_basis": plan.legal_basis,
            "consent_id": plan.consent.consent_id if plan.consent else None,
            "exception_id": plan.exception.exception_id if plan.exception else None,
            "justification_sha256": (
                plan.exception.justification_sha256 if plan.exception else None
            ),
            "review_required": True if review else None,
            "policy_id": plan.rule.policy.policy_id,
            "policy_version": plan.rule.policy.version,
            "policy_sha256": plan.rule.policy.sha256,
            "agreements": [a.agreement_id for a in plan.rule.agreements] or None,
            "categories": categories,
            "withheld": sorted(preview.withheld),
            "retain_until": rfc3339(plan.retain_until),
        },
    )
    row = queued.row
    record = CaseDisclosure(
        message_id=row.message_id,
        case_id=preview.case_id,
        consent_id=plan.consent.consent_id if plan.consent else None,
        purpose=purpose,
        legal_basis=plan.legal_basis or "consent",
        policy_id=plan.rule.policy.policy_id,
        policy_version=plan.rule.policy.version,
        policy_sha256=plan.rule.policy.sha256,
        agreements=[a.ref.as_json() for a in plan.rule.agreements],
        categories=categories,
        retain_until=plan.retain_until,
        review_required=review,
        exception_id=plan.exception.exception_id if plan.exception else None,
        justification=plan.exception.justification if plan.exception else None,
        created_at=row.created_at,
    )
    await _sends(ctx).submit(_Send(preview, queued, record))
    return Sent(row.message_id, preview)


@dataclass(frozen=True)
class _Send:
    """A sealed disclosure waiting for its group's transaction."""

    preview: Preview
    queued: QueuedDisclosure
    record: CaseDisclosure


def _sends(ctx: NodeContext) -> GroupCommit[_Send, str]:
    """This process's group committer of sends (node.storage.group_commit)."""
    group = ctx.group_commits.get("disclose")
    if group is None:
        group = ctx.group_commits["disclose"] = GroupCommit(
            ctx.sessions, functools.partial(_commit_sends, ctx)
        )
    return cast(GroupCommit[_Send, str], group)


async def _commit_sends(
    ctx: NodeContext, session: AsyncSession, sends: Sequence[_Send]
) -> list[str | Exception]:
    """Queue a group of sends in one transaction, each re-checked under its row locks.

    A withdrawal or an edit of the case that landed between preview and send
    wins: that send is refused ``preview_stale`` and the rest go on.
    """
    planned = {s.preview.plan.consent.consent_id for s in sends if s.preview.plan.consent}
    consents: dict[str, ConsentRow] = {}
    if planned:
        found = await session.execute(
            select(ConsentRow)
            .where(ConsentRow.consent_id.in_(sorted(planned)))
            .order_by(ConsentRow.consent_id)
            .with_for_update()
        )
        consents = {row.consent_id: row for row in found.scalars()}
    found_cases = await session.execute(
        select(CaseRow.case_id, CaseRow.updated_at)
        .where(CaseRow.case_id.in_(sorted({s.preview.case_id for s in sends})))
        .order_by(CaseRow.case_id)
        .with_for_update()
    )
    case_versions = {case_id: updated_at for case_id, updated_at in found_cases.all()}
    results: list[str | Exception] = []
    accepted: list[_Send] = []
    for send in sends:
        consent = send.preview.plan.consent
        if consent is not None and not _unchanged(consents.get(consent.consent_id), consent):
            # Withdrawn or narrowed since the plan was made: plan again, never send the old one.
            results.append(DisclosureRefused("preview_stale", "the consent changed; preview again"))
        elif case_versions.get(send.preview.case_id) != send.preview.case_updated_at:
            results.append(DisclosureRefused("preview_stale", "the case changed; preview again"))
        else:
            accepted.append(send)
            results.append(send.queued.row.message_id)
    await commit_queued(ctx, session, [s.queued for s in accepted])
    session.add_all([s.record for s in accepted])
    return results


def _unchanged(row: ConsentRow | None, planned: ConsentRecord) -> bool:
    current = ConsentRecord.from_document(row.record) if row is not None else None
    return current is not None and current.history == planned.history


async def _audit_refusal(ctx: NodeContext, preview: Preview, reason: str, user: str | None) -> None:
    plan = preview.plan
    async with ctx.sessions.begin() as session:
        await audit.append(
            session,
            node=ctx.node_id,
            event="disclosure.refused_locally",
            at=ctx.now(),
            counterparty=plan.recipient.node,
            case_ref=audit_case_ref(ctx, preview.case_ref),
            purpose=plan.purpose,
            legal_basis=plan.legal_basis,
            reason=reason,
            user=user,
            authority=preview.sender_authority,
            doc_type=plan.doc_type,
            counterparty_authority=plan.recipient.authority,
            consent_id=plan.consent.consent_id if plan.consent else None,
        )


@dataclass(frozen=True)
class ExceptionDisclosure:
    """A disclosure without consent (life in danger), for the auditors' review."""

    message_id: str
    case_id: str
    recipient: str
    purpose: str
    created_at: dt.datetime
    exception_id: str
    justification: str

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "case_id": self.case_id,
            "recipient": self.recipient,
            "purpose": self.purpose,
            "created_at": rfc3339(self.created_at),
            "exception_id": self.exception_id,
            "justification": self.justification,
        }


async def exceptions_for_review(ctx: NodeContext) -> list[ExceptionDisclosure]:
    """Every disclosure made under the life-in-danger exception, with its justification."""
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(CaseDisclosure, Disclosure)
                .join(Disclosure, Disclosure.message_id == CaseDisclosure.message_id)
                .where(CaseDisclosure.review_required.is_(True))
                .order_by(CaseDisclosure.created_at)
            )
        ).all()
    return [
        ExceptionDisclosure(
            message_id=c.message_id,
            case_id=c.case_id,
            recipient=f"{d.recipient_node}/{d.recipient_authority}",
            purpose=c.purpose,
            created_at=c.created_at,
            exception_id=c.exception_id or "",
            justification=c.justification or "",
        )
        for c, d in rows
    ]
