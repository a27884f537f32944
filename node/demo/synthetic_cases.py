"""Synthetic, obviously invented cases and consents for the demo and tests. Never real people."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from node.core.clock import rfc3339
from node.rules.consent import CATEGORIES


def coverage(
    topics: Iterable[str],
    *,
    node: str,
    authority: str,
    asked_at: dt.datetime,
    language: str = "es",
    interpreter: bool = False,
) -> list[dict[str, Any]]:
    """Coverage entries: these topics were asked by this authority at this time."""
    return [
        {
            "topic": topic,
            "asked_at": rfc3339(asked_at),
            "node": node,
            "authority": authority,
            "language": language,
            "interpreter": interpreter,
        }
        for topic in topics
    ]


CONSULATE_TOPICS = (
    "identity",
    "identity_documents",
    "languages",
    "health",
    "emotional_state",
    "fear_of_return",
    "persecution",
    "violence_fled",
    "trafficking_smuggling",
    "help_request",
    "pregnancy",
    "children",
    "gender_based_violence",
    "immediate_needs",
)


def interviewed_case(
    *,
    case_ref: str,
    node: str,
    authority: str,
    asked_at: dt.datetime,
    with_children: bool = True,
    fear_of_return: bool = False,
    screening: str | None = None,
    age_status: str = "adult",
    language: str = "es",
    interpreter: bool = False,
    trafficking_indicators: bool = False,
    nationality: str | None = None,
) -> dict[str, Any]:
    """A schema-valid case after a first standardized interview.

    Her nationality is the interviewing node's (a consulate's own national)
    unless given. ``trafficking_indicators`` flags the case for the critical
    route's safeguards (node.rules.critical_route): off by default, so a case
    that is not about the route is not held back by them.
    """
    indicators = ["emotional_distress", "smuggling_or_trafficking_contact", "asks_for_help"]
    if fear_of_return:
        indicators += ["fear_of_return", "fled_pervasive_violence"]
    case: dict[str, Any] = {
        "case_ref": case_ref,
        "person": {
            "given_names": "Ana Lucía",
            "family_names": "Ejemplo Prueba",
            "date_of_birth": "1994-03-08" if age_status == "adult" else "2009-05-01",
            "age_status": age_status,
            "nationality": nationality or node,
            "identity_document": {"kind": "national_id", "number": "DEMO-0000000"},
            "languages": [language] if language == "es" else [language, "es"],
        },
        "arrival": {
            "date": (asked_at + dt.timedelta(days=5)).date().isoformat(),
            "time": "14:30",
            "place_of_entry": "Aeropuerto de prueba",
            "means": "air",
        },
        "immediate_needs": ["medical_care", "psychological_care", "shelter"],
        "priority_flags": ["emotional_distress"],
        "interview": {
            "identification_indicators": indicators,
            "vulnerability_conditions": ["gender_based_violence", "social_risk_area_or_threatened"],
            "coverage": coverage(
                CONSULATE_TOPICS,
                node=node,
                authority=authority,
                asked_at=asked_at,
                language=language,
                interpreter=interpreter,
            )
            + coverage(
                ["social_risk"],
                node=node,
                authority=authority,
                asked_at=asked_at,
                language=language,
            ),
        },
        "services_given": [
            {"service": "consular_documentation", "date": asked_at.date().isoformat()},
            {"service": "psychological_care", "date": asked_at.date().isoformat()},
        ],
        "referrals_recommended": [
            {"service": "shelter", "authority_kind": "protection_agency", "priority": "urgent"},
            {"service": "legal_counselling", "priority": "priority"},
        ],
        "risk_assessment": {"level": "high", "assessed_at": rfc3339(asked_at)},
    }
    if fear_of_return:
        case["interview"]["persecution_grounds"] = ["social_group"]
    if screening is not None:
        case["protection"] = {
            "screening": {
                "outcome": screening,
                "decided_at": rfc3339(asked_at),
                "node": node,
                "authority": authority,
            }
        }
    if with_children:
        case["accompanying_children"] = [
            {"given_names": "Camila", "age": 6, "sex": "female", "relationship": "daughter"},
            {"given_names": "Mateo", "age": 3, "sex": "male", "relationship": "son"},
        ]
        case["priority_flags"].append("alone_with_children")
        case["interview"]["vulnerability_conditions"].append("alone_with_children")
    if age_status != "adult":
        case["priority_flags"].append("minor" if age_status == "minor" else "age_in_doubt")
    if trafficking_indicators:
        case["priority_flags"].append("trafficking_indicators")
    return case


# The critical route (docs/critical-route.md): a Guatemalan woman identified in Mexico as a
# presumed victim of trafficking, as in the worked example. Each step as a caseworker gives
# it (node.casework.route stamps the node, the authority and, unless given, the time).

ROUTE_INDICATORS = (
    "appears_controlled_by_companion",
    "smuggling_or_trafficking_contact",
    "asks_for_help",
)


def route_case(
    *,
    case_ref: str,
    node: str,
    authority: str,
    asked_at: dt.datetime,
    origin: str = "GT",
    age_status: str = "adult",
) -> dict[str, Any]:
    """A woman from ``origin`` interviewed at ``node`` (in Mam, with an interpreter), with
    trafficking indicators and fear of return, screened and informed of a voluntary
    return; no step of the route recorded yet."""
    case = interviewed_case(
        case_ref=case_ref,
        node=node,
        authority=authority,
        asked_at=asked_at,
        with_children=False,
        fear_of_return=True,
        screening="voluntary_return_informed",
        age_status=age_status,
        language="mam",
        interpreter=True,
        trafficking_indicators=True,
        nationality=origin,
    )
    case["interview"]["identification_indicators"] += ["appears_controlled_by_companion"]
    return case


def identification_step(
    identified_as: Sequence[str] = ("presumed_trafficking_victim",),
    indicators: Sequence[str] = ROUTE_INDICATORS,
) -> dict[str, Any]:
    """Step 1: identified as what, on which indicators of the standardized interview."""
    return {"identified_as": list(identified_as), "indicators": list(indicators)}


def primary_assistance_step(
    services: Sequence[str] = ("food", "medical_care", "psychological_care", "shelter"),
) -> dict[str, Any]:
    """Step 2: the primary assistance given."""
    return {"services": list(services)}


def risk_assessment_step(
    *,
    country: str = "GT",
    danger_from: Sequence[str] = ("traffickers_or_exploiters",),
    level: str = "high",
    protection_need: str = "protection_on_return",
) -> dict[str, Any]:
    """Step 3: the risk of return to ``country``, with danger from these kinds of persons."""
    return {
        "country": country,
        "level": level,
        "danger_from": list(danger_from),
        "family_and_support": {"family": "supportive", "support_network": "limited"},
        "protection_need": protection_need,
        "measures_on_return": ["safe_shelter", "accompaniment_on_arrival", "psychosocial_care"],
    }


def durable_solution_step(
    *,
    solution: str = "return",
    country: str = "GT",
    origin_recipients: Sequence[Mapping[str, str]] = (),
    location_released_to: Sequence[Mapping[str, str]] = (),
    best_interest_determination: Mapping[str, Any] | None = None,
    with_location: bool = True,
) -> dict[str, Any]:
    """Step 4: her informed, voluntary choice (in Mam, read aloud, with an interpreter)."""
    step: dict[str, Any] = {
        "solution": solution,
        "country": country,
        "voluntary_choice": {
            "informed": {"language": "mam", "method": "read_aloud", "interpreter": True},
            "options_explained": ["return", "refuge", "resettlement"],
            "risk_findings_explained": True,
            "could_refuse_explained": True,
        },
    }
    choice = step["voluntary_choice"]
    if origin_recipients:
        choice["origin_recipients"] = [dict(m) for m in origin_recipients]
    if location_released_to:
        choice["location_released_to"] = [dict(m) for m in location_released_to]
    if best_interest_determination is not None:
        step["best_interest_determination"] = dict(best_interest_determination)
    if with_location:
        step["location"] = {
            "residence": {"country": country, "admin_area": "Departamento de prueba"},
            "contacts": [
                {"kind": "phone", "value": "+502 0000 0000", "belongs_to": "family_member"}
            ],
        }
    return step


def consent_draft(
    *,
    case_ref: str,
    node: str,
    authority: str,
    officer: str = "officer-0001",
    purposes: Sequence[str] = ("protection_referral",),
    recipients: Sequence[Mapping[str, str]] = ({"country": "MX"},),
    categories: Sequence[str] = CATEGORIES,
    valid_until: dt.datetime,
    grantor_role: str = "self",
    best_interest_determination: str | None = None,
    share_back: bool = True,
    language: str = "es",
    interpreter: bool = False,
) -> dict[str, Any]:
    """What an officer records when she agrees (schemas/consent-draft)."""
    grantor: dict[str, Any] = {"role": grantor_role}
    if best_interest_determination is not None:
        grantor["best_interest_determination"] = best_interest_determination
    return {
        "case_ref": case_ref,
        "grantor": grantor,
        "purposes": list(purposes),
        "recipients": [dict(r) for r in recipients],
        "categories": list(categories),
        "valid_until": rfc3339(valid_until),
        "informed": {"language": language, "method": "read_aloud", "interpreter": interpreter},
        "recorded_by": {"node": node, "authority": authority, "officer": officer},
        "evidence": {
            "sha256": "5" * 64,
            "media_type": "application/pdf",
            "description": "signed consent form (synthetic)",
        },
        "share_back": share_back,
    }
