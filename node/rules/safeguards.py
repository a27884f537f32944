"""Safeguards that no policy or consent can override. Pure functions.

``non_refoulement_screening_missing``
    A return notice for a woman who fears return or persecution needs a
    recorded international-protection screening outcome.
``non_refoulement_protection_needs``
    ... and that outcome must not be that she needs protection or that her
    claim is pending (unless she was informed and chose to return).
``minor_needs_guardian_consent``
    A girl's case (doubt about age counts: presumption of minority) rests on
    the consent of a guardian or legal representative, or on a documented
    best-interest determination.
``family_unity_children_missing``
    A mother's return notice lists the children returning with her.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from node.core.errors import PuenteError

FEAR_INDICATORS = frozenset({"fear_of_return", "persecution"})
RETURN_BLOCKING_OUTCOMES = frozenset({"protection_needs_identified", "claim_pending"})
CHILD_FLAGS = frozenset({"alone_with_children"})


class SafeguardRefused(PuenteError):
    """A safeguard forbids this disclosure. ``reason`` names the safeguard."""

    reason = "safeguard"
    http_status = 422


def _age_on(date_of_birth: str, today: dt.date) -> int | None:
    try:
        born = dt.date.fromisoformat(date_of_birth)
    except ValueError:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def is_minor(case: Mapping[str, Any], today: dt.date) -> bool:
    """A girl, or someone whose age is in doubt (presumption of minority)."""
    person = case.get("person", {})
    if person.get("age_status") in ("minor", "age_in_doubt"):
        return True
    if {"minor", "age_in_doubt"} & set(case.get("priority_flags", [])):
        return True
    age = person.get("age_estimate")
    if isinstance(age, int) and age < 18:
        return True
    born = person.get("date_of_birth")
    if isinstance(born, str):
        years = _age_on(born, today)
        # An unreadable date of birth is doubt about age too.
        return years is None or years < 18
    return False


def fears_return(case: Mapping[str, Any]) -> bool:
    """Fear of return or persecution is recorded in the interview."""
    interview = case.get("interview", {})
    return bool(
        FEAR_INDICATORS & set(interview.get("identification_indicators", []))
        or interview.get("persecution_grounds")
    )


def check_non_refoulement(case: Mapping[str, Any], doc_type: str) -> None:
    if doc_type != "return_notice" or not fears_return(case):
        return
    screening = case.get("protection", {}).get("screening")
    if screening is None:
        raise SafeguardRefused(
            "non_refoulement_screening_missing",
            "she fears return or persecution and no international-protection screening is recorded",
        )
    if screening["outcome"] in RETURN_BLOCKING_OUTCOMES:
        raise SafeguardRefused(
            "non_refoulement_protection_needs",
            f"the protection screening outcome is {screening['outcome']}",
        )


def check_minor_consent(
    case: Mapping[str, Any], *, decides_for_minor: bool | None, today: dt.date
) -> None:
    """``decides_for_minor`` is None when no consent is involved (life-in-danger exception)."""
    if decides_for_minor is None or not is_minor(case, today):
        return
    if not decides_for_minor:
        raise SafeguardRefused(
            "minor_needs_guardian_consent",
            "she is (or may be) a minor: a guardian's or legal representative's consent or a "
            "best-interest determination is needed",
        )


def check_family_unity(case: Mapping[str, Any], document: Mapping[str, Any], doc_type: str) -> None:
    if doc_type != "return_notice":
        return
    children = case.get("accompanying_children") or []
    says_with_children = bool(
        CHILD_FLAGS & set(case.get("priority_flags", []))
        or "alone_with_children" in case.get("interview", {}).get("vulnerability_conditions", [])
    )
    if says_with_children and not children:
        raise SafeguardRefused(
            "family_unity_children_missing",
            "she travels with children but the case lists none",
        )
    sent = document.get("accompanying_children") or []
    if len(sent) != len(children):
        raise SafeguardRefused(
            "family_unity_children_missing",
            f"{len(children)} accompanying child(ren) in the case, {len(sent)} in the notice",
        )


def check_all(
    case: Mapping[str, Any],
    document: Mapping[str, Any],
    *,
    doc_type: str,
    decides_for_minor: bool | None,
    today: dt.date,
) -> None:
    """Raise the first :class:`SafeguardRefused` that applies, or return."""
    check_non_refoulement(case, doc_type)
    check_minor_consent(case, decides_for_minor=decides_for_minor, today=today)
    check_family_unity(case, document, doc_type)
