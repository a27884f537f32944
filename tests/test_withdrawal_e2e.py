"""Three real nodes: a handoff to two recipients, consent withdrawn while one is offline.

Both recipients erase (the offline one when it comes back), both erasure
receipts reach the origin, the data is unreadable at both — backups of the
database included, since the data keys never were in it — and every step is
in the audit logs. On SQLite and PostgreSQL, over real mutual TLS.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from node.casework.consents import consent_status, withdraw_consent
from node.delivery.outbox import queue_disclosure
from node.intake.datakeys import DataKeyError, decrypt
from node.intake.evidence import export_evidence
from node.intake.retention import purge_expired
from node.intake.summaries import key_store, list_received, open_body
from node.rules.consent import Officer
from node.storage.consent_models import ReceivedSummary, SummaryKey
from node.storage.models import Disclosure, ReceivedMessage
from node.wire.envelope import open_envelope
from tests.support.cases import (
    CASE_SPECS,
    CONSULATE,
    MovableClock,
    audit_entries,
    events,
    handoff,
    new_case,
)
from tests.support.nodes import DatabaseFactory, LiveNode, live_federation, post_envelope

CASE_REF = "GT-CONS-2026-000042"
OFFICER = Officer("GT", CONSULATE, "officer-0042")


async def summaries(node: LiveNode) -> list[ReceivedSummary]:
    async with node.ctx.sessions() as session:
        return list(
            (await session.execute(select(ReceivedSummary).order_by(ReceivedSummary.id))).scalars()
        )


async def state_of(node: LiveNode, message_id: str) -> str:
    async with node.ctx.sessions() as session:
        row = await session.get(Disclosure, message_id)
        assert row is not None
        return row.state


async def test_withdrawal_reaches_both_recipients_and_both_erase(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(tmp_path, database_factory, CASE_SPECS, clock=clock) as nodes:
        gt, mx, hn = nodes["GT"], nodes["MX"], nodes["HN"]
        _, consent = await new_case(gt.ctx, CASE_REF)
        to_mx = await handoff(gt.ctx, CASE_REF, "MX", "mx-comar")
        to_hn = await handoff(gt.ctx, CASE_REF, "HN", "hn-protection")
        assert await gt.deliverer.run_once() == 2

        # Each recipient holds the summary only encrypted, under its own data key.
        backups = {}
        for node, sent in ((mx, to_mx), (hn, to_hn)):
            (row,) = await summaries(node)
            assert row.message_id == sent.message_id and row.consent_id == consent.consent_id
            async with node.ctx.sessions() as session:
                received = await session.get(ReceivedMessage, row.received_message_id)
            assert received is not None
            assert received.body is None and received.envelope is None, "nothing in clear"
            assert open_body(key_store(node.ctx), row) == dict(sent.preview.document)
            envelope = decrypt(
                key_store(node.ctx).get(row.data_key_id),
                row.envelope_ciphertext or b"",
                context=f"puente/summary/GT/{row.message_id}/envelope",
            )
            opened = open_envelope(
                envelope,
                own_node=node.node_id,
                own_encryption_keys=node.ctx.keys.encryption,
                directory=node.ctx.directory,
                now=node.ctx.now(),
            )
            assert opened.message.terms is not None
            assert opened.message.terms["consent"]["id"] == consent.consent_id
            # What a database backup taken now would hold: ciphertext, never the key.
            backups[node.node_id] = (row.data_key_id, row.body_ciphertext, row.message_id)

        # A third disclosure is still waiting in the outbox when she withdraws.
        waiting = await handoff(gt.ctx, CASE_REF, "MX", "mx-inm")
        await hn.stop()
        outcome = await withdraw_consent(gt.ctx, consent.consent_id, by=OFFICER)
        assert outcome.stopped == (waiting.message_id,)
        assert await state_of(gt, waiting.message_id) == "withdrawn"
        assert len(outcome.notices) == 3  # MX/mx-comar, MX/mx-inm, HN/hn-protection

        await gt.deliverer.run_once()  # MX gets its withdrawals; HN is down
        assert await state_of(gt, waiting.message_id) == "withdrawn", "never sent"
        await mx.deliverer.run_once()  # MX's erasure receipts go back to GT
        status = await consent_status(gt.ctx, consent.consent_id)
        confirmed = {(e.node, e.authority): e for e in status.erasures}
        assert confirmed["MX", "mx-comar"].confirmed_at is not None
        assert confirmed["MX", "mx-comar"].erased == (to_mx.message_id,)
        assert confirmed["MX", "mx-inm"].not_held == (waiting.message_id,)
        assert confirmed["HN", "hn-protection"].confirmed_at is None
        assert not status.all_confirmed

        # HN comes back; GT's outbox retries the withdrawal once its backoff passes.
        clock.advance(dt.timedelta(hours=2))
        await hn.start()
        await gt.deliverer.run_once()
        await hn.deliverer.run_once()
        status = await consent_status(gt.ctx, consent.consent_id)
        assert status.all_confirmed
        assert status.effective_status == "withdrawn"
        confirmed = {(e.node, e.authority): e for e in status.erasures}
        assert confirmed["HN", "hn-protection"].erased == (to_hn.message_id,)

        # Unreadable at both: no key anywhere, so neither the rows nor the backup open.
        for node in (mx, hn):
            (row,) = await summaries(node)
            assert row.erased_at is not None and row.erasure_reason == "consent_withdrawn"
            assert row.body_ciphertext is None and row.envelope_ciphertext is None
            key_id, backup_ciphertext, message_id = backups[node.node_id]
            with pytest.raises(DataKeyError):
                key_store(node.ctx).get(key_id)
            assert not (node.ctx.config.keys_dir / "summaries" / f"{key_id}.key").exists()
            with pytest.raises(DataKeyError):
                open_body(key_store(node.ctx), row)
            async with node.ctx.sessions() as session:
                key_row = await session.get(SummaryKey, key_id)
            assert key_row is not None and key_row.destroyed_reason == "consent_withdrawn"
            assert backup_ciphertext is not None
            assert [s.body for s in await list_received(node.ctx, CASE_REF)] == [None]
            # Evidence keeps the digest and the receipt of the erased summary, no bytes.
            exported = await export_evidence(node.ctx, tmp_path / f"evidence-{node.node_id}")
            assert exported >= 1
            index = (tmp_path / f"evidence-{node.node_id}" / "index.json").read_text()
            assert '"erased": true' in index
            assert not (
                tmp_path / f"evidence-{node.node_id}" / "messages" / "GT" / f"{message_id}.jwe"
            ).exists()

        # All of it is in the audit logs, with ids and codes only.
        gt_log = await audit_entries(gt.ctx)
        assert len(events(gt_log, "consent.given")) == 1
        assert len(events(gt_log, "consent.withdrawn")) == 1
        assert [e["message_id"] for e in events(gt_log, "disclosure.withdrawn")] == [
            waiting.message_id
        ]
        assert len(events(gt_log, "erasure.confirmed")) == 3
        queued = events(gt_log, "disclosure.queued")
        handoffs = [e for e in queued if e["doc_type"] == "case_handoff"]
        assert all(e["consent_id"] == consent.consent_id for e in handoffs)
        assert all(e["legal_basis"] == "consent" for e in handoffs)
        assert all(e["policy_id"] == "puente.case-handoff" for e in handoffs)
        for node in (mx, hn):
            log = await audit_entries(node.ctx)
            erased = events(log, "summary.erased")
            assert len(erased) == 1
            assert erased[0]["method"] == "crypto-shredding: data key destroyed"
            assert erased[0]["consent_id"] == consent.consent_id
            arrivals = events(log, "envelope.received")
            assert {e["doc_type"] for e in arrivals} >= {"case_handoff", "consent_withdrawal"}
        for node in nodes.values():
            text = str(await audit_entries(node.ctx))
            assert "Ana Lucía" not in text and CASE_REF not in text


async def test_a_summary_arriving_after_the_withdrawal_is_refused(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        _, consent = await new_case(gt.ctx, CASE_REF)
        sent = await handoff(gt.ctx, CASE_REF, "MX", "mx-comar")
        await gt.deliverer.run_once()
        await withdraw_consent(gt.ctx, consent.consent_id, by=OFFICER)
        await gt.deliverer.run_once()
        # A misbehaving or delayed sender replays the same terms under a new message id.
        late = await queue_disclosure(
            gt.ctx,
            sender_authority=CONSULATE,
            recipient_node="MX",
            recipient_authority="mx-comar",
            doc_type="case_handoff",
            body=sent.preview.document,
            terms=sent.preview.plan.terms,
        )
        await gt.deliverer.run_once()
        async with gt.ctx.sessions() as session:
            row = await session.get(Disclosure, late.message_id)
        assert row is not None
        assert (row.state, row.refusal_reason) == ("refused", "consent_withdrawn")
        refused = events(await audit_entries(mx.ctx), "envelope.refused")
        assert [e["reason"] for e in refused] == ["consent_withdrawn"]


async def test_retention_purges_summaries_automatically(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(tmp_path, database_factory, CASE_SPECS, clock=clock) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        await new_case(gt.ctx, CASE_REF)
        to_inm = await handoff(gt.ctx, CASE_REF, "MX", "mx-inm")
        to_comar = await handoff(gt.ctx, CASE_REF, "MX", "mx-comar")
        await gt.deliverer.run_once()
        # The GT-MX agreement keeps migration authorities' copies 30 days; the policy
        # keeps a protection agency's 365.
        assert to_inm.preview.plan.retain_until == clock.now + dt.timedelta(days=30)
        assert to_comar.preview.plan.retain_until == clock.now + dt.timedelta(days=365)
        assert await purge_expired(mx.ctx) == 0
        clock.advance(dt.timedelta(days=31))
        assert await purge_expired(mx.ctx) == 1
        rows = {r.message_id: r for r in await summaries(mx)}
        assert rows[to_inm.message_id].erasure_reason == "retention_expired"
        assert rows[to_comar.message_id].erased_at is None
        assert open_body(key_store(mx.ctx), rows[to_comar.message_id])["case_ref"] == CASE_REF
        purged = events(await audit_entries(mx.ctx), "retention.purged")
        assert [e["message_id"] for e in purged] == [to_inm.message_id]
        assert purged[0]["policy_id"] == "puente.case-handoff"
        clock.advance(dt.timedelta(days=400))
        assert await purge_expired(mx.ctx) == 1
        assert await purge_expired(mx.ctx) == 0


async def test_over_disclosure_is_refused_by_the_recipient(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """A sender that skips minimization: the recipient refuses, audits, stores nothing."""
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        await new_case(gt.ctx, CASE_REF)
        sent = await handoff(gt.ctx, CASE_REF, "MX", "mx-inm")
        plan = sent.preview.plan
        assert "interview.identification_indicators" in sent.preview.withheld
        bloated = dict(sent.preview.document)
        bloated["interview"] = {
            **bloated["interview"],
            "identification_indicators": ["fear_of_return"],
        }
        forged = await queue_disclosure(
            gt.ctx,
            sender_authority=CONSULATE,
            recipient_node="MX",
            recipient_authority="mx-inm",
            doc_type="case_handoff",
            body=bloated,
            terms=plan.terms,
        )
        await gt.deliverer.run_once()
        async with gt.ctx.sessions() as session:
            row = await session.get(Disclosure, forged.message_id)
        assert row is not None
        assert (row.state, row.refusal_reason) == ("refused", "over_disclosure")
        assert [s.message_id for s in await summaries(mx)] == [sent.message_id]
        refused = events(await audit_entries(mx.ctx), "envelope.refused")
        assert [(e["reason"], e["message_id"]) for e in refused] == [
            ("over_disclosure", forged.message_id)
        ]

        # And directly over HTTP: the answer is problem+json with the reason code.
        from node.core.schemas import CASE_HANDOFF
        from node.wire.envelope import Message, Party, seal

        now = gt.ctx.now()
        message = Message(
            message_id="6a4b1f0e-2c3d-4e5f-8a9b-0c1d2e3f4a5b",
            sender=Party("GT", CONSULATE),
            recipient=Party("MX", "mx-inm"),
            doc_type="case_handoff",
            schema=CASE_HANDOFF,
            issued_at=int(now.timestamp()),
            expires_at=int((now + dt.timedelta(hours=1)).timestamp()),
            body=bloated,
            terms=plan.terms,
        )
        peer = gt.ctx.directory.node("MX")
        assert peer is not None
        envelope = seal(
            message, signing_key=gt.ctx.keys.signing, recipient_key=peer.current_encryption_key
        )
        status, media, problem = await post_envelope(gt, mx, envelope.encode())
        assert (status, media, problem["reason"]) == (
            422,
            "application/problem+json",
            "over_disclosure",
        )
        assert "interview.identification_indicators" in problem["detail"]
        assert "fear_of_return" not in problem["detail"], "names fields, never values"
