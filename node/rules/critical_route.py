"""The regional critical route as a case's state, and the safeguards it adds. Pure.

A survivor of trafficking or violence is identified, receives primary
assistance, is assessed for the risk of returning, chooses a durable solution
(return, refuge, resettlement) by her informed, voluntary choice, and is
handed to the institutions of its destination (docs/critical-route.md). The
route lives on the case (member ``critical_route``, schemas/critical-route);
this module reads it and answers, without I/O or a clock:

* :func:`route_stage` and :func:`route_status` — where she is on the route,
  what is missing, and which safeguard applies to which country now;
* :func:`check_route` — the safeguards no policy or consent overrides (S1
  return only after a risk assessment and her choice, S3 a girl's route by
  the best-interest determination, S2 protection institutions only in the
  country where danger is named), in that order, raising
  :class:`~node.rules.safeguards.SafeguardRefused` with a reason code;
* :func:`route_withheld` — the fields withheld for her safety (S2);
* :func:`check_route_received` — the recipient's re-check of what a route
  document itself shows (docs/critical-route.md §7).

Every reason code and data category the route adds is listed here once
(:data:`REASONS`, :data:`CATEGORIES`), for the interfaces that put them in words.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from node.core.errors import PuenteError
from node.rules.consent import RecipientMatcher, RecipientRef
from node.rules.safeguards import SafeguardRefused, is_minor

# The four documents of the route (schemas/<doc_type>, policies/<doc_type>.json).
ROUTE_DOCUMENTS = frozenset(
    {
        "identification_record",
        "risk_assessment_summary",
        "protection_handoff",
        "resettlement_referral",
    }
)
# The steps recorded on a case, in route order (member of ``critical_route`` each).
STEPS = ("identification", "primary_assistance", "risk_assessment", "durable_solution")
# The member of each step that says when it happened.
STEP_TIME = {
    "identification": "identified_at",
    "primary_assistance": "given_at",
    "risk_assessment": "assessed_at",
    "durable_solution": "chosen_at",
}
# The step each step needs recorded before it (the case schema enforces the same order).
STEP_NEEDS = {
    "primary_assistance": "identification",
    "risk_assessment": "identification",
    "durable_solution": "risk_assessment",
}
# Where a case is on the route (derived from it, never stored).
STAGES = ("none", "identified", "assisted", "risk_assessed", "solution_chosen", "handed_off")

PROTECTION_INSTITUTION = "protection_agency"
TRAFFICKING_FLAG = "trafficking_indicators"
PRESUMED_TRAFFICKING_VICTIM = "presumed_trafficking_victim"
# The fields withheld by default from every recipient in the danger country (S2).
LOCATION = "critical_route.durable_solution.location"
WITHHELD_FOR_SAFETY = "withheld_for_safety"
# Summaries that S1 guards when they go towards one of her origin countries.
SUMMARIES_TOWARDS_ORIGIN = frozenset(
    {"case_handoff", "identification_record", "risk_assessment_summary"}
)
# Documents a girl's route always guards (S3), beyond what S1 covers.
BEST_INTEREST_DOCUMENTS = frozenset(
    {"return_notice", "protection_handoff", "resettlement_referral"}
)

# Every reason code the route adds -> the safeguard giving it (docs/critical-route.md §5).
REASONS: Mapping[str, str] = {
    "origin_country_unknown": "S1",
    "risk_assessment_missing": "S1",
    "voluntary_return_choice_missing": "S1",
    "return_not_chosen": "S1",
    "resettlement_not_chosen": "S1",
    "solution_destination_mismatch": "S1",
    "best_interest_determination_missing": "S3",
    "durable_solution_not_in_best_interest": "S3",
    "origin_recipient_not_protection": "S2",
    WITHHELD_FOR_SAFETY: "S2",  # a withheld field's reason, not a refusal
    "location_not_released": "S2",  # refused at the recipient
    # Recording the route's steps (node.casework.route).
    "route_out_of_order": "route",
    "return_country_not_assessed": "route",
}
# The consent categories the route adds (schemas/consent; the others keep their meaning).
CATEGORIES = ("route_identification", "durable_solution", "location")


class RouteError(PuenteError):
    """A step of the route cannot be recorded as given. ``reason`` says why."""

    reason = "route_invalid"
    http_status = 422


def route_of(case: Mapping[str, Any]) -> Mapping[str, Any]:
    """The case's ``critical_route`` member, or an empty mapping."""
    route = case.get("critical_route")
    return route if isinstance(route, Mapping) else {}


def has_trafficking_indicators(case: Mapping[str, Any]) -> bool:
    """The priority flag, or an identification as a presumed trafficking victim."""
    identification = route_of(case).get("identification") or {}
    return TRAFFICKING_FLAG in (case.get("priority_flags") or ()) or (
        PRESUMED_TRAFFICKING_VICTIM in (identification.get("identified_as") or ())
    )


def origin_countries(case: Mapping[str, Any]) -> frozenset[str]:
    """Her country of origin, her nationality and the country assessed, those recorded."""
    route = route_of(case)
    candidates = (
        route.get("country_of_origin"),
        (case.get("person") or {}).get("nationality"),
        (route.get("risk_assessment") or {}).get("country"),
    )
    return frozenset(c for c in candidates if isinstance(c, str))


def danger_country(case: Mapping[str, Any]) -> str | None:
    """The country assessed when the risk assessment names danger from persons there."""
    assessment = route_of(case).get("risk_assessment") or {}
    return str(assessment["country"]) if assessment.get("danger_from") else None


def _choice(case: Mapping[str, Any]) -> Mapping[str, Any]:
    return (route_of(case).get("durable_solution") or {}).get("voluntary_choice") or {}


def _chosen(matchers: Iterable[Mapping[str, Any]], recipient: RecipientRef) -> bool:
    return any(RecipientMatcher.from_json(m).matches(recipient) for m in matchers)


def on_route_as_girl(case: Mapping[str, Any], today: dt.date) -> bool:
    """A girl (doubt about age counts) with an identification recorded or trafficking indicators."""
    return is_minor(case, today) and (
        "identification" in route_of(case) or has_trafficking_indicators(case)
    )


def _s1_applies(case: Mapping[str, Any], doc_type: str, recipient: RecipientRef) -> bool:
    if doc_type == "protection_handoff":
        return True
    if not has_trafficking_indicators(case):
        return False
    if doc_type == "return_notice":
        return True
    origins = origin_countries(case)
    # Without an origin country the node cannot tell whether the recipient is hers.
    return doc_type in SUMMARIES_TOWARDS_ORIGIN and (not origins or recipient.node in origins)


def _check_return(case: Mapping[str, Any], doc_type: str, recipient: RecipientRef) -> None:
    """S1: towards her country only after the risk assessment and her choice of return there."""
    route = route_of(case)
    unknown = has_trafficking_indicators(case) and not origin_countries(case)
    if unknown and doc_type != "return_notice":
        raise SafeguardRefused(
            "origin_country_unknown",
            "trafficking indicators are recorded and no country of origin: record "
            "critical_route.country_of_origin or her nationality",
        )
    if "risk_assessment" not in route:
        raise SafeguardRefused(
            "risk_assessment_missing",
            "no risk assessment of her return is recorded on the critical route",
        )
    solution = route.get("durable_solution")
    if solution is None:
        raise SafeguardRefused(
            "voluntary_return_choice_missing",
            "her informed, voluntary choice of a durable solution is not recorded",
        )
    if solution["solution"] != "return":
        raise SafeguardRefused("return_not_chosen", f"she chose {solution['solution']}, not return")
    if recipient.node != solution["country"]:
        raise SafeguardRefused(
            "solution_destination_mismatch",
            f"she chose return to {solution['country']}, not to {recipient.node}",
        )


def _check_resettlement(case: Mapping[str, Any], recipient: RecipientRef) -> None:
    """S1 for a resettlement referral: only where she chose resettlement."""
    solution = route_of(case).get("durable_solution")
    if solution is None or solution["solution"] != "resettlement":
        raise SafeguardRefused(
            "resettlement_not_chosen", "no durable solution of resettlement is recorded"
        )
    if recipient.node != solution["country"]:
        raise SafeguardRefused(
            "solution_destination_mismatch",
            f"she chose resettlement to {solution['country']}, not to {recipient.node}",
        )


def _check_best_interest(case: Mapping[str, Any]) -> None:
    """S3: a girl's durable solution is the one her best-interest determination recommends."""
    solution = route_of(case).get("durable_solution") or {}
    determination = solution.get("best_interest_determination")
    if determination is None:
        raise SafeguardRefused(
            "best_interest_determination_missing",
            "she is (or may be) a minor: the durable solution needs a documented "
            "best-interest determination",
        )
    if solution["solution"] != determination["recommended_solution"]:
        raise SafeguardRefused(
            "durable_solution_not_in_best_interest",
            f"the best-interest determination recommends {determination['recommended_solution']}, "
            f"the durable solution is {solution['solution']}",
        )


def _check_danger_country(case: Mapping[str, Any], recipient: RecipientRef) -> None:
    """S2: where danger from persons is named, protection institutions only, unless she chose."""
    if recipient.node != danger_country(case) or recipient.kind == PROTECTION_INSTITUTION:
        return
    if not _chosen(_choice(case).get("origin_recipients") or (), recipient):
        raise SafeguardRefused(
            "origin_recipient_not_protection",
            f"the risk assessment names danger from persons in {recipient.node}: only its "
            f"protection institutions receive her case there, unless she chose this recipient",
        )


def check_route(
    case: Mapping[str, Any], *, doc_type: str, recipient: RecipientRef, today: dt.date
) -> None:
    """Raise the first route safeguard that refuses this disclosure (S1, then S3, then S2).

    ``case`` is the whole case (not the summary), ``recipient`` as the
    directory names it, ``today`` for the presumption of minority. Applies
    under consent and under the life-in-danger exception alike.
    """
    s1 = _s1_applies(case, doc_type, recipient)
    if doc_type == "resettlement_referral":
        _check_resettlement(case, recipient)
    elif s1:
        _check_return(case, doc_type, recipient)
    if on_route_as_girl(case, today) and (s1 or doc_type in BEST_INTEREST_DOCUMENTS):
        _check_best_interest(case)
    _check_danger_country(case, recipient)


def route_withheld(case: Mapping[str, Any], *, recipient: RecipientRef) -> tuple[str, ...]:
    """Field patterns withheld for her safety from ``recipient`` (S2); () when none.

    Her location stays home from every recipient in the country where danger
    is named unless she released it to that recipient — her consent to the
    ``location`` category alone does not release it.
    """
    if recipient.node != danger_country(case):
        return ()
    if _chosen(_choice(case).get("location_released_to") or (), recipient):
        return ()
    return (LOCATION,)


def check_route_received(document: Mapping[str, Any], *, doc_type: str, own: RecipientRef) -> None:
    """The recipient's check of what a document itself shows (docs/critical-route.md §7).

    ``own`` is this node and the receiving authority with its kind. Raises
    :class:`SafeguardRefused`: ``origin_recipient_not_protection``,
    ``location_not_released``, ``solution_destination_mismatch``.
    """
    route = route_of(document)
    solution = route.get("durable_solution") or {}
    if danger_country(document) == own.node:
        _check_danger_country(document, own)
        released = _choice(document).get("location_released_to") or ()
        if "location" in solution and not _chosen(released, own):
            raise SafeguardRefused(
                "location_not_released",
                f"her location is withheld from recipients in {own.node}, where danger is "
                f"named, unless she released it to them",
            )
    to_destination = doc_type in ("protection_handoff", "resettlement_referral")
    if to_destination and solution.get("country") != own.node:
        raise SafeguardRefused(
            "solution_destination_mismatch",
            f"her durable solution is not in {own.node}",
        )


def with_step(
    route: Mapping[str, Any],
    step: str,
    content: Mapping[str, Any],
    *,
    country_of_origin: str | None = None,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The route with ``step`` recorded (``content`` already names who and when), and
    the steps it supersedes.

    Steps come in order (``route_out_of_order``). A return is to the country
    whose risk was assessed (``return_country_not_assessed``). A new risk
    assessment supersedes her choice: a choice made without knowing the
    current findings is not an informed one, so she chooses again.
    """
    if step not in STEPS:
        raise RouteError("route_invalid", f"no step {step} on the critical route")
    needs = STEP_NEEDS.get(step)
    if needs is not None and needs not in route:
        raise RouteError("route_out_of_order", f"record the {needs} before the {step}")
    if step == "durable_solution" and content.get("solution") == "return":
        assessed = route["risk_assessment"]["country"]
        if content.get("country") != assessed:
            raise RouteError(
                "return_country_not_assessed",
                f"the risk assessment is of a return to {assessed}: a return elsewhere needs "
                f"its own risk assessment first",
            )
    updated = dict(route)
    superseded: tuple[str, ...] = ()
    if step == "risk_assessment" and "durable_solution" in updated:
        del updated["durable_solution"]
        superseded = ("durable_solution",)
    updated[step] = dict(content)
    if country_of_origin is not None:
        updated["country_of_origin"] = country_of_origin
    return updated, superseded


@dataclass(frozen=True)
class Step:
    """One step of the route as recorded: when, by which node and authority."""

    name: str
    at: str | None = None
    node: str | None = None
    authority: str | None = None

    @property
    def recorded(self) -> bool:
        return self.at is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "recorded": self.recorded,
            "at": self.at,
            "node": self.node,
            "authority": self.authority,
        }


@dataclass(frozen=True)
class CountrySafeguards:
    """What the route's safeguards say about one of her origin countries now."""

    country: str
    danger_named: bool
    # What a protection handoff to this country's protection institution is refused with now.
    handoff_refused: str | None
    origin_recipients: tuple[Mapping[str, Any], ...] = ()
    location_released_to: tuple[Mapping[str, Any], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "country": self.country,
            "danger_named": self.danger_named,
            "protection_institutions_only": self.danger_named,
            "location_withheld": self.danger_named,
            "handoff_refused": self.handoff_refused,
            "origin_recipients": [dict(m) for m in self.origin_recipients],
            "location_released_to": [dict(m) for m in self.location_released_to],
        }


@dataclass(frozen=True)
class RouteStatus:
    """The caseworker's view of the route: stage, steps, what is missing, safeguards by country."""

    stage: str
    steps: tuple[Step, ...]
    missing: tuple[str, ...]
    trafficking_indicators: bool
    girl: bool
    countries: tuple[CountrySafeguards, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "steps": [s.as_json() for s in self.steps],
            "missing": list(self.missing),
            "trafficking_indicators": self.trafficking_indicators,
            "girl": self.girl,
            "countries": [c.as_json() for c in self.countries],
        }


def route_stage(case: Mapping[str, Any], *, today: dt.date) -> str:
    """Where the case is on the route, one of :data:`STAGES`.

    ``none`` → ``identified`` → ``assisted`` → ``risk_assessed`` →
    ``solution_chosen`` → ``handed_off``. A girl's solution counts as chosen
    only with its best-interest determination; ``handed_off`` once a handoff
    to the solution's country has its receipt (``critical_route.handoffs[].receipt_at``).
    """
    route = route_of(case)
    if "identification" not in route:
        return "none"
    solution = route.get("durable_solution")
    decided = solution is not None and (
        not is_minor(case, today) or "best_interest_determination" in solution
    )
    if decided:
        assert solution is not None
        handoffs = route.get("handoffs") or ()
        if any(h.get("receipt_at") and h["country"] == solution["country"] for h in handoffs):
            return "handed_off"
        return "solution_chosen"
    if "risk_assessment" in route:
        return "risk_assessed"
    return "assisted" if "primary_assistance" in route else "identified"


def route_status(case: Mapping[str, Any], *, today: dt.date) -> RouteStatus:
    """Stage, each step's who and when, what is missing, and the safeguards per origin country."""
    route = route_of(case)
    steps = tuple(
        Step(name, route[name].get(STEP_TIME[name]), route[name]["node"], route[name]["authority"])
        if name in route
        else Step(name)
        for name in STEPS
    )
    girl = is_minor(case, today)
    trafficking = has_trafficking_indicators(case)
    solution = route.get("durable_solution") or {}
    stage = route_stage(case, today=today)
    missing = [s.name for s in steps if not s.recorded]
    if girl and "best_interest_determination" not in solution:
        missing.append("best_interest_determination")
    if stage == "solution_chosen" and solution["solution"] != "refuge":
        missing.append("handoff")  # refuge is in the present country: nothing to hand off
    choice = _choice(case)
    countries = []
    danger = danger_country(case)
    for country in sorted(origin_countries(case)):
        protection = RecipientRef(country, "", PROTECTION_INSTITUTION)
        try:
            check_route(case, doc_type="protection_handoff", recipient=protection, today=today)
            refused = None
        except SafeguardRefused as exc:
            refused = exc.reason
        countries.append(
            CountrySafeguards(
                country=country,
                danger_named=country == danger,
                handoff_refused=refused,
                origin_recipients=tuple(choice.get("origin_recipients") or ()),
                location_released_to=tuple(choice.get("location_released_to") or ()),
            )
        )
    return RouteStatus(
        stage=stage,
        steps=steps,
        # A case off the route (no step, no trafficking indicators) misses nothing.
        missing=tuple(missing) if route or trafficking else (),
        trafficking_indicators=trafficking,
        girl=girl,
        countries=tuple(countries),
    )
