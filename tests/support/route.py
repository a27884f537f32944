"""Cases on the critical route at a chosen stage, for the pure tests of its safeguards.

Built from the same step contents the demo and the services use
(node.demo.synthetic_cases), stamped as node.casework.route stamps them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from node.core import schemas
from node.core.clock import rfc3339
from node.demo.synthetic_cases import (
    consent_draft,
    durable_solution_step,
    identification_step,
    primary_assistance_step,
    risk_assessment_step,
    route_case,
)
from node.rules.consent import CATEGORIES, ConsentRecord, new_consent
from node.rules.critical_route import STEP_TIME

NOW = dt.datetime(2026, 11, 26, 16, 0, tzinfo=dt.UTC)
CASE_REF = "MX-RUTA-2026-000100"
# Where a case stands, in route order: each stage records one more step.
STAGES = ("none", "identified", "assisted", "risk_assessed", "solution_chosen")
BID = {
    "reference": "BID-MX-2026-0107",
    "recommended_solution": "return",
    "views_heard": True,
    "determined_at": rfc3339(NOW - dt.timedelta(days=1)),
    "node": "MX",
    "authority": "mx-dif-demo",
}


def stamped(step: str, content: Mapping[str, Any], authority: str = "mx-comar") -> dict[str, Any]:
    return {**content, STEP_TIME[step]: rfc3339(NOW), "node": "MX", "authority": authority}


def case_at(
    stage: str,
    *,
    danger_from: Sequence[str] = ("traffickers_or_exploiters",),
    solution: str = "return",
    country: str = "GT",
    origin_recipients: Sequence[Mapping[str, str]] = (),
    location_released_to: Sequence[Mapping[str, str]] = (),
    age_status: str = "adult",
    best_interest_determination: Mapping[str, Any] | None = None,
    trafficking_flag: bool = True,
    identified_as: Sequence[str] = ("presumed_trafficking_victim",),
) -> dict[str, Any]:
    """A Guatemalan woman's case held in MX, with the route recorded up to ``stage``."""
    case = route_case(
        case_ref=CASE_REF, node="MX", authority="mx-inm", asked_at=NOW, age_status=age_status
    )
    if not trafficking_flag:
        case["priority_flags"].remove("trafficking_indicators")
    reached = STAGES.index(stage)
    route: dict[str, Any] = {}
    if reached >= 1:
        route["identification"] = stamped(
            "identification", identification_step(identified_as=identified_as), "mx-inm"
        )
    if reached >= 2:
        route["primary_assistance"] = stamped(
            "primary_assistance", primary_assistance_step(), "mx-inm"
        )
    if reached >= 3:
        route["risk_assessment"] = stamped(
            "risk_assessment", risk_assessment_step(danger_from=danger_from)
        )
    if reached >= 4:
        route["durable_solution"] = stamped(
            "durable_solution",
            durable_solution_step(
                solution=solution,
                country=country,
                origin_recipients=origin_recipients,
                location_released_to=location_released_to,
                best_interest_determination=best_interest_determination,
            ),
        )
    if route:
        case["critical_route"] = route
    schemas.validate(schemas.CASE, case)
    return case


def broad_consent(
    *,
    grantor_role: str = "self",
    categories: Sequence[str] = CATEGORIES,
    purposes: Sequence[str] = ("protection_referral", "reception_on_return", "consular_assistance"),
    recipients: Sequence[Mapping[str, str]] = (
        {"country": "GT"},
        {"country": "MX"},
        {"country": "HN"},
        {"country": "CA"},
    ),
) -> ConsentRecord:
    """Her consent to everything, everywhere: the route's safeguards must not depend on it."""
    draft = consent_draft(
        case_ref=CASE_REF,
        node="MX",
        authority="mx-inm",
        purposes=purposes,
        recipients=recipients,
        categories=categories,
        valid_until=NOW + dt.timedelta(days=180),
        grantor_role=grantor_role,
    )
    return new_consent(draft, consent_id=str(uuid.uuid4()), now=NOW - dt.timedelta(days=1))
