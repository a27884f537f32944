"""Helpers for delivery tests: queue notices, read both ends, check exactly-once.

``check_exactly_once`` is the one verdict every delivery fault test ends
with: each queued disclosure was received once, receipted, and both audit
logs say so; nothing else was received.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from node.core.clock import utcnow
from node.delivery.outbox import queue_disclosure
from node.demo.synthetic import return_notice
from node.storage.context import NodeContext
from node.storage.models import AuditEntry, Disclosure, ReceivedMessage
from node.wire.receipts import verify_receipt


class MovableClock:
    """Real time plus an offset a test can push forward (in-process nodes)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += dt.timedelta(**delta)


async def queue_notices(
    sender: NodeContext,
    count: int,
    *,
    to: str = "GT",
    authority: str | None = None,
    ttl: dt.timedelta | None = None,
    seed: int = 4,
) -> list[str]:
    """Queue ``count`` synthetic return notices; their message ids in queue order."""
    rng = random.Random(seed)  # synthetic data, not security
    authority = authority or f"{to.lower()}-reception"
    ids = []
    for serial in range(count):
        notice = return_notice(rng, destination=to, today=sender.now().date(), serial=serial + 1)
        row = await queue_disclosure(
            sender,
            sender_authority="mx-inm",
            recipient_node=to,
            recipient_authority=authority,
            doc_type="return_notice",
            body=notice,
            ttl=ttl,
        )
        ids.append(row.message_id)
    return ids


async def states(sender: NodeContext) -> Counter[str]:
    async with sender.sessions() as session:
        rows = await session.execute(
            select(Disclosure.state, func.count()).group_by(Disclosure.state)
        )
        return Counter({state: int(n) for state, n in rows.all()})


async def delivered_count(sender: NodeContext) -> int:
    return (await states(sender))["delivered"]


async def disclosures(sender: NodeContext, ids: Sequence[str] | None = None) -> list[Disclosure]:
    query = select(Disclosure).order_by(Disclosure.created_at, Disclosure.message_id)
    if ids is not None:
        query = query.where(Disclosure.message_id.in_(ids))
    async with sender.sessions() as session:
        return list((await session.execute(query)).scalars())


async def received_ids(recipient: NodeContext, sender: str = "MX") -> list[str]:
    """Message ids the recipient stored from ``sender``, in the order it stored them."""
    async with recipient.sessions() as session:
        rows = await session.execute(
            select(ReceivedMessage.message_id)
            .where(ReceivedMessage.sender_node == sender)
            .order_by(ReceivedMessage.id)
        )
        return [r[0] for r in rows.all()]


async def audit_entries(ctx: NodeContext) -> list[dict[str, Any]]:
    async with ctx.sessions() as session:
        rows = (await session.execute(select(AuditEntry.entry).order_by(AuditEntry.seq))).all()
    return [json.loads(r[0]) for r in rows]


@dataclass(frozen=True)
class Verdict:
    received: int
    duplicates_answered: int  # retries the recipient answered with the stored receipt


async def check_exactly_once(
    sender: NodeContext, recipient: NodeContext, expected_ids: Sequence[str]
) -> Verdict:
    """Assert exactly-once delivery of ``expected_ids`` from ``sender`` to ``recipient``."""
    expected = set(expected_ids)
    assert len(expected) == len(expected_ids)
    received = await received_ids(recipient, sender.node_id)
    assert len(received) == len(set(received)), "a message id was stored twice"
    assert set(received) == expected, (
        f"missing {len(expected - set(received))}, unexpected {len(set(received) - expected)}"
    )
    rows = await disclosures(sender, list(expected))
    assert {r.state for r in rows} == {"delivered"}, Counter(r.state for r in rows)
    async with recipient.sessions() as session:
        stored = {
            m.message_id: m
            for m in (
                await session.execute(
                    select(ReceivedMessage).where(ReceivedMessage.sender_node == sender.node_id)
                )
            ).scalars()
        }
    for row in rows:
        assert row.receipt is not None
        receipt = verify_receipt(
            row.receipt,
            directory=sender.directory,
            expected_message_id=row.message_id,
            expected_recipient=recipient.node_id,
            expected_envelope_sha256=row.envelope_sha256,
        )
        kept = stored[row.message_id]
        assert kept.envelope_sha256 == row.envelope_sha256 == receipt.envelope_sha256
        assert kept.receipt == row.receipt, "the sender holds the receipt the recipient issued"

    sent_events = Counter((e["event"], e.get("message_id")) for e in await audit_entries(sender))
    got_events = Counter((e["event"], e.get("message_id")) for e in await audit_entries(recipient))
    for message_id in expected:
        assert sent_events[("disclosure.queued", message_id)] == 1
        assert sent_events[("disclosure.delivered", message_id)] == 1
        assert sent_events[("disclosure.refused", message_id)] == 0
        assert sent_events[("disclosure.expired", message_id)] == 0
        assert got_events[("envelope.received", message_id)] == 1
    received_events = {m for (event, m) in got_events if event == "envelope.received"}
    assert received_events == expected, "the recipient's audit log names exactly these"
    refused = [k for k in got_events if k[0] == "envelope.refused" and k[1] in expected]
    assert refused == [], f"the recipient refused some: {refused}"
    duplicates = sum(n for (event, _), n in got_events.items() if event == "envelope.duplicate")
    return Verdict(received=len(received), duplicates_answered=duplicates)
