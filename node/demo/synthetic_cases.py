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
) -> dict[str, Any]:
    """A schema-valid case after a first standardized interview."""
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
            "nationality": node,
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
        "priority_flags": ["emotional_distress", "trafficking_indicators"],
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
    return case


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
