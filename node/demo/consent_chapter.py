"""The demo's consent chapter: a handoff from a consulate, its preview, a withdrawal, erasure.

Guatemala's consulate in Tapachula interviews a (synthetic) Guatemalan woman in
Mam with an interpreter; she agrees that Mexico's refugee commission and
migration authority receive what each needs for her protection. The
caseworker previews each handoff (what goes, what stays and why), sends
both, then she withdraws: both recipients crypto-shred their copies and send
signed erasure receipts back. The demo process writes to the nodes'
databases through open_node; the node processes deliver.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import textwrap
import time
from collections.abc import Mapping
from typing import TextIO

from sqlalchemy import select

from node.casework.cases import create_case
from node.casework.consents import ConsentStatus, consent_status, record_consent, withdraw_consent
from node.casework.disclose import Preview, disclose
from node.demo.synthetic_cases import consent_draft, interviewed_case
from node.rules.consent import CATEGORIES, Officer
from node.storage.consent_models import ReceivedSummary
from node.storage.context import NodeContext
from node.storage.models import Disclosure, ReceivedMessage

CONSULATE = "gt-consulado-tapachula"
RECIPIENTS = (("MX", "mx-comar"), ("MX", "mx-inm"))


def _wrapped(label: str, items: list[str], out: TextIO) -> None:
    text = ", ".join(items) if items else "(none)"
    lines = textwrap.wrap(
        text, width=max(40, 96 - len(label)), break_long_words=False, break_on_hyphens=False
    )
    print(f"      {label}{lines[0]}", file=out)
    for line in lines[1:]:
        print(f"      {' ' * len(label)}{line}", file=out)


def print_preview(preview: Preview, out: TextIO) -> None:
    """What the caseworker sees before sending: what goes, what stays and why."""
    plan = preview.plan
    rule = plan.rule
    where = f"{plan.recipient.node}/{plan.recipient.authority} ({plan.recipient.kind})"
    policy = f"{rule.policy.policy_id} {rule.policy.version}" if rule else "-"
    narrowed = ", ".join(a.agreement_id for a in rule.agreements) if rule else ""
    print(f"\n  preview of the {plan.doc_type} to {where}", file=out)
    print(
        f"    policy {policy}{'; narrowed by ' + narrowed if narrowed else ''}; "
        f"retain until {plan.retain_until.date() if plan.retain_until else '-'}",
        file=out,
    )
    _wrapped(f"sent ({len(preview.sent_fields)}): ", list(preview.sent_fields), out)
    by_reason: dict[str, list[str]] = {}
    for path, reason in sorted(preview.withheld.items()):
        by_reason.setdefault(reason, []).append(path)
    for reason, paths in sorted(by_reason.items()):
        _wrapped(f"withheld, {reason} ({len(paths)}): ", paths, out)


async def wait_while(
    ctx: NodeContext, ids: list[str], patience: float, states: tuple[str, ...]
) -> list[Disclosure]:
    """The disclosures ``ids`` once none is in ``states`` any more (or patience ran out)."""
    deadline = time.monotonic() + patience
    while True:
        async with ctx.sessions() as session:
            rows = list(
                (
                    await session.execute(select(Disclosure).where(Disclosure.message_id.in_(ids)))
                ).scalars()
            )
        if all(r.state not in states for r in rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def _wait_confirmed(gt: NodeContext, consent_id: str, patience: float) -> ConsentStatus:
    deadline = time.monotonic() + patience
    while True:
        status = await consent_status(gt, consent_id)
        if status.all_confirmed or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.2)


async def _held_encrypted(mx: NodeContext, message_id: str) -> bool:
    async with mx.sessions() as session:
        summary = (
            await session.execute(
                select(ReceivedSummary).where(ReceivedSummary.message_id == message_id)
            )
        ).scalar_one_or_none()
        received = (
            await session.get(ReceivedMessage, summary.received_message_id) if summary else None
        )
    return (
        summary is not None
        and summary.body_ciphertext is not None
        and received is not None
        and received.body is None
        and received.envelope is None
    )


async def tell_consent_story(
    contexts: Mapping[str, NodeContext], out: TextIO, patience: float
) -> bool:
    """Create, consent, preview, send, withdraw, and wait for both erasure receipts."""
    gt, mx = contexts["GT"], contexts["MX"]
    now = gt.now()
    case_ref = f"GT-CONS-{now:%Y%m%d}-{now:%H%M%S}"
    print("\n== Consent, minimization and erasure ==", file=out)
    document = interviewed_case(
        case_ref=case_ref,
        node="GT",
        authority=CONSULATE,
        asked_at=now,
        language="mam",
        interpreter=True,
    )
    case = await create_case(gt, authority=CONSULATE, document=document)
    print(
        f"GT's consulate in Tapachula interviewed her in Mam with an interpreter: case {case_ref},"
        f" {len(document['interview']['coverage'])} interview topics covered",
        file=out,
    )
    categories = [c for c in CATEGORIES if c != "risk_assessment"]
    consent = await record_consent(
        gt,
        consent_draft(
            case_ref=case_ref,
            node="GT",
            authority=CONSULATE,
            officer="consular-officer-12",
            purposes=("protection_referral",),
            recipients=({"country": "MX", "authority_kind": "protection_agency"},
                        {"country": "MX", "authority_kind": "migration_authority"}),
            categories=categories,
            valid_until=now + dt.timedelta(days=180),
            language="mam",
            interpreter=True,
        ),
    )  # fmt: skip
    print(
        f"She consented (read aloud in Mam, interpreter present; signed form digest "
        f"{'5' * 8}…): consent {consent.consent_id}",
        file=out,
    )
    print(
        "  purposes: protection_referral; recipients: MX protection agencies and migration "
        "authority; every category but risk_assessment; valid 180 days",
        file=out,
    )
    sent = []
    for node, authority in RECIPIENTS:
        result = await disclose(
            gt,
            case=case.case_id,
            doc_type="case_handoff",
            purpose="protection_referral",
            recipient_node=node,
            recipient_authority=authority,
            user="consular-officer-12",
        )
        print_preview(result.preview, out)
        sent.append(result.message_id)
    rows = await wait_while(gt, sent, patience, ("queued", "sending"))
    ok = True
    print("", file=out)
    for row in rows:
        encrypted = await _held_encrypted(mx, row.message_id)
        ok = ok and row.state == "delivered" and encrypted
        print(
            f"  handoff {row.message_id} -> {row.recipient_node}/{row.recipient_authority}: "
            f"{row.state}; at MX held only encrypted under its own data key: "
            f"{'yes' if encrypted else 'NO'}",
            file=out,
        )

    outcome = await withdraw_consent(
        gt, consent.consent_id, by=Officer("GT", CONSULATE, "consular-officer-12")
    )
    print(
        f"\nShe withdraws her consent. GT stops what has not left ({len(outcome.stopped)}) and "
        f"sends {len(outcome.notices)} signed withdrawal(s).",
        file=out,
    )
    status = await _wait_confirmed(gt, consent.consent_id, patience)
    for erasure in status.erasures:
        confirmed = (
            f"signed erasure receipt from {erasure.node}: erased {', '.join(erasure.erased)} at "
            f"{erasure.confirmed_at.isoformat()} (crypto-shredding: data key destroyed)"
            if erasure.confirmed_at
            else "NO ERASURE RECEIPT YET"
        )
        print(f"  {erasure.node}/{erasure.authority}: {confirmed}", file=out)
    for message_id in sent:
        if await _held_encrypted(mx, message_id):
            ok = False
            print(f"  {message_id} STILL READABLE at MX", file=out)
    ok = ok and status.all_confirmed
    print(
        f"  consent {consent.consent_id}: {status.effective_status}; "
        f"{sum(1 for e in status.erasures if e.confirmed_at)}/{len(status.erasures)} "
        f"recipients confirmed erasure. {'OK' if ok else 'FAILED'}",
        file=out,
    )
    return ok
