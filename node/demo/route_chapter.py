"""The demo's critical-route chapter: identified in MX, assessed, returning to GT by her choice.

A (synthetic) Guatemalan woman is identified by Mexico's migration institute as
a presumed victim of trafficking and given primary assistance; Mexico's
refugee commission assesses the risk of her return (danger from traffickers in
Guatemala) and records her informed, voluntary choice of return. Her consent is
deliberately broad — every Guatemalan recipient, every category — to show that
it overrides none of the route's safeguards: before the assessment and her
choice nothing goes to Guatemala, her consulate there is refused, and her
location stays home. The protection handoff goes to Guatemala's victims'
institute, whose officer sees it with the location marked as withheld
(docs/critical-route.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, TextIO

from node.casework.cases import create_case
from node.casework.consents import record_consent
from node.casework.disclose import disclose, preview_disclosure
from node.casework.route import RouteView, record_step, route_view
from node.delivery.outbox import DisclosureRefused
from node.demo.consent_chapter import print_preview, wait_while
from node.demo.synthetic_cases import (
    consent_draft,
    durable_solution_step,
    identification_step,
    primary_assistance_step,
    risk_assessment_step,
    route_case,
)
from node.intake import inbox
from node.rules.consent import CATEGORIES
from node.storage.context import NodeContext

INM, COMAR = "mx-inm", "mx-comar"
PROTECTION = "gt-proteccion-victimas"
RECEPTION = "gt-reception-la-aurora"
CONSULATE = "gt-consulado-tapachula"
PROTECTION_OFFICER = "protection.gt"  # node.demo.users


def _to_gt(doc_type: str, purpose: str, authority: str) -> dict[str, Any]:
    """What COMAR sends to one Guatemalan authority (for disclose and preview_disclosure)."""
    return {
        "doc_type": doc_type,
        "purpose": purpose,
        "recipient_node": "GT",
        "recipient_authority": authority,
        "sender_authority": COMAR,
    }


def _stage(view: RouteView, out: TextIO) -> None:
    missing = ", ".join(view.status.missing) or "nothing"
    print(f"    stage: {view.status.stage}; still missing: {missing}", file=out)


async def _try_handoff(mx: NodeContext, case_id: str, out: TextIO) -> str | None:
    """Preview the protection handoff to GT; the refusal's reason code, or None."""
    preview = await preview_disclosure(
        mx, case=case_id, **_to_gt("protection_handoff", "protection_referral", PROTECTION)
    )
    refusal = preview.plan.refusal
    said = f"refused: {refusal.reason}" if refusal else "would go"
    print(f"    a protection handoff to GT/{PROTECTION} now: {said}", file=out)
    return refusal.reason if refusal else None


async def tell_route_story(
    contexts: Mapping[str, NodeContext], out: TextIO, patience: float
) -> bool:
    """Identify, assist, assess, record her choice, hand off; the officer's view at GT."""
    mx, gt = contexts["MX"], contexts["GT"]
    now = mx.now()
    case_ref = f"MX-RUTA-{now:%Y%m%d}-{now:%H%M%S}"
    print("\n== The regional critical route: returning only by her own choice ==", file=out)
    document = route_case(case_ref=case_ref, node="MX", authority=INM, asked_at=now)
    case = await create_case(mx, authority=INM, document=document)
    await record_consent(
        mx,
        consent_draft(
            case_ref=case_ref,
            node="MX",
            authority=INM,
            officer="inm-officer-03",
            purposes=("protection_referral", "reception_on_return", "consular_assistance"),
            recipients=({"country": "GT"},),
            categories=CATEGORIES,
            valid_until=now + dt.timedelta(days=180),
            language="mam",
            interpreter=True,
        ),
    )
    print(
        f"MX's migration institute interviewed her in Mam with an interpreter: case {case_ref}. "
        "She consented broadly (every GT recipient, every category): the route's safeguards "
        "do not depend on it.",
        file=out,
    )
    expected: list[tuple[str | None, str | None]] = []
    print("  1 identified as a presumed victim of trafficking; 2 primary assistance", file=out)
    await record_step(
        mx,
        case.case_id,
        step="identification",
        authority=INM,
        content=identification_step(),
        country_of_origin="GT",
    )
    view = await record_step(
        mx,
        case.case_id,
        step="primary_assistance",
        authority=INM,
        content=primary_assistance_step(),
    )
    _stage(view, out)
    expected.append((await _try_handoff(mx, case.case_id, out), "risk_assessment_missing"))

    print("  3 COMAR assesses the risk of return: danger from traffickers in GT", file=out)
    view = await record_step(
        mx, case.case_id, step="risk_assessment", authority=COMAR, content=risk_assessment_step()
    )
    _stage(view, out)
    expected.append((await _try_handoff(mx, case.case_id, out), "voluntary_return_choice_missing"))

    print(
        "  4 informed in Mam (read aloud, interpreter) of return, refuge and resettlement, of "
        "the risk found and that she may refuse, she chooses return to GT; she wants the "
        "reception centre told of her arrival, and releases her location to nobody",
        file=out,
    )
    choice = durable_solution_step(
        origin_recipients=({"country": "GT", "authority_kind": "reception_centre"},)
    )
    view = await record_step(
        mx, case.case_id, step="durable_solution", authority=COMAR, content=choice
    )
    _stage(view, out)
    refused_consulate: str | None = None
    try:
        await disclose(
            mx, case=case.case_id, **_to_gt("case_handoff", "consular_assistance", CONSULATE)
        )
    except DisclosureRefused as refusal:
        refused_consulate = refusal.reason
    print(
        f"    a case handoff to her consulate (GT/{CONSULATE}), which her consent names: "
        f"refused: {refused_consulate} (audited)",
        file=out,
    )
    expected.append((refused_consulate, "origin_recipient_not_protection"))

    print("  5 handoff to the institutions of her country of return", file=out)
    handoff = await disclose(
        mx, case=case.case_id, **_to_gt("protection_handoff", "protection_referral", PROTECTION)
    )
    print_preview(handoff.preview, out)
    notice = await disclose(
        mx, case=case.case_id, **_to_gt("return_notice", "reception_on_return", RECEPTION)
    )
    location_withheld = any(
        reason == "withheld_for_safety" for reason in handoff.preview.withheld.values()
    )
    rows = await wait_while(
        mx, [handoff.message_id, notice.message_id], patience, ("queued", "sending")
    )
    delivered = all(r.state == "delivered" for r in rows)
    for row in rows:
        print(f"    {row.doc_type} -> GT/{row.recipient_authority}: {row.state}", file=out)
    view = await route_view(mx, case.case_id)
    _stage(view, out)

    marked = await _officer_view(gt, handoff.message_id, out)
    ok = (
        all(got == want for got, want in expected)
        and location_withheld
        and delivered
        and view.status.stage == "handed_off"
        and marked
    )
    print(f"  critical route: {'OK' if ok else 'FAILED'}", file=out)
    return ok


async def _officer_view(gt: NodeContext, message_id: str, out: TextIO) -> bool:
    """GT's protection officer opens the handoff (an audited view): her location is withheld."""
    page = await inbox.list_inbox(gt, PROTECTION, doc_type="protection_handoff")
    item = next((i for i in page.items if i.message_id == message_id), None)
    if item is None:
        print(f"    NOT in the inbox of GT/{PROTECTION}", file=out)
        return False
    item, document = await inbox.view_item(
        gt, authority=PROTECTION, username=PROTECTION_OFFICER, item_id=item.id
    )
    withheld = await inbox.withheld_for_safety(gt, item, document)
    route = (document or {}).get("critical_route", {})
    danger = ", ".join(route.get("risk_assessment", {}).get("danger_from", []))
    measures = ", ".join(route.get("risk_assessment", {}).get("measures_on_return", []))
    print(
        f"    GT's protection officer ({PROTECTION_OFFICER}) opens it: arrival "
        f"{(document or {}).get('arrival', {}).get('date')}, danger from {danger}; measures "
        f"to have in place: {measures}",
        file=out,
    )
    for field in withheld:
        print(f"      {field['field']}: WITHHELD ({field['reason']})", file=out)
    return bool(withheld) and "location" not in route.get("durable_solution", {})
