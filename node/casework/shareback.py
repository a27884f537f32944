"""Sharing back what a recipient learned, so that the next authority does not ask again.

A recipient records an addendum (node.casework.cases.add_addendum): the interview
topics it asked and what it learned. Where her consent allows share-back (the
consent's scope travels with every summary, and a withdrawal or narrowing
reaches the recipient), the addendum's *new* topics only go back to the
authority that holds her case, as a ``case_handoff`` for the purpose
``case_continuity``, minimized by the same policy engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.casework.cases import CaseError, get_addendum, mark_addendum_shared
from node.core.clock import rfc3339
from node.delivery.outbox import DisclosureRefused, queue_disclosure
from node.intake.summaries import SummaryView, audit_case_ref, get_received, list_received
from node.rules.consent import RecipientRef, Scope
from node.rules.interview import coverage_of, coverage_report, only_topics
from node.rules.planning import Plan, plan_share_back
from node.rules.policy import default_policy_set
from node.storage.consent_models import ConsentNotice
from node.storage.context import NodeContext


@dataclass(frozen=True)
class SharedBack:
    message_id: str
    plan: Plan
    topics: tuple[str, ...]


async def _basis(ctx: NodeContext, readable: list[SummaryView]) -> tuple[SummaryView, str, Scope]:
    """The newest consent-based summary from the origin, with the scope that holds now."""
    for summary in reversed(readable):
        if summary.legal_basis != "consent" or summary.consent_id is None:
            continue
        async with ctx.sessions() as session:
            notice = await session.get(ConsentNotice, (summary.sender_node, summary.consent_id))
        row = await get_received(ctx, summary.sender_node, summary.message_id)
        scope = Scope.from_json(row.terms["consent"])
        if notice is not None and notice.scope == "full":
            raise DisclosureRefused("consent_withdrawn", "her consent was withdrawn")
        if notice is not None and notice.remaining is not None:
            scope = Scope.from_json(notice.remaining)
        return summary, summary.consent_id, scope
    raise DisclosureRefused("no_consent", "no summary of this case rests on her consent")


async def share_back(ctx: NodeContext, addendum_id: str) -> SharedBack:
    """Send an addendum's new topics to the authority holding the case, if consent allows."""
    addendum = await get_addendum(ctx, addendum_id)
    if addendum.shared_message_id is not None:
        raise CaseError("already_shared", f"addendum shared as {addendum.shared_message_id}")
    readable = [
        s
        for s in await list_received(ctx, addendum.case_ref, recipient_authority=addendum.authority)
        if s.sender_node == addendum.origin_node and s.body is not None
    ]
    if not readable:
        raise DisclosureRefused("no_consent", "nothing readable is held from the case's holder")
    summary, consent_id, scope = await _basis(ctx, readable)
    known = coverage_report(e for s in readable if s.body for e in coverage_of(s.body))
    new_topics = tuple(
        sorted({e["topic"] for e in addendum.interview["coverage"]} - set(known.covered))
    )
    if not new_topics:
        raise CaseError("nothing_new", "every topic of the addendum is already covered")
    document = {
        "case_ref": addendum.case_ref,
        "interview": only_topics(addendum.interview, new_topics),
    }
    peer = ctx.directory.node(summary.sender_node)
    origin = peer.authorities.get(summary.sender_authority) if peer else None
    if origin is None:
        raise DisclosureRefused("unknown_authority", "the case's holder left the directory")
    recipient = RecipientRef(summary.sender_node, summary.sender_authority, origin.kind)
    now = ctx.now()
    plan = plan_share_back(
        document=document,
        consent_id=consent_id,
        scope=scope,
        recipient=recipient,
        sender_country=ctx.node_id,
        policies=default_policy_set(),
        now=now,
    )
    if plan.refusal is not None or plan.terms is None or plan.rule is None:
        reason = plan.refusal.reason if plan.refusal else "disclosure_refused"
        raise DisclosureRefused(reason, plan.refusal.detail if plan.refusal else "")
    async with ctx.sessions.begin() as session:
        row = await queue_disclosure(
            ctx,
            sender_authority=addendum.authority,
            recipient_node=recipient.node,
            recipient_authority=recipient.authority,
            doc_type="case_handoff",
            body=plan.summary.document,
            terms=plan.terms,
            audit_details={
                "case_ref": audit_case_ref(ctx, addendum.case_ref),
                "purpose": plan.purpose,
                "legal_basis": "consent",
                "consent_id": consent_id,
                "policy_id": plan.rule.policy.policy_id,
                "policy_version": plan.rule.policy.version,
                "policy_sha256": plan.rule.policy.sha256,
                "addendum_id": addendum_id,
                "topics": list(new_topics),
                "retain_until": rfc3339(plan.retain_until or now),
            },
            session=session,
        )
        await mark_addendum_shared(ctx, addendum_id, row.message_id, session)
    return SharedBack(row.message_id, plan, new_topics)
