"""Interview once: a recipient sees what was asked, asks only what is missing, shares back.

Real nodes over mutual TLS, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.casework.cases import CaseError, add_addendum, coverage
from node.casework.consents import record_consent, withdraw_consent
from node.casework.disclose import disclose
from node.casework.shareback import share_back
from node.delivery.outbox import DisclosureRefused
from node.demo.synthetic_cases import CONSULATE_TOPICS, consent_draft
from node.intake.summaries import list_received, read_received
from node.rules.consent import Officer
from tests.support.cases import CASE_SPECS, CONSULATE, audit_entries, events, handoff, new_case
from tests.support.nodes import DatabaseFactory, live_federation

CASE_REF = "GT-CONS-2026-000777"
PREGNANCY = {"topic": "pregnancy", "language": "es", "interpreter": False}

LEARNED_AT_COMAR = {
    "vulnerability_conditions": ["disability", "little_education_or_unemployed"],
    "coverage": [
        {"topic": "disability", "language": "mam", "interpreter": True},
        {"topic": "education_employment", "language": "mam", "interpreter": True},
        # Asked again by mistake: already covered, so never shared back.
        {"topic": "health", "language": "mam", "interpreter": True},
    ],
}


async def test_a_recipient_asks_only_what_is_missing_and_shares_it_back(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        _, consent = await new_case(gt.ctx, CASE_REF, recipients=[{"country": "MX"}])
        await handoff(gt.ctx, CASE_REF, "MX", "mx-comar")
        assert await gt.deliverer.run_once() == 1

        (seen,) = await read_received(mx.ctx, CASE_REF, viewer="officer.mx")
        assert seen.body is not None and seen.consent_id == consent.consent_id
        viewed = events(await audit_entries(mx.ctx), "summary.viewed")
        assert [(v["user"], v["message_id"]) for v in viewed] == [("officer.mx", seen.message_id)]

        report = await coverage(mx.ctx, CASE_REF)
        asked = set(CONSULATE_TOPICS) | {"social_risk"}
        assert set(report.covered) == asked
        first = report.covered["fear_of_return"][0]
        assert (first.node, first.authority, first.language) == ("GT", CONSULATE, "es")
        assert "disability" in report.missing and "identity" not in report.missing

        addendum = await add_addendum(
            mx.ctx,
            case_ref=CASE_REF,
            origin_node="GT",
            authority="mx-comar",
            interview=LEARNED_AT_COMAR,
        )
        after = await coverage(mx.ctx, CASE_REF)
        assert after.covered["disability"][0].node == "MX"
        assert after.covered["disability"][0].interpreter is True
        assert "disability" not in after.missing

        shared = await share_back(mx.ctx, addendum.addendum_id)
        assert shared.topics == ("disability", "education_employment")
        assert shared.plan.purpose == "case_continuity"
        body = shared.plan.summary.document
        assert {e["topic"] for e in body["interview"]["coverage"]} == {
            "disability",
            "education_employment",
        }
        assert "person" not in body, "share-back carries only what is new"
        assert await mx.deliverer.run_once() == 1

        # The case's holder now sees who asked what, on both sides of the border.
        at_origin = await coverage(gt.ctx, CASE_REF)
        assert at_origin.covered["disability"][0].authority == "mx-comar"
        assert len(at_origin.covered["health"]) == 1, "the repeated question was not shared"
        (received,) = await list_received(gt.ctx, CASE_REF)
        assert received.purpose == "case_continuity" and received.consent_id == consent.consent_id
        assert received.body is not None
        assert received.body["interview"]["vulnerability_conditions"] == [
            "disability",
            "little_education_or_unemployed",
        ]

        with pytest.raises(CaseError) as twice:
            await share_back(mx.ctx, addendum.addendum_id)
        assert twice.value.reason == "already_shared"
        repeat = await add_addendum(
            mx.ctx,
            case_ref=CASE_REF,
            origin_node="GT",
            authority="mx-comar",
            interview={"coverage": [{"topic": "health", "language": "es", "interpreter": False}]},
        )
        with pytest.raises(CaseError) as nothing:
            await share_back(mx.ctx, repeat.addendum_id)
        assert nothing.value.reason == "nothing_new"

        # Once she withdraws, nothing more is shared back.
        await withdraw_consent(gt.ctx, consent.consent_id, by=Officer("GT", CONSULATE, "o-1"))
        await gt.deliverer.run_once()
        with pytest.raises(CaseError) as gone:
            await add_addendum(
                mx.ctx,
                case_ref=CASE_REF,
                origin_node="GT",
                authority="mx-comar",
                interview={"coverage": [PREGNANCY]},
            )
        assert gone.value.reason == "unknown_case", "erased: nothing readable to add to"
        mx_log = await audit_entries(mx.ctx)
        assert len(events(mx_log, "case.addendum")) == 2
        assert CASE_REF not in str(mx_log)


async def test_share_back_needs_her_agreement(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        case, _ = await new_case(gt.ctx, CASE_REF, recipients=[{"country": "MX"}])
        # A second consent without share-back is the one the handoff rests on.
        no_share = await record_consent(
            gt.ctx,
            consent_draft(
                case_ref=CASE_REF,
                node="GT",
                authority=CONSULATE,
                recipients=[{"country": "MX"}],
                valid_until=gt.ctx.now().replace(year=gt.ctx.now().year + 1),
                share_back=False,
            ),
        )
        await disclose(
            gt.ctx,
            case=case.case_id,
            doc_type="case_handoff",
            purpose="protection_referral",
            recipient_node="MX",
            recipient_authority="mx-comar",
            consent_id=no_share.consent_id,
        )
        await gt.deliverer.run_once()
        addendum = await add_addendum(
            mx.ctx,
            case_ref=CASE_REF,
            origin_node="GT",
            authority="mx-comar",
            interview=LEARNED_AT_COMAR,
        )
        with pytest.raises(DisclosureRefused) as refused:
            await share_back(mx.ctx, addendum.addendum_id)
        assert refused.value.reason == "purpose_not_consented"
        with pytest.raises(CaseError) as unknown:
            await add_addendum(
                mx.ctx,
                case_ref="GT-CONS-NOT-HELD",
                origin_node="GT",
                authority="mx-comar",
                interview=LEARNED_AT_COMAR,
            )
        assert unknown.value.reason == "unknown_case"
