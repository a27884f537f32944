"""The messages the benchmarks send: typical, synthetic, made by the production planner.

A return notice (Mexico's migration authority to a Guatemalan reception
centre, purpose ``reception_on_return``) and a case handoff (Guatemala's
consulate to Mexico's refugee commission, purpose ``protection_referral``),
each minimized by ``planning.plan_disclosure`` exactly as ``disclose`` would,
with its disclosure terms. Invented people only (node.demo.synthetic_cases).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from node.core.config import AuthorityConfig
from node.demo.local_federation import NodeSpec
from node.demo.synthetic_cases import consent_draft, interviewed_case
from node.rules.consent import RecipientRef, new_consent
from node.rules.planning import plan_disclosure
from node.rules.policy import default_policy_set

MX = NodeSpec(
    "MX",
    "México (bench)",
    (
        AuthorityConfig("mx-inm", "migration_authority", {"es": "INM (bench)"}),
        AuthorityConfig("mx-comar", "protection_agency", {"es": "COMAR (bench)"}),
    ),
)
GT = NodeSpec(
    "GT",
    "Guatemala (bench)",
    (
        AuthorityConfig("gt-reception", "reception_centre", {"es": "Recepción (bench)"}),
        AuthorityConfig("gt-consulate", "consulate", {"es": "Consulado (bench)"}),
    ),
)
SPECS = (MX, GT)


@dataclass(frozen=True)
class Route:
    """Who sends which document to whom, and why."""

    doc_type: str
    purpose: str
    sender_node: str
    sender_authority: str
    recipient_node: str
    recipient_authority: str
    recipient_kind: str


RETURN_NOTICE = Route(
    "return_notice", "reception_on_return", "MX", "mx-inm", "GT", "gt-reception", "reception_centre"
)
CASE_HANDOFF = Route(
    "case_handoff",
    "protection_referral",
    "GT",
    "gt-consulate",
    "MX",
    "mx-comar",
    "protection_agency",
)
ROUTES = {"return_notice": RETURN_NOTICE, "case_handoff": CASE_HANDOFF}


def case_document(route: Route, serial: int, now: dt.datetime) -> dict[str, Any]:
    """A schema-valid, interviewed synthetic case held by the route's sender."""
    return interviewed_case(
        case_ref=f"{route.sender_node}-BENCH-{now:%Y}-{serial:06d}",
        node=route.sender_node,
        authority=route.sender_authority,
        asked_at=now,
    )


def consent_for(route: Route, case_ref: str, now: dt.datetime) -> dict[str, Any]:
    """Her consent (schemas/consent-draft) to exactly this route's purpose and recipient."""
    return consent_draft(
        case_ref=case_ref,
        node=route.sender_node,
        authority=route.sender_authority,
        purposes=[route.purpose],
        recipients=[{"country": route.recipient_node, "authority_kind": route.recipient_kind}],
        valid_until=now + dt.timedelta(days=30),
    )


@dataclass(frozen=True)
class PlannedMessage:
    """The minimized body and its terms, as ``disclose`` would seal them."""

    route: Route
    body: dict[str, Any]
    terms: dict[str, Any]


def planned_message(route: Route, now: dt.datetime) -> PlannedMessage:
    """Plan one typical disclosure on ``route`` with the production planner (no I/O)."""
    case = case_document(route, 1, now)
    consent = new_consent(
        consent_for(route, case["case_ref"], now), consent_id=str(uuid.uuid4()), now=now
    )
    plan = plan_disclosure(
        case=case,
        doc_type=route.doc_type,
        purpose=route.purpose,
        recipient=RecipientRef(
            route.recipient_node, route.recipient_authority, route.recipient_kind
        ),
        sender_country=route.sender_node,
        policies=default_policy_set(),
        consents=[consent],
        now=now,
    )
    if plan.refusal is not None or plan.terms is None:
        raise RuntimeError(f"the bench workload is refused: {plan.refusal}")
    return PlannedMessage(route, dict(plan.summary.document), dict(plan.terms))
