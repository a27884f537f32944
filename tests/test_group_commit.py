"""Group commit of sends: many caseworkers at once share transactions, each judged alone."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from sqlalchemy import select

from node.auditlog import entries as audit
from node.casework.consents import narrow_consent
from node.casework.disclose import preview_disclosure, send_preview
from node.delivery.outbox import DisclosureRefused
from node.rules.consent import Officer
from node.storage.consent_models import CaseDisclosure
from node.storage.context import NodeContext
from node.storage.models import AuditEntry, Disclosure
from tests.support.cases import CASE_SPECS, CONSULATE, MovableClock, new_case
from tests.support.nodes import DatabaseFactory, live_federation

SENDS = 24
OFFICER = Officer("GT", CONSULATE, "officer-7")


async def test_concurrent_sends_commit_together_and_a_stale_one_alone_is_refused(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(tmp_path, database_factory, CASE_SPECS, clock=clock) as nodes:
        gt = nodes["GT"]
        cases = [
            await new_case(gt.ctx, f"GT-TEST-{700 + i:06d}", recipients=[{"country": "MX"}])
            for i in range(SENDS)
        ]
        previews = [
            await preview_disclosure(
                gt.ctx,
                case=case.case_ref,
                doc_type="case_handoff",
                purpose="protection_referral",
                recipient_node="MX",
                recipient_authority="mx-comar",
            )
            for case, _ in cases
        ]
        # One consent is narrowed after its preview: that send alone must fail.
        _, stale_consent = cases[SENDS // 2]
        await narrow_consent(
            gt.ctx,
            stale_consent.consent_id,
            dataclasses.replace(stale_consent.scope, share_back=False),
            by=OFFICER,
        )
        before = await _audit_size(gt.ctx)
        outcomes = await asyncio.gather(
            *(send_preview(gt.ctx, preview) for preview in previews), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(refused) == 1
        assert isinstance(refused[0], DisclosureRefused) and refused[0].reason == "preview_stale"
        assert isinstance(outcomes[SENDS // 2], DisclosureRefused)
        sent = [o.message_id for o in outcomes if not isinstance(o, BaseException)]
        assert len(sent) == SENDS - 1
        # They shared transactions: far fewer commits than sends.
        assert gt.ctx.group_commits["disclose"].transactions < SENDS // 2

        async with gt.ctx.sessions() as session:
            queued = set((await session.execute(select(Disclosure.message_id))).scalars())
            records = set((await session.execute(select(CaseDisclosure.message_id))).scalars())
            entries = [
                json.loads(e)
                for e in (
                    await session.execute(select(AuditEntry.entry).where(AuditEntry.seq >= before))
                ).scalars()
            ]
            assert await audit.first_damaged_entry(session) is None
        # Every accepted send is queued with its terms record and one audit entry; the
        # refused one left nothing behind.
        assert queued == set(sent) and records == set(sent)
        logged = [e["message_id"] for e in entries if e["event"] == "disclosure.queued"]
        assert sorted(logged) == sorted(sent)


async def _audit_size(ctx: NodeContext) -> int:
    async with ctx.sessions() as session:
        return await audit.log_size(session)
