"""The critical route on real nodes (SQLite and PostgreSQL), through the local API.

1. A Mexican caseworker records the route step by step through the API; every
   disclosure the route's safeguards refuse is a 422 with its reason code and a
   ``disclosure.refused_locally`` audit entry; the protection handoff goes with
   her location withheld, and Guatemala's protection officer sees it marked as
   withheld. A sender that ignored the safeguards is refused at the recipient.
2. The demo's route story, end to end on three nodes, and the officer's view.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from node.casework.cases import create_case
from node.casework.consents import record_consent
from node.casework.disclose import preview_disclosure
from node.casework.route import record_step, route_view
from node.core.config import AuthorityConfig
from node.delivery.outbox import queue_disclosure
from node.demo.local_federation import NodeSpec
from node.demo.route_chapter import COMAR, PROTECTION, tell_route_story
from node.demo.run import DEMO_NODES
from node.demo.synthetic_cases import (
    consent_draft,
    durable_solution_step,
    identification_step,
    primary_assistance_step,
    risk_assessment_step,
    route_case,
)
from node.rules.consent import CATEGORIES
from node.rules.critical_route import LOCATION
from node.storage.models import Disclosure
from tests.support.api import api_client, running_api, user_token
from tests.support.cases import audit_entries, events
from tests.support.nodes import DatabaseFactory, live_federation

MX = NodeSpec(
    "MX",
    "México (test)",
    (
        AuthorityConfig("mx-comar", "protection_agency", {"es": "COMAR (prueba)"}),
        AuthorityConfig("mx-inm", "migration_authority", {"es": "INM (prueba)"}),
    ),
)
GT = NodeSpec(
    "GT",
    "Guatemala (test)",
    (
        AuthorityConfig(PROTECTION, "protection_agency", {"es": "Instituto de la Víctima"}),
        AuthorityConfig("gt-proteccion-norte", "protection_agency", {"es": "Protección Norte"}),
        AuthorityConfig("gt-reception", "reception_centre", {"es": "Recepción"}),
        AuthorityConfig("gt-migracion", "migration_authority", {"es": "Migración"}),
    ),
)
CASE_REF = "MX-RUTA-2026-000300"
# Values of her case that must never reach an audit entry (names and codes only).
CASE_VALUES = ("traffickers_or_exploiters", "Departamento de prueba", "+502 0000 0000", "Ana")


def _consent_body(draft: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in draft.items() if k not in ("case_ref", "recorded_by")}


def _send_body(doc_type: str, authority: str, purpose: str = "protection_referral") -> Any:
    return {
        "doc_type": doc_type,
        "purpose": purpose,
        "recipient": {"node": "GT", "authority": authority},
    }


async def test_the_route_through_the_api_with_every_refusal_audited(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        now = mx.ctx.now()
        caseworker_token = await user_token(mx.ctx, "rosa.comar", "caseworker", COMAR)
        officer_token = await user_token(gt.ctx, "ines.proteccion", "reception_officer", PROTECTION)
        async with running_api(mx.ctx), api_client(mx.ctx, caseworker_token) as caseworker:

            async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                return await caseworker.call(method, path, json=body)

            document = route_case(case_ref=CASE_REF, node="MX", authority=COMAR, asked_at=now)
            status, created = await call("POST", "/api/v1/cases", {"document": document})
            assert status == 201, created
            case = f"/api/v1/cases/{created['case_id']}"
            draft = consent_draft(
                case_ref=CASE_REF,
                node="MX",
                authority=COMAR,
                purposes=["protection_referral", "reception_on_return"],
                recipients=[{"country": "GT"}],  # every GT recipient: it overrides nothing
                categories=CATEGORIES,
                valid_until=now.replace(year=now.year + 1),
            )
            status, _ = await call("POST", f"{case}/consents", {"consent": _consent_body(draft)})
            assert status == 201

            status, view = await call("GET", f"{case}/route")
            assert (status, view["stage"], view["trafficking_indicators"]) == (
                200,
                "none",
                True,
            )
            status, refused = await call(
                "POST",
                f"{case}/route/risk-assessment",
                {"risk_assessment": risk_assessment_step()},
            )
            assert (status, refused["reason"]) == (422, "route_out_of_order")
            status, refused = await call(
                "POST",
                f"{case}/route/identification",
                {"identification": {"identified_as": ["x"]}},
            )
            assert (status, refused["reason"]) == (422, "case_invalid")
            status, refused = await call(
                "POST", f"{case}/route/identification", {"identification": [], "extra": 1}
            )
            assert (status, refused["reason"]) == (422, "invalid_request")

            status, view = await call(
                "POST",
                f"{case}/route/identification",
                {"identification": identification_step(), "country_of_origin": "GT"},
            )
            assert (status, view["stage"]) == (200, "identified"), view
            identified = view["steps"][0]
            assert (identified["node"], identified["authority"]) == ("MX", COMAR)
            status, view = await call(
                "POST",
                f"{case}/route/primary-assistance",
                {"primary_assistance": primary_assistance_step()},
            )
            assert view["stage"] == "assisted"
            refusals = []
            status, refused = await call(
                "POST", f"{case}/disclosures", _send_body("protection_handoff", PROTECTION)
            )
            refusals.append((status, refused["reason"], "risk_assessment_missing"))

            status, view = await call(
                "POST",
                f"{case}/route/risk-assessment",
                {"risk_assessment": risk_assessment_step()},
            )
            assert view["stage"] == "risk_assessed"
            assert view["countries"][0]["handoff_refused"] == "voluntary_return_choice_missing"
            status, refused = await call(
                "POST",
                f"{case}/disclosures",
                _send_body("return_notice", "gt-reception", "reception_on_return"),
            )
            refusals.append((status, refused["reason"], "voluntary_return_choice_missing"))

            elsewhere = durable_solution_step(country="HN")
            status, refused = await call(
                "POST", f"{case}/route/durable-solution", {"durable_solution": elsewhere}
            )
            assert (status, refused["reason"]) == (422, "return_country_not_assessed")
            choice = durable_solution_step(
                origin_recipients=[{"country": "GT", "authority_kind": "reception_centre"}]
            )
            status, view = await call(
                "POST", f"{case}/route/durable-solution", {"durable_solution": choice}
            )
            assert (status, view["stage"], view["missing"]) == (
                200,
                "solution_chosen",
                ["handoff"],
            )
            gt_safeguards = view["countries"][0]
            assert gt_safeguards["country"] == "GT" and gt_safeguards["handoff_refused"] is None
            assert gt_safeguards["protection_institutions_only"] is True
            assert gt_safeguards["location_withheld"] is True

            status, refused = await call(
                "POST",
                f"{case}/disclosures",
                _send_body("identification_record", "gt-migracion"),
            )
            refusals.append((status, refused["reason"], "origin_recipient_not_protection"))
            assert [(s, r) for s, r, _ in refusals] == [(422, want) for _, _, want in refusals]

            status, preview = await call(
                "POST",
                f"{case}/disclosures/preview",
                _send_body("protection_handoff", PROTECTION),
            )
            assert preview["ok"], preview
            safety = {p for p, r in preview["withheld"].items() if r == "withheld_for_safety"}
            assert safety and all(p.startswith(LOCATION) for p in safety)
            status, sent = await call(
                "POST", f"{case}/disclosures", _send_body("protection_handoff", PROTECTION)
            )
            assert status == 202, sent
            assert sent["withheld"] == preview["withheld"], "the send is the preview"
            assert await mx.deliverer.run_once() == 1
            status, view = await call("GET", f"{case}/route")
            assert view["stage"] == "handed_off"
            (handoff,) = view["critical_route"]["handoffs"]
            assert handoff["message_id"] == sent["message_id"]
            assert handoff["doc_type"] == "protection_handoff" and handoff["receipt_at"]

        # The audit log at MX: each refusal with its reason; steps by name; never a value.
        entries = await audit_entries(mx.ctx)
        refused_locally = [e["reason"] for e in events(entries, "disclosure.refused_locally")]
        assert refused_locally == [want for _, _, want in refusals]
        recorded = events(entries, "case.route_recorded")
        assert [e["step"] for e in recorded] == [
            "identification",
            "primary_assistance",
            "risk_assessment",
            "durable_solution",
        ]
        assert all(e["authority"] == COMAR and e["fields"] for e in recorded)
        (queued,) = [
            e for e in events(entries, "disclosure.queued") if e["message_id"] == sent["message_id"]
        ]
        assert safety <= set(queued["withheld"])
        text = json.dumps(entries, ensure_ascii=False)
        assert not [value for value in CASE_VALUES if value in text]

        # GT's protection officer: the handoff, her location marked as withheld.
        async with running_api(gt.ctx), api_client(gt.ctx, officer_token) as officer:
            status, page = await officer.call(
                "GET", "/api/v1/inbox", params={"doc_type": "protection_handoff"}
            )
            assert status == 200 and page["total"] == 1
            status, opened = await officer.call("GET", f"/api/v1/inbox/{page['items'][0]['id']}")
        assert status == 200
        assert opened["withheld"] == [{"field": LOCATION, "reason": "withheld_for_safety"}]
        route = opened["summary"]["critical_route"]
        assert "location" not in route["durable_solution"]
        assert route["risk_assessment"]["danger_from"] == ["traffickers_or_exploiters"]
        assert opened["summary"]["arrival"]["date"] == document["arrival"]["date"]


async def test_a_sender_that_skips_the_safeguards_is_refused_at_the_recipient(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """Her location released to one institution, sent to another: refused there, audited."""
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        now = mx.ctx.now()
        document = route_case(case_ref=CASE_REF, node="MX", authority=COMAR, asked_at=now)
        created = await create_case(mx.ctx, authority=COMAR, document=document)
        await record_consent(
            mx.ctx,
            consent_draft(
                case_ref=CASE_REF,
                node="MX",
                authority=COMAR,
                recipients=[{"country": "GT"}],
                valid_until=now.replace(year=now.year + 1),
            ),
        )
        steps = (
            ("identification", identification_step()),
            ("primary_assistance", primary_assistance_step()),
            ("risk_assessment", risk_assessment_step()),
            (
                "durable_solution",
                durable_solution_step(
                    location_released_to=[{"country": "GT", "authority": PROTECTION}]
                ),
            ),
        )
        for step, content in steps:
            await record_step(
                mx.ctx, created.case_id, step=step, authority=COMAR, content=content,
                country_of_origin="GT" if step == "identification" else None,
            )  # fmt: skip
        preview = await preview_disclosure(
            mx.ctx,
            case=created.case_id,
            doc_type="protection_handoff",
            purpose="protection_referral",
            recipient_node="GT",
            recipient_authority=PROTECTION,
        )
        assert preview.ok and "location" in preview.document["critical_route"]["durable_solution"]
        # A faulty sender queues what was planned for one institution to another one.
        row = await queue_disclosure(
            mx.ctx,
            sender_authority=COMAR,
            recipient_node="GT",
            recipient_authority="gt-proteccion-norte",
            doc_type="protection_handoff",
            body=copy.deepcopy(dict(preview.document)),
            terms=preview.plan.terms,
        )
        await mx.deliverer.run_once()
        async with mx.ctx.sessions() as session:
            stored = (
                await session.execute(
                    select(Disclosure).where(Disclosure.message_id == row.message_id)
                )
            ).scalar_one()
        assert (stored.state, stored.refusal_reason) == ("refused", "location_not_released")
        refused = events(await audit_entries(gt.ctx), "envelope.refused")
        assert [e["reason"] for e in refused] == ["location_not_released"]


async def test_the_demo_route_story_on_three_nodes(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, DEMO_NODES, deliver=True) as nodes:
        contexts = {node_id: node.ctx for node_id, node in nodes.items()}
        out = io.StringIO()
        assert await tell_route_story(contexts, out, patience=60), out.getvalue()
        story = out.getvalue()
        assert "refused: risk_assessment_missing" in story
        assert "refused: voluntary_return_choice_missing" in story
        assert "refused: origin_recipient_not_protection" in story
        assert "stage: handed_off" in story
        gt, mx = nodes["GT"], nodes["MX"]
        officer = await user_token(gt.ctx, "ines.proteccion", "reception_officer", PROTECTION)
        caseworker = await user_token(mx.ctx, "juan.inm", "caseworker", "mx-inm")
        async with running_api(gt.ctx), api_client(gt.ctx, officer) as client:
            status, page = await client.call("GET", "/api/v1/inbox")
            assert status == 200
            assert [i["doc_type"] for i in page["items"]] == ["protection_handoff"]
            status, opened = await client.call("GET", f"/api/v1/inbox/{page['items'][0]['id']}")
        assert status == 200 and not opened["erased"]
        assert opened["withheld"] == [{"field": LOCATION, "reason": "withheld_for_safety"}]
        assert "location" not in opened["summary"]["critical_route"]["durable_solution"]
        viewed = events(await audit_entries(gt.ctx), "summary.viewed")
        assert [e["user"] for e in viewed] == ["protection.gt", "ines.proteccion"]
        async with running_api(mx.ctx), api_client(mx.ctx, caseworker) as client:
            status, cases = await client.call("GET", "/api/v1/cases")
            (held,) = [c for c in cases["items"] if c["case_ref"].startswith("MX-RUTA-")]
            status, view = await client.call("GET", f"/api/v1/cases/{held['case_id']}/route")
        assert (status, view["stage"]) == (200, "handed_off")
        assert [(s["step"], s["authority"]) for s in view["steps"]] == [
            ("identification", "mx-inm"),
            ("primary_assistance", "mx-inm"),
            ("risk_assessment", "mx-comar"),
            ("durable_solution", "mx-comar"),
        ]
        assert {h["doc_type"] for h in view["critical_route"]["handoffs"]} == {
            "protection_handoff",
            "return_notice",
        }


async def test_the_route_view_takes_its_handoffs_from_the_outbox_only(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """A case recorded with handoffs of its own (an import, a mistake) is not handed off by it."""
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        mx = nodes["MX"]
        now = mx.ctx.now()
        document = route_case(case_ref=CASE_REF, node="MX", authority=COMAR, asked_at=now)
        stamp = {"node": "MX", "authority": COMAR}
        when = now.isoformat().replace("+00:00", "Z")
        document["critical_route"] = {
            "country_of_origin": "GT",
            "identification": {**identification_step(), "identified_at": when, **stamp},
            "risk_assessment": {**risk_assessment_step(), "assessed_at": when, **stamp},
            "durable_solution": {**durable_solution_step(), "chosen_at": when, **stamp},
            "handoffs": [
                {
                    "doc_type": "protection_handoff",
                    "country": "GT",
                    "authority": PROTECTION,
                    "message_id": "00000000-0000-4000-8000-000000000001",
                    "sent_at": when,
                    "receipt_at": when,
                }
            ],
        }
        created = await create_case(mx.ctx, authority=COMAR, document=document)
        view = await route_view(mx.ctx, created.case_id)
        assert view.status.stage == "solution_chosen"
        assert "handoffs" not in view.route
        assert view.status.missing == ("primary_assistance", "handoff")
