"""Batches of envelopes (node.wire.batch): one answer each, stored in order, over real mTLS."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from node.auditlog import entries as audit
from node.core.canonical import sha256_hex
from node.core.limits import MAX_BATCH_MESSAGES
from node.core.schemas import RETURN_NOTICE
from node.delivery.outbox import queue_disclosure
from node.storage.models import AuditEntry, Disclosure, ReceivedMessage
from node.wire.batch import (
    BATCH_PATH,
    MAX_BATCH_BYTES,
    BatchMalformed,
    encode_request,
    pack,
    parse_request,
)
from node.wire.envelope import Message, Party, seal
from node.wire.receipts import verify_receipt
from tests.support.nodes import DatabaseFactory, LiveNode, live_federation, peer_session

NOTICE = {
    "case_ref": "MX-TEST-2026-000077",
    "person": {"given_names": "Lucía Prueba", "family_names": "Ficticia", "age_estimate": 27},
    "arrival": {"date": "2026-12-01", "place_of_entry": "Puerto de prueba", "means": "land"},
    "immediate_needs": ["shelter"],
}


def sealed(sender: LiveNode, *, issued: dt.datetime | None = None) -> tuple[str, str]:
    """(message id, compact JWE) of a return notice from MX to GT."""
    now = issued or sender.ctx.now()
    message_id = str(uuid.uuid4())
    message = Message(
        message_id=message_id,
        sender=Party("MX", "mx-inm"),
        recipient=Party("GT", "gt-reception"),
        doc_type="return_notice",
        schema=RETURN_NOTICE,
        issued_at=int(now.timestamp()),
        expires_at=int((now + dt.timedelta(hours=1)).timestamp()),
        body=NOTICE,
    )
    peer = sender.ctx.directory.node("GT")
    assert peer is not None
    envelope = seal(
        message, signing_key=sender.ctx.keys.signing, recipient_key=peer.current_encryption_key
    )
    return message_id, envelope


async def post_batch(
    client: LiveNode, server: LiveNode, body: bytes, content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    async with (
        peer_session(client, server) as session,
        session.post(
            server.url + BATCH_PATH, data=body, headers={"Content-Type": content_type}
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def stored_order(node: LiveNode) -> list[str]:
    async with node.ctx.sessions() as session:
        rows = await session.execute(
            select(ReceivedMessage.message_id).order_by(ReceivedMessage.id)
        )
        return list(rows.scalars())


def test_pack_keeps_order_and_both_limits() -> None:
    sizes = [10] * 100 + [MAX_BATCH_BYTES - 5, 10, MAX_BATCH_BYTES, 1]
    batches = pack(sizes, max_messages=MAX_BATCH_MESSAGES)
    assert [i for batch in batches for i in batch] == list(range(len(sizes)))
    for batch in batches:
        assert 1 <= len(batch) <= MAX_BATCH_MESSAGES
        assert len(batch) == 1 or sum(sizes[i] for i in batch) <= MAX_BATCH_BYTES
    assert [len(b) for b in pack([5] * 10, max_messages=4)] == [4, 4, 2]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"messages": "x"}',
        b'{"messages": []}',
        b'{"messages": [1]}',
        b'{"messages": ["a"], "extra": 1}',
        json.dumps({"messages": ["a"] * (MAX_BATCH_MESSAGES + 1)}).encode(),
    ],
)
def test_a_malformed_batch_is_refused_with_a_reason(body: bytes) -> None:
    with pytest.raises(BatchMalformed) as refused:
        parse_request(body)
    assert refused.value.reason == "malformed_batch"


async def test_a_batch_is_stored_in_order_and_answered_item_by_item(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        good = [sealed(mx) for _ in range(6)]
        tampered = good[2][1][:-8] + ("A" * 8 if not good[2][1].endswith("A" * 8) else "B" * 8)
        envelopes = [e for _, e in good[:2]] + [tampered] + [e for _, e in good[2:]]
        status, answer = await post_batch(mx, gt, encode_request(envelopes))
        assert status == 200
        results = answer["results"]
        assert len(results) == len(envelopes)
        # The tampered one is refused alone, with its reason; the others are receipted.
        assert results[2]["status"] == 400 and results[2]["reason"] == "decryption_failed"
        receipted = [results[i] for i in (0, 1, 3, 4, 5, 6)]
        for (message_id, envelope), result in zip(good, receipted, strict=True):
            assert result["duplicate"] is False
            claims = verify_receipt(
                result["receipt"],
                directory=mx.ctx.directory,
                expected_message_id=message_id,
                expected_recipient="GT",
                expected_envelope_sha256=sha256_hex(envelope.encode("ascii")),
            )
            assert claims.message_id == message_id and claims.recipient.node == "GT"
        # Stored in batch order, each with its own audit entry, the refusal audited too.
        assert await stored_order(gt) == [m for m, _ in good]
        async with gt.ctx.sessions() as session:
            entries = [
                json.loads(e)
                for e in (
                    await session.execute(select(AuditEntry.entry).order_by(AuditEntry.seq))
                ).scalars()
            ]
            assert await audit.first_damaged_entry(session) is None
        events = [
            (e["event"], e.get("message_id")) for e in entries if e["event"] != "node.started"
        ]
        received = [m for event, m in events if event == "envelope.received"]
        assert received == [m for m, _ in good]
        assert ("envelope.refused", None) in events

        # The same batch again (an answer lost on the way): the same receipts, nothing new.
        status, again = await post_batch(mx, gt, encode_request(envelopes))
        assert status == 200
        for first, second in zip(results, again["results"], strict=True):
            if "receipt" in first:
                assert second["receipt"] == first["receipt"] and second["duplicate"] is True
            else:
                assert second["reason"] == first["reason"]
        assert await stored_order(gt) == [m for m, _ in good]


async def test_after_a_refusal_that_may_pass_the_rest_wait_untouched(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        first = sealed(mx)
        ahead = sealed(mx, issued=mx.ctx.now() + dt.timedelta(hours=1))  # GT's clock "behind"
        rest = [sealed(mx) for _ in range(3)]
        body = encode_request([first[1], ahead[1]] + [e for _, e in rest])
        status, answer = await post_batch(mx, gt, body)
        assert status == 200
        reasons = [r.get("reason") for r in answer["results"]]
        assert "receipt" in answer["results"][0]
        assert reasons[1:] == ["not_yet_valid", "not_processed", "not_processed", "not_processed"]
        assert all(r["status"] == 503 for r in answer["results"][2:])
        # Only what came before the refusal is stored: the sender resends the rest in order.
        assert await stored_order(gt) == [first[0]]


async def test_the_whole_batch_is_refused_for_a_wrong_media_type(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        status, answer = await post_batch(
            mx, gt, encode_request([sealed(mx)[1]]), content_type="text/plain"
        )
        assert status == 415 and answer["reason"] == "unsupported_media_type"
        status, answer = await post_batch(mx, gt, b'{"messages": []}')
        assert status == 400 and answer["reason"] == "malformed_batch"
        assert await stored_order(gt) == []


async def test_the_deliverer_sends_a_backlog_in_batches_in_order(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    delivery = {"messages_per_request": 8, "batch_size": 20}
    async with live_federation(tmp_path, database_factory, delivery=delivery) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        queued = []
        for _ in range(45):
            row = await queue_disclosure(
                mx.ctx,
                sender_authority="mx-inm",
                recipient_node="GT",
                recipient_authority="gt-reception",
                doc_type="return_notice",
                body=NOTICE,
            )
            queued.append(row.message_id)
        assert await mx.deliverer.run_once() == 45
        assert await stored_order(gt) == queued
        async with mx.ctx.sessions() as session:
            states = (await session.execute(select(Disclosure.state, Disclosure.receipt))).all()
        assert {state for state, _ in states} == {"delivered"}
        assert all(receipt for _, receipt in states)
