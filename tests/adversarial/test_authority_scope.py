"""No oracle between authorities: a case reference is its authority's, and another's data is absent.

Before: case references were unique per node, so the second authority to use
one was told ``case_exists`` — learning that another authority held that
reference, and unable to use it (squatting). Now the key is (authority,
case_ref), and everything one authority asks about another's case, consent
or received summary is answered exactly as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from node.casework import cases
from node.casework.consents import consents_for_case, record_consent, withdraw_consent
from node.casework.disclose import preview_disclosure
from node.demo.synthetic_cases import consent_draft, interviewed_case
from node.rules.consent import ConsentError, Officer
from tests.support.api import api_client, running_api, user_token
from tests.support.cases import CASE_SPECS, CONSULATE, handoff, new_case
from tests.support.nodes import DatabaseFactory, live_federation

REF = "MX-SHARED-2026-000001"
COMAR, INM = "mx-comar", "mx-inm"


def _document(authority: str, now: dt.datetime) -> dict[str, Any]:
    return interviewed_case(case_ref=REF, node="MX", authority=authority, asked_at=now)


def _consent(authority: str, now: dt.datetime) -> dict[str, Any]:
    draft = consent_draft(
        case_ref=REF,
        node="MX",
        authority=authority,
        purposes=["protection_referral"],
        recipients=[{"country": "GT"}],
        valid_until=now + dt.timedelta(days=30),
    )
    return {k: v for k, v in draft.items() if k not in ("case_ref", "recorded_by")}


# Every route that names a case or a consent: what the other authority asks of it.
PROBES: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
    ("GET", "/api/v1/cases/{case}", None),
    ("GET", "/api/v1/cases/{case}/coverage", None),
    ("GET", "/api/v1/cases/{case}/route", None),
    (
        "POST",
        "/api/v1/cases/{case}/interview",
        {"interview": {"coverage": [{"topic": "health", "language": "es", "interpreter": False}]}},
    ),
    ("POST", "/api/v1/cases/{case}/consents", {"consent": {}}),
    (
        "POST",
        "/api/v1/cases/{case}/disclosures/preview",
        {
            "doc_type": "case_handoff",
            "purpose": "protection_referral",
            "recipient": {"node": "GT", "authority": CONSULATE},
        },
    ),
    (
        "POST",
        "/api/v1/cases/{case}/disclosures",
        {
            "doc_type": "case_handoff",
            "purpose": "protection_referral",
            "recipient": {"node": "GT", "authority": CONSULATE},
        },
    ),
    ("GET", "/api/v1/consents/{consent}", None),
    ("POST", "/api/v1/consents/{consent}/withdraw", None),
)


async def test_two_authorities_use_one_reference_and_neither_can_tell(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        mx = nodes["MX"].ctx
        now = mx.now()
        comar = await user_token(mx, "cw.comar", "caseworker", COMAR)
        inm = await user_token(mx, "cw.inm", "caseworker", INM)
        async with running_api(mx), api_client(mx, comar) as a, api_client(mx, inm) as b:
            status, mine = await a.call(
                "POST", "/api/v1/cases", json={"document": _document(COMAR, now)}
            )
            assert status == 201, mine
            status, theirs = await b.call(
                "POST", "/api/v1/cases", json={"document": _document(INM, now)}
            )
            assert status == 201, theirs  # not case_exists: nothing learned, nothing squatted
            status, again = await b.call(
                "POST", "/api/v1/cases", json={"document": _document(INM, now)}
            )
            assert (status, again["reason"]) == (422, "case_exists")  # its own, it may know
            status, consent = await b.call(
                "POST",
                f"/api/v1/cases/{theirs['case_id']}/consents",
                json={"consent": _consent(INM, now)},
            )
            assert status == 201, consent

            absent = str(uuid.uuid4())
            for method, template, body in PROBES:
                other = await a.call(
                    method,
                    template.format(case=theirs["case_id"], consent=consent["consent_id"]),
                    json=body,
                )
                missing = await a.call(
                    method, template.format(case=absent, consent=absent), json=body
                )
                assert other[0] == 404, (template, other)
                assert other == missing, f"{template}: another's answers unlike an absent one"

            # By reference, each authority finds its own case, never the other's.
            status, found = await a.call("GET", f"/api/v1/cases/{REF}")
            assert (status, found["case_id"]) == (200, mine["case_id"])
            status, found = await b.call("GET", f"/api/v1/cases/{REF}")
            assert (status, found["case_id"]) == (200, theirs["case_id"])
            status, listed = await a.call("GET", "/api/v1/cases")
            assert [c["case_id"] for c in listed["items"]] == [mine["case_id"]]
            # The other authority's consent is untouched by the probes.
            status, shown = await b.call("GET", f"/api/v1/consents/{consent['consent_id']}")
            assert (status, shown["consent"]["status"]) == (200, "given")


async def test_services_keep_the_reference_within_its_authority(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        mx = nodes["MX"].ctx
        now = mx.now()
        mine = await cases.create_case(mx, authority=COMAR, document=_document(COMAR, now))
        theirs = await cases.create_case(mx, authority=INM, document=_document(INM, now))
        draft = consent_draft(
            case_ref=REF,
            node="MX",
            authority=INM,
            purposes=["protection_referral"],
            recipients=[{"country": "GT"}],
            valid_until=now + dt.timedelta(days=30),
        )
        consent = await record_consent(mx, draft)
        assert [c.consent_id for c in await consents_for_case(mx, theirs.case_id)] == [
            consent.consent_id
        ]
        assert await consents_for_case(mx, mine.case_id) == []

        with pytest.raises(ConsentError) as other:
            await withdraw_consent(mx, consent.consent_id, by=Officer("MX", COMAR, "o-1"))
        with pytest.raises(ConsentError) as absent:
            await withdraw_consent(mx, str(uuid.uuid4()), by=Officer("MX", COMAR, "o-1"))
        assert other.value.reason == absent.value.reason == "unknown_consent"

        with pytest.raises(cases.CaseError) as ambiguous:
            await cases.find_case(mx, REF)  # the operator must say which authority
        assert ambiguous.value.reason == "case_ambiguous"
        assert (await cases.find_case(mx, REF, authority=INM)).case_id == theirs.case_id
        with pytest.raises(cases.CaseError) as refused:
            await cases.find_case(mx, theirs.case_id, authority=COMAR)
        assert refused.value.reason == "unknown_case"

        report = await cases.coverage(mx, REF, authority=COMAR)
        assert {e.authority for entries in report.covered.values() for e in entries} == {COMAR}
        preview = await preview_disclosure(
            mx,
            case=REF,
            sender_authority=INM,
            doc_type="case_handoff",
            purpose="protection_referral",
            recipient_node="GT",
            recipient_authority=CONSULATE,
        )
        assert preview.case_id == theirs.case_id


async def test_a_summary_received_by_one_authority_is_absent_for_another(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    ref = "GT-CONS-2026-000888"
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        await new_case(gt.ctx, ref, recipients=[{"country": "MX"}])
        await handoff(gt.ctx, ref, "MX", COMAR)
        assert await gt.deliverer.run_once() == 1

        interview = {"coverage": [{"topic": "disability", "language": "es", "interpreter": False}]}
        refusals = []
        for asked in (ref, "GT-CONS-2026-000999"):  # received by the other authority / by none
            with pytest.raises(cases.CaseError) as refused:
                await cases.add_addendum(
                    mx.ctx, case_ref=asked, origin_node="GT", authority=INM, interview=interview
                )
            refusals.append(refused.value.reason)
        for asked in (ref, "GT-CONS-2026-000999"):
            with pytest.raises(cases.CaseError) as refused:
                await cases.coverage(mx.ctx, asked, authority=INM)
            refusals.append(refused.value.reason)
        assert refusals == ["unknown_case"] * 4
        assert (await cases.coverage(mx.ctx, ref, authority=COMAR)).covered
