"""The three journeys of DOMAIN.md, end to end through the local API of two real nodes.

1. A reception officer receives a return notice and acknowledges her arrival.
2. A consulate hands a case off with consent, previews it, sends it, then the
   consent is withdrawn and the recipient's erasure receipt comes back.
3. An auditor draws a subject access report for the case — without its contents.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from node.auditlog.checkpoints import issue_checkpoint
from node.core.config import AuthorityConfig
from node.demo.local_federation import NodeSpec
from node.demo.synthetic_cases import consent_draft, interviewed_case
from tests.support.api import api_client, running_api, user_token
from tests.support.nodes import DatabaseFactory, live_federation

MX = NodeSpec(
    "MX",
    "México (test)",
    (
        AuthorityConfig("mx-inm", "migration_authority", {"es": "INM"}),
        AuthorityConfig("mx-comar", "protection_agency", {"es": "COMAR"}),
    ),
)
GT = NodeSpec(
    "GT",
    "Guatemala (test)",
    (
        AuthorityConfig("gt-reception", "reception_centre", {"es": "Recepción"}),
        AuthorityConfig("gt-consulate", "consulate", {"es": "Consulado en Tapachula"}),
    ),
)


def _consent_body(draft: dict[str, object]) -> dict[str, object]:
    # The node fills in case_ref and recorded_by from the path and the token.
    return {k: v for k, v in draft.items() if k not in ("case_ref", "recorded_by")}


async def test_the_three_journeys_through_the_api(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        now = mx.ctx.now()
        mx_caseworker = await user_token(mx.ctx, "ana.inm", "caseworker", "mx-inm")
        gt_officer = await user_token(gt.ctx, "rosa.reception", "reception_officer", "gt-reception")
        gt_consul = await user_token(gt.ctx, "juana.consul", "caseworker", "gt-consulate")
        gt_auditor = await user_token(gt.ctx, "dpa.auditor", "auditor", "dpa-gt")
        async with running_api(mx.ctx), running_api(gt.ctx):
            # ---- 1. Return notice: MX migration authority -> GT reception centre.
            case = interviewed_case(
                case_ref="MX-INM-2026-000777", node="MX", authority="mx-inm", asked_at=now
            )
            async with api_client(mx.ctx, mx_caseworker) as caseworker:
                status, created = await caseworker.call(
                    "POST", "/api/v1/cases", json={"document": case}
                )
                assert status == 201, created
                case_id = created["case_id"]
                draft = consent_draft(
                    case_ref=case["case_ref"],
                    node="MX",
                    authority="mx-inm",
                    purposes=["reception_on_return"],
                    recipients=[{"country": "GT", "authority_kind": "reception_centre"}],
                    valid_until=now + dt.timedelta(days=30),
                )
                status, consent = await caseworker.call(
                    "POST",
                    f"/api/v1/cases/{case_id}/consents",
                    json={"consent": _consent_body(draft)},
                )
                assert status == 201, consent
                assert consent["recorded_by"] == {
                    "node": "MX",
                    "authority": "mx-inm",
                    "officer": "ana.inm",
                }
                request = {
                    "doc_type": "return_notice",
                    "purpose": "reception_on_return",
                    "recipient": {"node": "GT", "authority": "gt-reception"},
                }
                status, preview = await caseworker.call(
                    "POST", f"/api/v1/cases/{case_id}/disclosures/preview", json=request
                )
                assert status == 200 and preview["ok"], preview
                assert not any(f.startswith("interview") for f in preview["sent_fields"])
                status, queued = await caseworker.call(
                    "POST", f"/api/v1/cases/{case_id}/disclosures", json=request
                )
                assert status == 202, queued
                assert queued["sent_fields"] == preview["sent_fields"]
                assert await mx.deliverer.run_once() == 1
                status, followed = await caseworker.call(
                    "GET", f"/api/v1/disclosures/{queued['message_id']}"
                )
                assert status == 200
                assert followed["state"] == "delivered" and followed["receipt"]
                assert followed["next_attempt_at"] is None
                status, health = await caseworker.call("GET", "/api/v1/delivery/peers")
                assert status == 200
                gt_health = next(p for p in health["items"] if p["peer"] == "GT")
                assert gt_health["reachable"] is True and gt_health["backlog"] == 0

            async with api_client(gt.ctx, gt_officer) as officer:
                status, page = await officer.call("GET", "/api/v1/inbox")
                assert status == 200 and page["total"] == 1
                item = page["items"][0]
                assert item["message_id"] == queued["message_id"]
                assert item["arrival_date"] == case["arrival"]["date"]
                status, opened = await officer.call("GET", f"/api/v1/inbox/{item['id']}")
                assert status == 200
                assert opened["summary"]["person"]["given_names"] == "Ana Lucía"
                assert "interview" not in opened["summary"], "minimized for reception"
                status, acked = await officer.call(
                    "POST", f"/api/v1/inbox/{item['id']}/acknowledge"
                )
                assert status == 200 and acked["acknowledged_by"] == "rosa.reception"
                status, done = await officer.call(
                    "POST",
                    f"/api/v1/inbox/{item['id']}/outcome",
                    json={"outcome": "referred_to_shelter"},
                )
                assert status == 200 and done["outcome"] == "referred_to_shelter"

            # ---- 2. Consular handoff with consent, preview and withdrawal: GT -> MX.
            handoff_case = interviewed_case(
                case_ref="GT-CONS-2026-000123", node="GT", authority="gt-consulate", asked_at=now
            )
            async with api_client(gt.ctx, gt_consul) as consul:
                status, created = await consul.call(
                    "POST", "/api/v1/cases", json={"document": handoff_case}
                )
                assert status == 201, created
                handoff_id = created["case_id"]
                draft = consent_draft(
                    case_ref=handoff_case["case_ref"],
                    node="GT",
                    authority="gt-consulate",
                    purposes=["protection_referral"],
                    recipients=[{"country": "MX", "authority_kind": "protection_agency"}],
                    valid_until=now + dt.timedelta(days=30),
                )
                status, consent = await consul.call(
                    "POST",
                    f"/api/v1/cases/{handoff_id}/consents",
                    json={"consent": _consent_body(draft)},
                )
                assert status == 201, consent
                request = {
                    "doc_type": "case_handoff",
                    "purpose": "protection_referral",
                    "recipient": {"node": "MX", "authority": "mx-comar"},
                }
                status, preview = await consul.call(
                    "POST", f"/api/v1/cases/{handoff_id}/disclosures/preview", json=request
                )
                assert status == 200 and preview["ok"], preview
                assert preview["withheld"], "the preview says what stays and why"
                assert all(isinstance(r, str) and r for r in preview["withheld"].values())
                status, queued = await consul.call(
                    "POST", f"/api/v1/cases/{handoff_id}/disclosures", json=request
                )
                assert status == 202, queued
                assert await gt.deliverer.run_once() == 1

                status, change = await consul.call(
                    "POST", f"/api/v1/consents/{consent['consent_id']}/withdraw"
                )
                assert status == 200, change
                assert change["consent"]["status"] == "withdrawn"
                assert len(change["withdrawal_notices"]) == 1
                await gt.deliverer.run_once()  # the withdrawal reaches MX, which erases
                await mx.deliverer.run_once()  # MX's signed erasure receipt comes back
                status, consent_now = await consul.call(
                    "GET", f"/api/v1/consents/{consent['consent_id']}"
                )
                assert status == 200
                erasures = consent_now["erasures"]
                assert len(erasures) == 1 and erasures[0]["confirmed_at"] is not None
                assert queued["message_id"] in erasures[0]["erased"]

                # Another authority's case does not exist for this caseworker.
                status, problem = await consul.call("GET", f"/api/v1/cases/{case_id}")
                assert (status, problem["reason"]) == (404, "not_found")

            # ---- 3. The auditor's subject access report: every disclosure, no contents.
            await issue_checkpoint(gt.ctx)
            async with api_client(gt.ctx, gt_auditor) as auditor:
                status, report = await auditor.call(
                    "GET",
                    "/api/v1/audit/subject-report",
                    params={"case_id": handoff_case["case_ref"]},
                )
                assert status == 200, report
                events = [e["entry"]["event"] for e in report["entries"]]
                assert "disclosure.queued" in events and "consent.withdrawn" in events
                assert report["counterparties"] == ["MX"]
                assert all(e["inclusion"] is not None for e in report["entries"])
                text = json.dumps(report)
                assert "Ana Lucía" not in text and "GT-CONS-2026-000123" not in text
                status, problem = await auditor.call("GET", f"/api/v1/cases/{handoff_id}")
                assert (status, problem["reason"]) == (403, "role_forbidden")
