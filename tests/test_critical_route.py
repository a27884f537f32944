"""The critical route's safeguards, through the planner the preview and the send share.

* the worked example of docs/critical-route.md §6: every expected preview,
  field by field (docs/examples/critical-route/worked-example/expected-previews.json);
* S1 (return only after a risk assessment and her voluntary choice), S3 (a
  girl's route by the best-interest determination) and S2 (protection
  institutions only where danger is named; her location withheld), table-driven,
  under a consent to everything and under the life-in-danger exception;
* a property: for a case on the route, nothing goes to her country of origin
  before she chose to return there, whatever the consent says;
* the recipient's own check of what a route document shows (§7), and the stage.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from node.core.clock import parse_rfc3339
from node.intake.terms import CASE_SUMMARIES
from node.rules.consent import CATEGORIES, RecipientRef, new_consent
from node.rules.critical_route import (
    LOCATION,
    REASONS,
    RouteError,
    check_route,
    check_route_received,
    route_stage,
    route_status,
    with_step,
)
from node.rules.planning import Plan, VitalInterest, plan_disclosure
from node.rules.policy import default_policy_set
from node.rules.safeguards import SafeguardRefused
from tests.support.route import BID, NOW, broad_consent, case_at

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples" / "critical-route"
WORKED = EXAMPLES / "worked-example"
PREVIEWS: list[dict[str, Any]] = json.loads((WORKED / "expected-previews.json").read_text())[
    "previews"
]

GT_PROTECTION = RecipientRef("GT", "gt-proteccion-victimas", "protection_agency")
GT_RECEPTION = RecipientRef("GT", "gt-reception-la-aurora", "reception_centre")
GT_MIGRATION = RecipientRef("GT", "gt-migracion-demo", "migration_authority")
GT_CONSULATE = RecipientRef("GT", "gt-consulado-tapachula", "consulate")
HN_PROTECTION = RecipientRef("HN", "hn-protection", "protection_agency")
MX_COMAR = RecipientRef("MX", "mx-comar", "protection_agency")
CA_PROTECTION = RecipientRef("CA", "ca-protection-demo", "protection_agency")
PURPOSE = {
    "return_notice": "reception_on_return",
    "case_handoff": "protection_referral",
    "identification_record": "protection_referral",
    "risk_assessment_summary": "protection_referral",
    "protection_handoff": "protection_referral",
    "resettlement_referral": "protection_referral",
}
JUSTIFICATION = (
    "She is in hospital after an attack by the network that moved her and cannot be asked; "
    "the protection institution must prepare tonight."
)
RECEPTION_CHOSEN = ({"country": "GT", "authority_kind": "reception_centre"},)


def plan(
    case: dict[str, Any],
    doc_type: str,
    recipient: RecipientRef,
    *,
    purpose: str | None = None,
    consent_role: str = "self",
    vital_interest: bool = False,
    categories: tuple[str, ...] = CATEGORIES,
) -> Plan:
    return plan_disclosure(
        case=case,
        doc_type=doc_type,
        purpose=purpose
        or ("consular_assistance" if recipient.kind == "consulate" else PURPOSE[doc_type]),
        recipient=recipient,
        sender_country="MX",
        policies=default_policy_set(),
        consents=[]
        if vital_interest
        else [broad_consent(grantor_role=consent_role, categories=categories)],
        now=NOW,
        vital_interest=VitalInterest(str(uuid.uuid4()), JUSTIFICATION) if vital_interest else None,
    )


def reason(result: Plan) -> str | None:
    return result.refusal.reason if result.refusal else None


# ---- the worked example ------------------------------------------------------------------


@pytest.mark.parametrize("expected", PREVIEWS, ids=lambda p: p["scenario"][:2].strip())
def test_the_worked_example_previews_field_by_field(expected: dict[str, Any]) -> None:
    case = json.loads((WORKED / expected["case"]).read_text())
    who = "lucia" if expected["case"].startswith("lucia") else "ana"
    draft = json.loads((WORKED / f"{who}-consent-draft.json").read_text())
    consent = new_consent(
        draft, consent_id=str(uuid.uuid4()), now=parse_rfc3339(draft["valid_from"])
    )
    recipient = expected["recipient"]
    result = plan_disclosure(
        case=case,
        doc_type=expected["doc_type"],
        purpose=expected["purpose"],
        recipient=RecipientRef(recipient["node"], recipient["authority"], recipient["kind"]),
        sender_country=expected["sender"]["node"],
        policies=default_policy_set(),
        consents=[consent],
        now=parse_rfc3339(expected["now"]),
    )
    assert reason(result) == expected["refusal"]
    assert list(result.summary.sent_fields) == expected["sent"]
    assert dict(result.summary.withheld) == expected["withheld"]
    assert result.rule is not None
    assert (result.rule.policy.policy_id, result.rule.policy.version) == (
        expected["policy"]["id"],
        expected["policy"]["version"],
    )
    assert [a.agreement_id for a in result.rule.agreements] == expected["agreements"]
    if expected["refusal"] is None:
        assert result.retain_until == parse_rfc3339(expected["retain_until"])
        assert result.terms is not None
    else:
        assert result.terms is None, "nothing is sealed for a refused plan"


# ---- S1, S3, S2: table-driven -------------------------------------------------------------

CHOSEN: dict[str, Any] = {"origin_recipients": RECEPTION_CHOSEN}
NO_DANGER: dict[str, Any] = {"danger_from": ()}
REFUGE: dict[str, Any] = {"solution": "refuge", "country": "MX"}
RESETTLEMENT: dict[str, Any] = {"solution": "resettlement", "country": "CA"}
CHOSE_MIGRATION: dict[str, Any] = {
    "origin_recipients": ({"country": "GT", "authority": "gt-migracion-demo"},)
}
NO_ASSESSMENT = "risk_assessment_missing"
NO_CHOICE = "voluntary_return_choice_missing"
NOT_PROTECTION = "origin_recipient_not_protection"
ELSEWHERE = "solution_destination_mismatch"
NOT_RESETTLEMENT = "resettlement_not_chosen"
CHOSEN_STAGE = "solution_chosen"

S1_S2_TABLE: list[tuple[str, str, dict[str, Any], str, RecipientRef, str | None]] = [
    # (why, stage, case options, document, recipient, refusal)
    ("no assessment", "identified", {}, "protection_handoff", GT_PROTECTION, NO_ASSESSMENT),
    ("no assessment", "assisted", {}, "return_notice", GT_RECEPTION, NO_ASSESSMENT),
    ("no assessment", "assisted", {}, "case_handoff", GT_PROTECTION, NO_ASSESSMENT),
    ("no assessment", "assisted", {}, "identification_record", GT_PROTECTION, NO_ASSESSMENT),
    ("no choice", "risk_assessed", {}, "protection_handoff", GT_PROTECTION, NO_CHOICE),
    ("no choice", "risk_assessed", {}, "return_notice", GT_RECEPTION, NO_CHOICE),
    ("no choice", "risk_assessed", {}, "risk_assessment_summary", GT_PROTECTION, NO_CHOICE),
    ("no choice", "risk_assessed", {}, "case_handoff", GT_PROTECTION, NO_CHOICE),
    ("both", "solution_chosen", CHOSEN, "protection_handoff", GT_PROTECTION, None),
    ("both", "solution_chosen", CHOSEN, "return_notice", GT_RECEPTION, None),
    ("both", "solution_chosen", CHOSEN, "risk_assessment_summary", GT_PROTECTION, None),
    ("both", "solution_chosen", CHOSEN, "identification_record", GT_PROTECTION, None),
    ("both", "solution_chosen", CHOSEN, "case_handoff", GT_PROTECTION, None),
    ("away from her country", "assisted", {}, "case_handoff", MX_COMAR, None),
    ("refuge", "solution_chosen", REFUGE, "protection_handoff", GT_PROTECTION, "return_not_chosen"),
    ("refuge", "solution_chosen", REFUGE, "case_handoff", GT_CONSULATE, "return_not_chosen"),
    ("elsewhere", CHOSEN_STAGE, CHOSEN, "protection_handoff", HN_PROTECTION, ELSEWHERE),
    ("return", CHOSEN_STAGE, CHOSEN, "resettlement_referral", CA_PROTECTION, NOT_RESETTLEMENT),
    ("resettlement", "solution_chosen", RESETTLEMENT, "resettlement_referral", CA_PROTECTION, None),
    # S2: danger from persons in GT
    ("danger", "solution_chosen", CHOSEN, "identification_record", GT_MIGRATION, NOT_PROTECTION),
    ("danger", "solution_chosen", CHOSEN, "case_handoff", GT_CONSULATE, NOT_PROTECTION),
    ("danger, not chosen", "solution_chosen", {}, "return_notice", GT_RECEPTION, NOT_PROTECTION),
    ("no danger", "solution_chosen", NO_DANGER, "identification_record", GT_MIGRATION, None),
    ("no danger", "solution_chosen", NO_DANGER, "return_notice", GT_RECEPTION, None),
    ("she chose it", CHOSEN_STAGE, CHOSE_MIGRATION, "identification_record", GT_MIGRATION, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("why", "stage", "options", "doc_type", "recipient", "refusal"),
    S1_S2_TABLE,
    ids=[f"{row[3]}-{row[0]}" for row in S1_S2_TABLE],
)
@pytest.mark.parametrize("basis", ["consent", "vital_interest"])
def test_route_safeguards_under_any_consent_and_the_life_in_danger_exception(
    why: str,
    stage: str,
    options: dict[str, Any],
    doc_type: str,
    recipient: RecipientRef,
    refusal: str | None,
    basis: str,
) -> None:
    case = case_at(stage, **options)
    result = plan(case, doc_type, recipient, vital_interest=basis == "vital_interest")
    assert reason(result) == refusal, why
    if refusal is not None:
        assert REASONS[refusal] in ("S1", "S2")
        assert result.terms is None


def test_a_woman_with_no_country_of_origin_on_record_is_held_back() -> None:
    case = case_at("assisted")
    del case["person"]["nationality"]
    assert reason(plan(case, "identification_record", MX_COMAR)) == "origin_country_unknown"
    # A return notice names its own destination: S1 answers it by the route's steps.
    assert reason(plan(case, "return_notice", GT_RECEPTION)) == "risk_assessment_missing"


def test_identified_as_a_presumed_victim_counts_as_trafficking_indicators() -> None:
    case = case_at("assisted", trafficking_flag=False)
    assert reason(plan(case, "return_notice", GT_RECEPTION)) == "risk_assessment_missing"
    survivor = case_at(
        "assisted", trafficking_flag=False, identified_as=("gender_based_violence_survivor",)
    )
    # Not trafficking: S1 is scoped to trafficking indicators (docs/critical-route.md §11.1) ...
    assert reason(plan(survivor, "return_notice", GT_RECEPTION)) is None
    # ... but a protection handoff always needs the assessment and her choice.
    assert reason(plan(survivor, "protection_handoff", GT_PROTECTION)) == "risk_assessment_missing"


@pytest.mark.parametrize("kind", ["police", "prosecutor", "migration_authority", "consulate"])
def test_in_the_danger_country_only_protection_institutions_unless_she_chose(kind: str) -> None:
    """Police and prosecutors are no recipient kind (no policy can name them); were one added,
    the rule already excludes it."""
    case = case_at("solution_chosen", origin_recipients=RECEPTION_CHOSEN)
    recipient = RecipientRef("GT", "gt-some-authority", kind)
    with pytest.raises(SafeguardRefused) as refused:
        check_route(case, doc_type="case_handoff", recipient=recipient, today=NOW.date())
    assert refused.value.reason == "origin_recipient_not_protection"
    # The same authority elsewhere, or a protection institution there, is not refused.
    check_route(
        case, doc_type="case_handoff", recipient=RecipientRef("MX", "x", kind), today=NOW.date()
    )
    check_route(case, doc_type="case_handoff", recipient=GT_PROTECTION, today=NOW.date())


GIRL_TABLE: list[tuple[str, dict[str, Any], str | None]] = [
    ("no determination", {}, "best_interest_determination_missing"),
    (
        "recommends refuge, she chose return",
        {"best_interest_determination": {**BID, "recommended_solution": "refuge"}},
        "durable_solution_not_in_best_interest",
    ),
    ("recommends return, she chose return", {"best_interest_determination": BID}, None),
]


@pytest.mark.parametrize(("why", "options", "refusal"), GIRL_TABLE, ids=[r[0] for r in GIRL_TABLE])
@pytest.mark.parametrize(
    ("doc_type", "recipient"),
    [("protection_handoff", GT_PROTECTION), ("return_notice", GT_RECEPTION)],
)
def test_a_girls_route_follows_the_best_interest_determination(
    why: str, options: dict[str, Any], refusal: str | None, doc_type: str, recipient: RecipientRef
) -> None:
    case = case_at(
        "solution_chosen", age_status="minor", origin_recipients=RECEPTION_CHOSEN, **options
    )
    result = plan(case, doc_type, recipient, consent_role="guardian")
    assert reason(result) == refusal, why
    # Her own consent never stands in for her guardian's (the existing safeguard answers first).
    assert reason(plan(case, doc_type, recipient)) == "minor_needs_guardian_consent"
    # Before the assessment, S1 answers first.
    early = case_at("assisted", age_status="minor")
    assert reason(plan(early, doc_type, recipient, consent_role="guardian")) == (
        "risk_assessment_missing"
    )


# ---- S2: her location -----------------------------------------------------------------------


def location_fields(result: Plan) -> dict[str, str]:
    return {p: r for p, r in result.summary.withheld.items() if p.startswith(LOCATION)}


@pytest.mark.parametrize("basis", ["consent", "vital_interest"])
def test_her_location_is_withheld_where_danger_is_named(basis: str) -> None:
    case = case_at("solution_chosen", origin_recipients=RECEPTION_CHOSEN)
    result = plan(
        case, "protection_handoff", GT_PROTECTION, vital_interest=basis == "vital_interest"
    )
    assert result.ok, result.refusal
    withheld = location_fields(result)
    assert set(withheld.values()) == {"withheld_for_safety"}
    assert len(withheld) == 5  # residence country and area, contact kind, value, whose
    assert "location" not in result.summary.document["critical_route"]["durable_solution"]
    assert not any(p.startswith(LOCATION) for p in result.summary.sent_fields)
    # The terms do not list what stayed home; the document is what the recipient checks.
    assert result.terms is not None


def test_only_her_explicit_release_lets_her_location_go() -> None:
    released = case_at(
        "solution_chosen",
        origin_recipients=RECEPTION_CHOSEN,
        location_released_to=({"country": "GT", "authority": "gt-proteccion-victimas"},),
    )
    result = plan(released, "protection_handoff", GT_PROTECTION)
    assert result.ok and not location_fields(result)
    assert "location" in result.summary.document["critical_route"]["durable_solution"]
    other = RecipientRef("GT", "gt-proteccion-norte", "protection_agency")
    assert set(location_fields(plan(released, "protection_handoff", other)).values()) == {
        "withheld_for_safety"
    }
    # Without danger named, her consent to the location category is what decides.
    safe = case_at("solution_chosen", danger_from=())
    assert not location_fields(plan(safe, "protection_handoff", GT_PROTECTION))
    no_location = tuple(c for c in CATEGORIES if c != "location")
    withheld = location_fields(
        plan(safe, "protection_handoff", GT_PROTECTION, categories=no_location)
    )
    assert set(withheld.values()) == {"category_not_consented"}
    # A field withheld for another reason keeps it.
    danger = case_at("solution_chosen")
    withheld = location_fields(
        plan(danger, "protection_handoff", GT_PROTECTION, categories=no_location)
    )
    assert set(withheld.values()) == {"category_not_consented"}


# ---- the property ---------------------------------------------------------------------------

ORIGIN_KINDS = ("consulate", "reception_centre", "migration_authority", "protection_agency")


@st.composite
def cases_before_her_choice(draw: st.DrawFn) -> dict[str, Any]:
    """A case on the route (trafficking indicators) whose choice of return there is not made."""
    stage = draw(
        st.sampled_from(("none", "identified", "assisted", "risk_assessed", "solution_chosen"))
    )
    by_flag = stage == "none" or draw(st.booleans())
    options: dict[str, Any] = {
        "trafficking_flag": by_flag,
        "age_status": draw(st.sampled_from(("adult", "adult", "minor", "age_in_doubt"))),
        "danger_from": draw(
            st.sampled_from(((), ("traffickers_or_exploiters",), ("aggressor", "community")))
        ),
        "origin_recipients": draw(st.sampled_from(((), RECEPTION_CHOSEN, ({"country": "GT"},)))),
    }
    if stage == "solution_chosen":
        # Chosen, but not a return to GT: refuge where she is, or resettlement elsewhere.
        options["solution"], options["country"] = draw(
            st.sampled_from((("refuge", "MX"), ("resettlement", "CA")))
        )
        if draw(st.booleans()):
            options["best_interest_determination"] = {
                **BID,
                "recommended_solution": options["solution"],
            }
    return case_at(stage, **options)


# Every (document, purpose, recipient kind) some shipped policy has a rule for, and one
# that none has: the safeguards must hold whatever the policies let through.
ROUTES_IN_POLICY = sorted(
    (policy.doc_type, rule.purpose, kind)
    for policy in default_policy_set().policies.values()
    for rule in policy.rules
    for kind in rule.recipient_kinds
    if rule.purpose != "case_continuity"
)


@settings(max_examples=300, deadline=None)
@given(
    case=cases_before_her_choice(),
    route=st.one_of(
        st.sampled_from(ROUTES_IN_POLICY),
        st.tuples(
            st.sampled_from(sorted(CASE_SUMMARIES)),
            st.sampled_from(("reception_on_return", "protection_referral", "consular_assistance")),
            st.sampled_from(ORIGIN_KINDS),
        ),
    ),
    categories=st.one_of(
        st.just(list(CATEGORIES)),
        st.lists(st.sampled_from(CATEGORIES), min_size=1, unique=True),
    ),
    consent_role=st.sampled_from(("self", "guardian", "guardian")),
    vital_interest=st.booleans(),
)
def test_nothing_goes_to_her_country_before_she_chose_to_return_there(
    case: dict[str, Any],
    route: tuple[str, str, str],
    categories: list[str],
    consent_role: str,
    vital_interest: bool,
) -> None:
    doc_type, purpose, kind = route
    # Her consent names every GT recipient, for every purpose, or the exception is invoked.
    result = plan(
        case,
        doc_type,
        RecipientRef("GT", f"gt-{kind.replace('_', '-')}", kind),
        purpose=purpose,
        consent_role=consent_role,
        vital_interest=vital_interest,
        categories=tuple(categories),
    )
    assert not result.ok
    assert result.terms is None
    assert result.refusal is not None
    event(result.refusal.reason)


# ---- at the recipient -------------------------------------------------------------------------


def example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / "valid" / name).read_text())
    return document


def with_location(document: dict[str, Any]) -> dict[str, Any]:
    located = copy.deepcopy(document)
    located["critical_route"]["durable_solution"]["location"] = {"residence": {"country": "GT"}}
    return located


HANDOFF = example("protection_handoff.json")
RELEASED = example("protection_handoff-location-released.json")
REFERRAL = example("resettlement_referral-to-protection-agency.json")
GT_PROTECTION_NORTH = RecipientRef("GT", "gt-proteccion-norte", "protection_agency")
US_PROTECTION = RecipientRef("US", "us-protection", "protection_agency")
NOT_RELEASED = "location_not_released"
MISMATCH = "solution_destination_mismatch"

RECEIVED_TABLE: list[tuple[str, str, dict[str, Any], RecipientRef, str | None]] = [
    ("as sent", "protection_handoff", HANDOFF, GT_PROTECTION, None),
    ("not released", "protection_handoff", with_location(HANDOFF), GT_PROTECTION, NOT_RELEASED),
    ("released to us", "protection_handoff", RELEASED, GT_PROTECTION, None),
    ("released to another", "protection_handoff", RELEASED, GT_PROTECTION_NORTH, NOT_RELEASED),
    ("migration there", "protection_handoff", HANDOFF, GT_MIGRATION, NOT_PROTECTION),
    ("the reception she chose", "protection_handoff", HANDOFF, GT_RECEPTION, None),
    ("her return is not here", "protection_handoff", HANDOFF, HN_PROTECTION, MISMATCH),
    ("a resettlement here", "resettlement_referral", REFERRAL, CA_PROTECTION, None),
    ("a resettlement elsewhere", "resettlement_referral", REFERRAL, US_PROTECTION, MISMATCH),
    ("no route in it", "case_handoff", {"case_ref": "X-1"}, GT_MIGRATION, None),
]


@pytest.mark.parametrize(
    ("why", "doc_type", "document", "own", "refusal"),
    RECEIVED_TABLE,
    ids=[row[0] for row in RECEIVED_TABLE],
)
def test_the_recipient_checks_what_a_route_document_shows(
    why: str, doc_type: str, document: dict[str, Any], own: RecipientRef, refusal: str | None
) -> None:
    if refusal is None:
        check_route_received(document, doc_type=doc_type, own=own)
        return
    with pytest.raises(SafeguardRefused) as refused:
        check_route_received(document, doc_type=doc_type, own=own)
    assert refused.value.reason == refusal, why


# ---- the route as the case's state --------------------------------------------------------


STEPS = ("identification", "primary_assistance", "risk_assessment", "durable_solution")
GIRL = {"age_status": "minor"}
DETERMINED = {"age_status": "minor", "best_interest_determination": BID}


@pytest.mark.parametrize(
    ("stage", "options", "expected", "missing"),
    [
        ("none", {}, "none", STEPS),
        ("identified", {}, "identified", STEPS[1:]),
        ("assisted", {}, "assisted", STEPS[2:]),
        ("risk_assessed", {}, "risk_assessed", STEPS[3:]),
        ("solution_chosen", {}, "solution_chosen", ("handoff",)),
        ("solution_chosen", REFUGE, "solution_chosen", ()),
        ("solution_chosen", GIRL, "risk_assessed", ("best_interest_determination",)),
        ("solution_chosen", DETERMINED, "solution_chosen", ("handoff",)),
    ],
)
def test_the_stage_and_what_is_missing(
    stage: str, options: dict[str, Any], expected: str, missing: tuple[str, ...]
) -> None:
    case = case_at(stage, **options)
    status = route_status(case, today=NOW.date())
    assert route_stage(case, today=NOW.date()) == status.stage == expected
    assert status.missing == missing


def test_handed_off_once_the_handoff_to_her_destination_has_its_receipt() -> None:
    case = case_at("solution_chosen", origin_recipients=RECEPTION_CHOSEN)
    handoff = {
        "doc_type": "protection_handoff",
        "country": "GT",
        "authority": "gt-proteccion-victimas",
        "message_id": str(uuid.uuid4()),
        "sent_at": "2026-11-26T16:00:00Z",
    }
    case["critical_route"]["handoffs"] = [handoff]
    assert route_stage(case, today=NOW.date()) == "solution_chosen"
    handoff["receipt_at"] = "2026-11-26T16:00:02Z"
    assert route_stage(case, today=NOW.date()) == "handed_off"
    status = route_status(case, today=NOW.date())
    (gt,) = status.countries
    assert gt.as_json() | {"origin_recipients": [], "location_released_to": []} == {
        "country": "GT",
        "danger_named": True,
        "protection_institutions_only": True,
        "location_withheld": True,
        "handoff_refused": None,
        "origin_recipients": [],
        "location_released_to": [],
    }


def test_the_safeguards_by_country_say_what_a_handoff_would_meet_now() -> None:
    status = route_status(case_at("risk_assessed"), today=NOW.date())
    assert [(c.country, c.handoff_refused, c.danger_named) for c in status.countries] == [
        ("GT", "voluntary_return_choice_missing", True)
    ]


def test_steps_come_in_order_and_a_new_assessment_asks_her_choice_again() -> None:
    with pytest.raises(RouteError) as refused:
        with_step({}, "risk_assessment", {"country": "GT"})
    assert refused.value.reason == "route_out_of_order"
    route = case_at("solution_chosen")["critical_route"]
    with pytest.raises(RouteError) as refused:
        with_step(route, "durable_solution", {"solution": "return", "country": "HN"})
    assert refused.value.reason == "return_country_not_assessed"
    updated, superseded = with_step(route, "risk_assessment", route["risk_assessment"])
    assert superseded == ("durable_solution",)
    assert "durable_solution" not in updated
    assert "durable_solution" in route, "the old route is left as it was"


def test_every_reason_code_is_listed_once() -> None:
    documented = (Path(__file__).resolve().parents[1] / "docs" / "critical-route.md").read_text()
    for code in REASONS:
        assert f"`{code}`" in documented, code
