"""Consent records: the model and its rules (pure), and the node's consent service.

The service tests run on real nodes, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from node.casework.cases import record_interview
from node.casework.consents import (
    consent_status,
    get_consent,
    lapse_due,
    narrow_consent,
    record_consent,
    withdraw_consent,
)
from node.casework.disclose import disclose, preview_disclosure, send_preview
from node.core import schemas
from node.delivery.outbox import DisclosureRefused
from node.demo.synthetic_cases import consent_draft
from node.rules.consent import (
    ConsentError,
    ConsentRecord,
    ConsentRefused,
    Officer,
    RecipientMatcher,
    RecipientRef,
    Scope,
    check,
    choose,
    narrow,
    new_consent,
    withdraw,
)
from node.storage.consent_models import CaseDisclosure
from node.storage.models import Disclosure
from tests.support.cases import (
    CASE_SPECS,
    CONSULATE,
    MovableClock,
    audit_entries,
    events,
    new_case,
)
from tests.support.nodes import DatabaseFactory, live_federation

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=31)
COMAR = RecipientRef("MX", "mx-comar", "protection_agency")
INM = RecipientRef("MX", "mx-inm", "migration_authority")
OFFICER = Officer("GT", CONSULATE, "officer-7")
DISABILITY_ASKED = {"topic": "disability", "language": "es", "interpreter": False}


def record(**overrides: Any) -> ConsentRecord:
    draft = consent_draft(
        case_ref="GT-TEST-000100",
        node="GT",
        authority=CONSULATE,
        recipients=[{"country": "MX", "authority_kind": "protection_agency"}],
        valid_until=NOW + dt.timedelta(days=30),
    )
    draft.update(overrides)
    return new_consent(draft, consent_id=str(uuid.uuid4()), now=NOW)


@pytest.mark.parametrize(
    ("matcher", "recipient", "matches"),
    [
        (RecipientMatcher(country="MX"), COMAR, True),
        (RecipientMatcher(country="HN"), COMAR, False),
        (RecipientMatcher(authority_kind="protection_agency"), COMAR, True),
        (RecipientMatcher(authority_kind="protection_agency"), INM, False),
        (RecipientMatcher(country="MX", authority="mx-inm"), INM, True),
        (RecipientMatcher(country="MX", authority="mx-inm"), COMAR, False),
        (RecipientMatcher(country="GT", authority="mx-inm"), INM, False),
    ],
)
def test_a_recipient_matcher_matches_when_every_member_does(
    matcher: RecipientMatcher, recipient: RecipientRef, matches: bool
) -> None:
    assert matcher.matches(recipient) is matches


def test_the_record_is_schema_valid_and_round_trips() -> None:
    consent = record(grantor={"role": "guardian", "best_interest_determination": "BID-2026-7"})
    document = consent.as_document()
    schemas.validate(schemas.CONSENT, document)
    assert ConsentRecord.from_document(document) == consent
    assert consent.status == "given" and consent.grantor_decides_for_minor
    assert [h.status for h in consent.history] == ["given"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"purposes": []}, "consent_invalid"),
        ({"purposes": ["marketing"]}, "consent_invalid"),
        ({"categories": ["everything"]}, "consent_invalid"),
        ({"recipients": [{"authority": "mx-comar"}]}, "consent_invalid"),  # names no country
        ({"grantor": {"role": "neighbour"}}, "consent_invalid"),
        ({"valid_until": "2026-11-01T00:00:00Z"}, "consent_invalid"),  # before valid_from
        ({"informed": {"language": "es"}}, "consent_invalid"),  # how she was informed
    ],
)
def test_an_incomplete_or_wrong_draft_is_refused(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConsentError) as refused:
        record(**overrides)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("consent_factory", "at", "purpose", "recipient", "reason"),
    [
        (lambda: record(), NOW, "protection_referral", COMAR, None),
        (lambda: record(), NOW, "consular_assistance", COMAR, "purpose_not_consented"),
        (lambda: record(), NOW, "protection_referral", INM, "recipient_not_consented"),
        (
            lambda: record(),
            NOW + dt.timedelta(days=31),
            "protection_referral",
            COMAR,
            "consent_expired",
        ),
        (
            lambda: record(valid_from="2026-12-01T00:00:00Z"),
            NOW,
            "protection_referral",
            COMAR,
            "consent_expired",
        ),
        (
            lambda: withdraw(record(), at=NOW, by=OFFICER),
            NOW,
            "protection_referral",
            COMAR,
            "consent_withdrawn",
        ),
    ],
)
def test_a_disclosure_is_covered_only_while_the_consent_holds(
    consent_factory: Any, at: dt.datetime, purpose: str, recipient: RecipientRef, reason: str | None
) -> None:
    consent = consent_factory()
    if reason is None:
        check(consent, now=at, purpose=purpose, recipient=recipient)
        return
    with pytest.raises(ConsentRefused) as refused:
        check(consent, now=at, purpose=purpose, recipient=recipient)
    assert refused.value.reason == reason


def test_lapsed_is_the_effective_status_after_validity() -> None:
    consent = record()
    assert consent.effective_status(NOW) == "given"
    assert consent.effective_status(NOW + dt.timedelta(days=30)) == "lapsed"


def scope_of(consent: ConsentRecord, **changes: Any) -> Scope:
    return dataclasses.replace(consent.scope, **changes)


def test_a_consent_can_be_narrowed_in_every_respect_but_never_widened() -> None:
    consent = record(
        purposes=["protection_referral", "consular_assistance"],
        recipients=[{"country": "MX"}],
    )
    narrower: list[dict[str, Any]] = [
        {"purposes": frozenset({"protection_referral"})},
        {"categories": frozenset({"case_reference", "identity"})},
        {"valid_until": NOW + dt.timedelta(days=1)},
        {"share_back": False},
        {"recipients": (RecipientMatcher(country="MX", authority_kind="protection_agency"),)},
    ]
    for change in narrower:
        narrowed = narrow(consent, scope_of(consent, **change), at=NOW, by=OFFICER)
        assert narrowed.status == "narrowed"
        assert [h.status for h in narrowed.history] == ["given", "narrowed"]
    wider: list[dict[str, Any]] = [
        {"purposes": frozenset({"protection_referral", "reception_on_return"})},
        {"valid_until": NOW + dt.timedelta(days=31)},
        {"recipients": (RecipientMatcher(country="HN"),)},
        {"recipients": (RecipientMatcher(authority_kind="protection_agency"),)},
    ]
    for change in wider:
        with pytest.raises(ConsentError) as refused:
            narrow(consent, scope_of(consent, **change), at=NOW, by=OFFICER)
        assert refused.value.reason == "not_narrower", change
    no_share = narrow(consent, scope_of(consent, share_back=False), at=NOW, by=OFFICER)
    with pytest.raises(ConsentError):
        narrow(no_share, scope_of(no_share, share_back=True), at=NOW, by=OFFICER)
    with pytest.raises(ConsentError) as emptied:
        narrow(consent, scope_of(consent, purposes=frozenset()), at=NOW, by=OFFICER)
    assert emptied.value.reason == "not_narrower"
    gone = withdraw(consent, at=NOW, by=OFFICER)
    with pytest.raises(ConsentError) as after:
        narrow(gone, scope_of(gone, share_back=False), at=NOW, by=OFFICER)
    assert after.value.reason == "consent_not_active"
    with pytest.raises(ConsentError):
        withdraw(gone, at=NOW, by=OFFICER)


def test_choose_takes_the_newest_fitting_consent_or_the_closest_refusal() -> None:
    older = record()
    newer = dataclasses.replace(record(), recorded_at=NOW + dt.timedelta(hours=1))
    assert choose([older, newer], now=NOW, purpose="protection_referral", recipient=COMAR) == newer
    assert (
        choose(
            [older, newer],
            now=NOW,
            purpose="protection_referral",
            recipient=COMAR,
            consent_id=older.consent_id,
        )
        == older
    )
    with pytest.raises(ConsentRefused) as none:
        choose([], now=NOW, purpose="protection_referral", recipient=COMAR)
    assert none.value.reason == "no_consent"
    gone = withdraw(older, at=NOW, by=OFFICER)
    with pytest.raises(ConsentRefused) as refused:
        choose([gone, newer], now=NOW, purpose="protection_referral", recipient=INM)
    assert refused.value.reason == "recipient_not_consented"
    with pytest.raises(ConsentRefused) as withdrawn:
        choose([gone], now=NOW, purpose="protection_referral", recipient=COMAR)
    assert withdrawn.value.reason == "consent_withdrawn"


# The node's consent service, on real nodes.


async def test_record_narrow_lapse_on_a_node(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(tmp_path, database_factory, CASE_SPECS, clock=clock) as nodes:
        gt = nodes["GT"]
        case, consent = await new_case(
            gt.ctx,
            "GT-TEST-000101",
            recipients=[{"country": "MX"}],
            purposes=("protection_referral", "consular_assistance"),
        )
        stored = await get_consent(gt.ctx, consent.consent_id)
        assert stored == consent
        given = events(await audit_entries(gt.ctx), "consent.given")
        assert given[0]["consent_id"] == consent.consent_id
        assert given[0]["informed_language"] == "es" and given[0]["grantor"] == "self"
        assert "GT-TEST-000101" not in str(given)

        # Two disclosures wait in the outbox; narrowing away the migration authority
        # stops the one to it at once and leaves the other.
        comar = await disclose(
            gt.ctx,
            case=case.case_ref,
            doc_type="case_handoff",
            purpose="protection_referral",
            recipient_node="MX",
            recipient_authority="mx-comar",
        )
        inm = await disclose(
            gt.ctx,
            case=case.case_ref,
            doc_type="case_handoff",
            purpose="protection_referral",
            recipient_node="MX",
            recipient_authority="mx-inm",
        )
        scope = dataclasses.replace(
            consent.scope,
            recipients=(RecipientMatcher(country="MX", authority_kind="protection_agency"),),
        )
        outcome = await narrow_consent(gt.ctx, consent.consent_id, scope, by=OFFICER)
        assert outcome.stopped == (inm.message_id,)
        async with gt.ctx.sessions() as session:
            states = {
                d.message_id: (await session.get(Disclosure, d.message_id)).state  # type: ignore[union-attr]
                for d in (comar, inm)
            }
        assert states == {comar.message_id: "queued", inm.message_id: "withdrawn"}
        status = await consent_status(gt.ctx, consent.consent_id)
        assert status.effective_status == "narrowed"
        assert {(e.authority, e.scope, e.erase) for e in status.erasures} == {
            ("mx-comar", "narrowed", ()),
            ("mx-inm", "narrowed", (inm.message_id,)),
        }
        with pytest.raises(DisclosureRefused) as refused:
            await disclose(
                gt.ctx,
                case=case.case_ref,
                doc_type="case_handoff",
                purpose="protection_referral",
                recipient_node="MX",
                recipient_authority="mx-inm",
            )
        assert refused.value.reason == "recipient_not_consented"
        with pytest.raises(ConsentError) as wider:
            await narrow_consent(gt.ctx, consent.consent_id, consent.scope, by=OFFICER)
        assert wider.value.reason == "not_narrower"

        # Validity ends: the lifecycle sweep marks it lapsed and nothing more goes.
        assert await lapse_due(gt.ctx) == 0
        clock.advance(dt.timedelta(days=181))
        assert await lapse_due(gt.ctx) == 1
        lapsed = await get_consent(gt.ctx, consent.consent_id)
        assert [h.status for h in lapsed.history] == ["given", "narrowed", "lapsed"]
        with pytest.raises(DisclosureRefused) as expired:
            await disclose(
                gt.ctx,
                case=case.case_ref,
                doc_type="case_handoff",
                purpose="protection_referral",
                recipient_node="MX",
                recipient_authority="mx-comar",
            )
        assert expired.value.reason == "consent_expired"
        log = await audit_entries(gt.ctx)
        assert [e["event"] for e in log if e["event"].startswith("consent.")] == [
            "consent.given",
            "consent.narrowed",
            "consent.lapsed",
        ]
        assert [e["reason"] for e in events(log, "disclosure.refused_locally")] == [
            "recipient_not_consented",
            "consent_expired",
        ]


async def test_the_service_refuses_what_it_cannot_record(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        gt = nodes["GT"]
        now = gt.ctx.now()
        unknown_case = consent_draft(
            case_ref="GT-TEST-NOSUCH", node="GT", authority=CONSULATE, valid_until=now
        )
        unknown_case["valid_until"] = "2099-01-01T00:00:00Z"
        with pytest.raises(ConsentError) as no_case:
            await record_consent(gt.ctx, unknown_case)
        assert no_case.value.reason == "unknown_case"
        await new_case(gt.ctx, "GT-TEST-000102")
        foreign = consent_draft(
            case_ref="GT-TEST-000102",
            node="MX",
            authority="mx-comar",
            valid_until=now + dt.timedelta(days=1),
        )
        with pytest.raises(ConsentError) as not_ours:
            await record_consent(gt.ctx, foreign)
        assert not_ours.value.reason == "unknown_authority"
        with pytest.raises(ConsentError) as unknown:
            await withdraw_consent(gt.ctx, str(uuid.uuid4()), by=OFFICER)
        assert unknown.value.reason == "unknown_consent"


async def test_a_preview_is_sent_exactly_or_refused_as_stale(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(tmp_path, database_factory, CASE_SPECS, clock=clock) as nodes:
        gt = nodes["GT"]
        case, consent = await new_case(gt.ctx, "GT-TEST-000103", recipients=[{"country": "MX"}])
        request = {
            "case": case.case_ref,
            "doc_type": "case_handoff",
            "purpose": "protection_referral",
            "recipient_node": "MX",
            "recipient_authority": "mx-comar",
        }
        preview = await preview_disclosure(gt.ctx, **request)
        clock.advance(dt.timedelta(minutes=10))  # the caseworker reads it first
        sent = await send_preview(gt.ctx, preview)
        assert sent.preview is preview
        async with gt.ctx.sessions() as session:
            row = await session.get(CaseDisclosure, sent.message_id)
        assert row is not None and row.retain_until == preview.plan.retain_until

        # The case changed after the preview: the preview is not what would go now.
        stale = await preview_disclosure(gt.ctx, **request)
        await record_interview(
            gt.ctx,
            case.case_ref,
            authority=CONSULATE,
            interview={
                "coverage": [{"topic": "disability", "language": "es", "interpreter": False}]
            },
        )
        with pytest.raises(DisclosureRefused) as changed_case:
            await send_preview(gt.ctx, stale)
        assert changed_case.value.reason == "preview_stale"
        # So did the consent.
        stale = await preview_disclosure(gt.ctx, **request)
        await narrow_consent(
            gt.ctx,
            consent.consent_id,
            dataclasses.replace(consent.scope, share_back=False),
            by=OFFICER,
        )
        with pytest.raises(DisclosureRefused) as changed_consent:
            await send_preview(gt.ctx, stale)
        assert changed_consent.value.reason == "preview_stale"
