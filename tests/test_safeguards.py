"""Safeguards no policy or consent overrides, and the life-in-danger exception.

Non-refoulement, presumption of minority with a guardian's consent or a
best-interest determination, family unity: each as a refusal with its reason
code, checked through the same planner the preview and the send use.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from node.casework.disclose import disclose, exceptions_for_review, preview_disclosure
from node.delivery.outbox import DisclosureRefused
from node.demo.synthetic_cases import consent_draft, interviewed_case
from node.rules.consent import ConsentRecord, RecipientRef, new_consent
from node.rules.planning import Plan, VitalInterest, plan_disclosure
from node.rules.policy import default_policy_set
from node.rules.safeguards import is_minor
from node.storage.consent_models import CaseDisclosure, ReceivedSummary
from tests.support.cases import CASE_SPECS, CONSULATE, audit_entries, events, new_case
from tests.support.nodes import DatabaseFactory, live_federation

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
RECEPTION = RecipientRef("GT", "gt-reception", "reception_centre")
COMAR = RecipientRef("MX", "mx-comar", "protection_agency")
JUSTIFICATION = (
    "She reported an imminent threat from the network that moved her; the shelter must "
    "receive her tonight and no consent can be obtained: she is unconscious in hospital."
)


def case(**options: Any) -> dict[str, Any]:
    return interviewed_case(
        case_ref="MX-TEST-000200", node="MX", authority="mx-inm", asked_at=NOW, **options
    )


def consent(**overrides: Any) -> ConsentRecord:
    draft = consent_draft(
        case_ref="MX-TEST-000200",
        node="MX",
        authority="mx-inm",
        purposes=["reception_on_return", "protection_referral"],
        recipients=[{"country": "GT"}, {"country": "MX"}],
        valid_until=NOW + dt.timedelta(days=30),
    )
    draft.update(overrides)
    return new_consent(draft, consent_id=str(uuid.uuid4()), now=NOW)


def plan(
    document: dict[str, Any],
    consents: list[ConsentRecord],
    *,
    doc_type: str = "return_notice",
    purpose: str = "reception_on_return",
    recipient: RecipientRef = RECEPTION,
    vital_interest: VitalInterest | None = None,
) -> Plan:
    return plan_disclosure(
        case=document,
        doc_type=doc_type,
        purpose=purpose,
        recipient=recipient,
        sender_country="MX",
        policies=default_policy_set(),
        consents=consents,
        now=NOW,
        vital_interest=vital_interest,
    )


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({}, None),
        ({"fear_of_return": True}, "non_refoulement_screening_missing"),
        ({"fear_of_return": True, "screening": "no_protection_needs"}, None),
        ({"fear_of_return": True, "screening": "voluntary_return_informed"}, None),
        (
            {"fear_of_return": True, "screening": "protection_needs_identified"},
            "non_refoulement_protection_needs",
        ),
        (
            {"fear_of_return": True, "screening": "claim_pending"},
            "non_refoulement_protection_needs",
        ),
    ],
)
def test_no_return_notice_for_a_woman_who_fears_return_without_screening(
    options: dict[str, Any], reason: str | None
) -> None:
    result = plan(case(**options), [consent()])
    assert (result.refusal.reason if result.refusal else None) == reason
    if reason is not None:
        assert result.terms is None, "nothing is sealed for a refused plan"


def test_non_refoulement_concerns_returns_only() -> None:
    handoff = plan(
        case(fear_of_return=True),
        [consent()],
        doc_type="case_handoff",
        purpose="protection_referral",
        recipient=COMAR,
    )
    assert handoff.ok, handoff.refusal


@pytest.mark.parametrize(
    ("person", "flags", "minor"),
    [
        ({"age_status": "adult", "date_of_birth": "1990-01-01"}, [], False),
        ({"age_status": "minor"}, [], True),
        ({"age_status": "age_in_doubt"}, [], True),
        ({"age_estimate": 16}, [], True),
        ({"age_estimate": 18}, [], False),
        ({"date_of_birth": "2009-01-01"}, [], True),
        ({"date_of_birth": "2008-11-23"}, [], False),  # eighteen today
        ({"date_of_birth": "2008-11-24"}, [], True),  # eighteen tomorrow
        ({}, ["age_in_doubt"], True),
    ],
)
def test_doubt_about_age_means_minor(person: dict[str, Any], flags: list[str], minor: bool) -> None:
    assert is_minor({"person": person, "priority_flags": flags}, NOW.date()) is minor


@pytest.mark.parametrize(
    ("grantor", "reason"),
    [
        ({"role": "self"}, "minor_needs_guardian_consent"),
        ({"role": "guardian"}, None),
        ({"role": "legal_representative"}, None),
        ({"role": "self", "best_interest_determination": "BID-MX-2026-0042"}, None),
    ],
)
@pytest.mark.parametrize("age_status", ["minor", "age_in_doubt"])
def test_a_girls_case_needs_a_guardian_or_a_best_interest_determination(
    grantor: dict[str, Any], reason: str | None, age_status: str
) -> None:
    result = plan(case(age_status=age_status), [consent(grantor=grantor)])
    assert (result.refusal.reason if result.refusal else None) == reason


def test_a_mothers_return_notice_carries_her_children() -> None:
    with_children = plan(case(), [consent()])
    assert with_children.ok
    children = with_children.summary.document["accompanying_children"]
    assert [c["given_names"] for c in children] == ["Camila", "Mateo"]

    everything_but_children = [c for c in consent().scope.categories if c != "children"]
    without = plan(case(), [consent(categories=everything_but_children)])
    assert without.refusal is not None
    assert without.refusal.reason == "family_unity_children_missing"
    assert without.summary.withheld["accompanying_children[].given_names"] == (
        "category_not_consented"
    )

    # Travelling with children per the interview, but none recorded: refused too.
    document = case(with_children=False)
    document["priority_flags"].append("alone_with_children")
    assert plan(document, [consent()]).refusal.reason == "family_unity_children_missing"  # type: ignore[union-attr]


def test_without_consent_only_the_life_in_danger_exception_discloses() -> None:
    refused = plan(case(), [])
    assert refused.refusal is not None and refused.refusal.reason == "no_consent"
    assert refused.summary.document == {} and refused.summary.sent_fields == ()
    assert set(refused.summary.withheld.values()) <= {"no_consent", "not_in_policy"}

    short = plan(case(), [], vital_interest=VitalInterest(str(uuid.uuid4()), "urgent"))
    assert short.refusal is not None and short.refusal.reason == "justification_required"

    exception = VitalInterest(str(uuid.uuid4()), JUSTIFICATION)
    allowed = plan(case(), [], vital_interest=exception)
    assert allowed.ok, allowed.refusal
    assert allowed.legal_basis == "vital_interest"
    assert allowed.terms is not None
    assert allowed.terms["exception"] == {
        "id": exception.exception_id,
        "justification_sha256": exception.justification_sha256,
        "review_required": True,
    }
    assert "consent" not in allowed.terms
    assert JUSTIFICATION not in str(allowed.terms), "the justification itself stays home"
    # The policy still limits what goes, and safeguards still hold.
    assert "interview.identification_indicators" in allowed.summary.withheld
    fear = plan(case(fear_of_return=True), [], vital_interest=exception)
    assert fear.refusal is not None
    assert fear.refusal.reason == "non_refoulement_screening_missing"


async def test_the_exception_is_flagged_for_review_on_both_sides(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        case_record, _ = await new_case(gt.ctx, "GT-TEST-000201", recipients=[{"country": "HN"}])
        with pytest.raises(DisclosureRefused) as refused:
            await disclose(
                gt.ctx,
                case=case_record.case_ref,
                doc_type="case_handoff",
                purpose="protection_referral",
                recipient_node="MX",
                recipient_authority="mx-comar",
            )
        assert refused.value.reason == "recipient_not_consented"
        preview = await preview_disclosure(
            gt.ctx,
            case=case_record.case_ref,
            doc_type="case_handoff",
            purpose="protection_referral",
            recipient_node="MX",
            recipient_authority="mx-comar",
            vital_interest=JUSTIFICATION,
        )
        assert preview.ok and preview.plan.legal_basis == "vital_interest"
        sent = await disclose(
            gt.ctx,
            case=case_record.case_ref,
            doc_type="case_handoff",
            purpose="protection_referral",
            recipient_node="MX",
            recipient_authority="mx-comar",
            vital_interest=JUSTIFICATION,
        )
        assert sent.preview.document == preview.document
        assert await gt.deliverer.run_once() == 1

        queued = [
            e
            for e in events(await audit_entries(gt.ctx), "disclosure.queued")
            if e["message_id"] == sent.message_id
        ]
        assert queued[0]["review_required"] is True
        assert queued[0]["legal_basis"] == "vital_interest"
        assert "consent_id" not in queued[0]
        assert JUSTIFICATION not in str(queued)
        reviews = await exceptions_for_review(gt.ctx)
        assert [(r.message_id, r.justification) for r in reviews] == [
            (sent.message_id, JUSTIFICATION)
        ]
        async with gt.ctx.sessions() as session:
            row = await session.get(CaseDisclosure, sent.message_id)
        assert row is not None and row.review_required and row.consent_id is None

        received = [
            e
            for e in events(await audit_entries(mx.ctx), "envelope.received")
            if e["message_id"] == sent.message_id
        ]
        assert received[0]["review_required"] is True
        assert received[0]["legal_basis"] == "vital_interest"
        async with mx.ctx.sessions() as session:
            stored = (await session.execute(select(ReceivedSummary))).scalar_one()
        assert stored.review_required and stored.consent_id is None
        assert stored.sender_authority == CONSULATE
