"""The critical route of a case this node holds: recording its steps, and the route view.

Service functions over a :class:`NodeContext` (the API and the demo call the
same ones). Each step — identification, primary assistance, risk assessment,
durable solution with her voluntary choice — is recorded on the case with
the node, the authority and the time, checked (node.rules.critical_route,
schemas/case) and audited as ``case.route_recorded`` (step and field names,
never values). The handoffs (step 5) are the case's disclosures to the
destination of her durable solution: the view reads them from the outbox,
with the time of each signed receipt, rather than keeping a second copy on
the case. docs/critical-route.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from node.casework.cases import Case, CaseError, change_case, find_case
from node.core.clock import rfc3339
from node.rules.critical_route import (
    STEP_TIME,
    RouteStatus,
    route_of,
    route_status,
    with_step,
)
from node.storage.consent_models import CaseDisclosure
from node.storage.context import NodeContext
from node.storage.models import Disclosure
from node.wire.fields import field_paths

# What a handoff to the destination of her durable solution can be (schemas/critical-route).
HANDOFF_DOCUMENTS = ("protection_handoff", "resettlement_referral", "return_notice", "case_handoff")
MAX_HANDOFFS = 20  # schemas/critical-route: handoffs maxItems
_LIVE_STATES = ("queued", "sending", "delivered")  # refused or expired: not a handoff


@dataclass(frozen=True)
class RouteView:
    """A case's route as the caseworker sees it: the route, its stage and safeguards."""

    case: Case
    route: Mapping[str, Any]
    status: RouteStatus

    def as_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case.case_id,
            "case_ref": self.case.case_ref,
            **self.status.as_json(),
            "critical_route": dict(self.route),
        }


async def record_step(
    ctx: NodeContext,
    key: str,
    *,
    step: str,
    authority: str,
    content: Mapping[str, Any],
    country_of_origin: str | None = None,
) -> RouteView:
    """Record one step of the route on a case this node holds, by ``authority`` of this node.

    The node fills in who recorded it (its node and ``authority``) and, unless
    ``content`` says when it happened, the time. Refused with ``route_out_of_order``,
    ``return_country_not_assessed`` (node.rules.critical_route) or ``case_invalid``.
    """
    if step not in STEP_TIME:
        raise CaseError("route_invalid", f"no step {step} on the critical route")
    if not isinstance(content, Mapping):
        raise CaseError("case_invalid", f"a {step} is a JSON object")
    when = STEP_TIME[step]
    stamped = {
        **content,
        when: content.get(when) or rfc3339(ctx.now()),
        "node": ctx.node_id,
        "authority": authority,
    }

    def record(document: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        route, superseded = with_step(
            route_of(document), step, stamped, country_of_origin=country_of_origin
        )
        updated = {**document, "critical_route": route}
        if step == "risk_assessment" and isinstance(stamped.get("level"), str):
            # The case handoff's bare risk level says the same as the route, never otherwise.
            updated["risk_assessment"] = {
                "level": stamped["level"],
                "assessed_at": stamped["assessed_at"],
            }
        details: dict[str, Any] = {
            "step": step,
            "fields": field_paths({"critical_route": {step: stamped}}),
        }
        if superseded:
            details["superseded"] = list(superseded)
        return updated, details

    case = await change_case(ctx, key, record, authority=authority, event="case.route_recorded")
    return await _view(ctx, case)


async def route_view(ctx: NodeContext, key: str, *, authority: str | None = None) -> RouteView:
    """The route of a case this node holds (of ``authority``, if given), with its handoffs."""
    return await _view(ctx, await find_case(ctx, key, authority=authority))


async def _view(ctx: NodeContext, case: Case) -> RouteView:
    route = dict(route_of(case.document))
    # The outbox says what was handed off, and when its receipt came; never the case itself.
    route.pop("handoffs", None)
    solution = route.get("durable_solution")
    if solution is not None:
        handoffs = await _handoffs(ctx, case.case_id, str(solution["country"]))
        if handoffs:
            route["handoffs"] = handoffs
    document = {**case.document, "critical_route": route} if route else case.document
    return RouteView(case, route, route_status(document, today=ctx.now().date()))


async def _handoffs(ctx: NodeContext, case_id: str, country: str) -> list[dict[str, Any]]:
    """The case's disclosures to the solution's country, as ``critical_route.handoffs``."""
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(Disclosure)
                .join(CaseDisclosure, CaseDisclosure.message_id == Disclosure.message_id)
                .where(
                    CaseDisclosure.case_id == case_id,
                    Disclosure.recipient_node == country,
                    Disclosure.doc_type.in_(HANDOFF_DOCUMENTS),
                    Disclosure.state.in_(_LIVE_STATES),
                )
                .order_by(Disclosure.created_at.desc())
                .limit(MAX_HANDOFFS)
            )
        ).scalars()
        return [_handoff(row) for row in reversed(list(rows))]


def _handoff(row: Disclosure) -> dict[str, Any]:
    handoff = {
        "doc_type": row.doc_type,
        "country": row.recipient_node,
        "authority": row.recipient_authority,
        "message_id": row.message_id,
        "sent_at": rfc3339(row.created_at),
    }
    if row.state == "delivered" and row.delivered_at is not None:
        handoff["receipt_at"] = rfc3339(row.delivered_at)
    return handoff
