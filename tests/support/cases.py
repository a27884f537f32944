"""Nodes, a movable clock and helpers for case, consent and disclosure tests.

The federation: Guatemala's consulate in Tapachula interviews a Guatemalan
woman (GT is the origin); Mexico has a protection agency and a migration
authority, Honduras a protection agency and a reception centre.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from node.auditlog import entries as audit
from node.casework.cases import Case, create_case
from node.casework.consents import record_consent
from node.casework.disclose import Sent, disclose
from node.core.config import AuthorityConfig
from node.demo.local_federation import NodeSpec
from node.demo.synthetic_cases import consent_draft, interviewed_case
from node.rules.consent import ConsentRecord
from node.storage.context import NodeContext
from node.storage.models import AuditEntry

CONSULATE = "gt-consulado-tapachula"
GT_CASES = NodeSpec(
    "GT",
    "Guatemala (test)",
    (
        AuthorityConfig(CONSULATE, "consulate", {"es": "Consulado en Tapachula (prueba)"}),
        AuthorityConfig("gt-reception", "reception_centre", {"es": "Recepción GT (prueba)"}),
    ),
)
MX_CASES = NodeSpec(
    "MX",
    "México (test)",
    (
        AuthorityConfig("mx-comar", "protection_agency", {"es": "COMAR (prueba)"}),
        AuthorityConfig("mx-inm", "migration_authority", {"es": "INM (prueba)"}),
    ),
)
HN_CASES = NodeSpec(
    "HN",
    "Honduras (test)",
    (
        AuthorityConfig("hn-protection", "protection_agency", {"es": "Protección HN (prueba)"}),
        AuthorityConfig("hn-reception", "reception_centre", {"es": "Recepción HN (prueba)"}),
    ),
)
CASE_SPECS = (GT_CASES, MX_CASES, HN_CASES)
START = dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)


@dataclass
class MovableClock:
    """A clock every node of a test shares, moved forward by the test."""

    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


async def new_case(
    ctx: NodeContext,
    case_ref: str,
    *,
    recipients: list[dict[str, str]] | None = None,
    purposes: tuple[str, ...] = ("protection_referral",),
    **case_options: Any,
) -> tuple[Case, ConsentRecord]:
    """A case at GT's consulate with a recorded consent for the given recipients."""
    now = ctx.now()
    document = interviewed_case(
        case_ref=case_ref, node="GT", authority=CONSULATE, asked_at=now, **case_options
    )
    case = await create_case(ctx, authority=CONSULATE, document=document)
    consent = await record_consent(
        ctx,
        consent_draft(
            case_ref=case_ref,
            node="GT",
            authority=CONSULATE,
            purposes=purposes,
            recipients=recipients or [{"country": "MX"}, {"country": "HN"}],
            valid_until=now + dt.timedelta(days=180),
        ),
    )
    return case, consent


async def handoff(
    ctx: NodeContext, case_ref: str, recipient_node: str, recipient_authority: str
) -> Sent:
    """Send the case's handoff for a protection referral to one authority of one node."""
    return await disclose(
        ctx,
        case=case_ref,
        doc_type="case_handoff",
        purpose="protection_referral",
        recipient_node=recipient_node,
        recipient_authority=recipient_authority,
    )


async def audit_entries(ctx: NodeContext) -> list[dict[str, Any]]:
    """Every audit entry of a node, parsed, in order."""
    async with ctx.sessions() as session:
        rows = (await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars()
        return [json.loads(r.entry) for r in rows]


def events(entries: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["event"] == name]


__all__ = ["audit"]
