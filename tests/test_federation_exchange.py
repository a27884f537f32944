"""Two and three real nodes over real mutual TLS on 127.0.0.1, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import uuid
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from node.auditlog import entries as audit
from node.core.canonical import b64url_decode, sha256_hex
from node.core.schemas import RETURN_NOTICE
from node.delivery.deliverer import MESSAGES_PATH
from node.delivery.outbox import queue_disclosure
from node.storage.models import AuditEntry, Disclosure, ReceivedMessage
from node.trust.keys import generate_tls_identity
from node.wire.envelope import Message, Party, seal
from node.wire.receipts import verify_receipt
from tests.support.nodes import DatabaseFactory, LiveNode, live_federation, post_envelope

NOTICE = {
    "case_ref": "MX-TEST-2026-000001",
    "person": {"given_names": "Ana Prueba", "family_names": "Ficticia", "age_estimate": 31},
    "arrival": {"date": "2026-12-01", "place_of_entry": "Aeropuerto de prueba", "means": "air"},
    "immediate_needs": ["medical_care"],
}


async def audit_events(node: LiveNode) -> list[dict[str, object]]:
    async with node.ctx.sessions() as session:
        rows = (await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars().all()
        assert await audit.first_damaged_entry(session) is None, "audit log must be intact"
    return [json.loads(r.entry) for r in rows]


async def received_count(node: LiveNode) -> int:
    async with node.ctx.sessions() as session:
        query = select(func.count()).select_from(ReceivedMessage)
        return int((await session.execute(query)).scalar_one())


async def send_notice(sender: LiveNode, to: str = "GT", authority: str = "gt-reception") -> str:
    row = await queue_disclosure(
        sender.ctx,
        sender_authority="mx-inm",
        recipient_node=to,
        recipient_authority=authority,
        doc_type="return_notice",
        body=NOTICE,
    )
    return row.message_id


def sealed(sender: LiveNode, recipient: LiveNode, *, message_id: str | None = None) -> bytes:
    now = sender.ctx.now()
    message = Message(
        message_id=message_id or str(uuid.uuid4()),
        sender=Party("MX", "mx-inm"),
        recipient=Party(recipient.node_id, "gt-reception"),
        doc_type="return_notice",
        schema=RETURN_NOTICE,
        issued_at=int(now.timestamp()),
        expires_at=int((now + dt.timedelta(hours=1)).timestamp()),
        body=NOTICE,
    )
    peer = sender.ctx.directory.node(recipient.node_id)
    assert peer is not None
    return seal(
        message, signing_key=sender.ctx.keys.signing, recipient_key=peer.current_encryption_key
    ).encode()


async def test_notice_and_receipt_over_mutual_tls(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        message_id = await send_notice(mx)
        assert await mx.deliverer.run_once() == 1

        async with mx.ctx.sessions() as session:
            sent = await session.get(Disclosure, message_id)
        assert sent is not None and sent.state == "delivered" and sent.receipt
        receipt = verify_receipt(
            sent.receipt,
            directory=mx.ctx.directory,
            expected_message_id=message_id,
            expected_recipient="GT",
            expected_envelope_sha256=sent.envelope_sha256,
        )
        assert receipt.recipient == Party("GT", "gt-reception")

        async with gt.ctx.sessions() as session:
            stored = (await session.execute(select(ReceivedMessage))).scalar_one()
        assert stored.envelope == sent.envelope.encode("ascii"), "kept byte for byte"
        assert stored.body == NOTICE
        assert stored.receipt == sent.receipt

        mx_events = [e["event"] for e in await audit_events(mx)]
        assert mx_events == ["disclosure.queued", "disclosure.delivered"]
        gt_entries = await audit_events(gt)
        assert [e["event"] for e in gt_entries] == ["envelope.received"]
        assert gt_entries[0]["fields"] == sorted(
            [
                "arrival.date",
                "arrival.means",
                "arrival.place_of_entry",
                "case_ref",
                "immediate_needs",
                "person.age_estimate",
                "person.family_names",
                "person.given_names",
            ]
        )
        # Audit entries carry field names and ids, never the values.
        for node in (mx, gt):
            for entry in await audit_events(node):
                text = json.dumps(entry)
                assert "Ana Prueba" not in text and "Ficticia" not in text
        assert await received_count(nodes["HN"]) == 0


async def test_unreachable_peer_is_retried_later(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        await gt.stop()
        message_id = await send_notice(mx)
        assert await mx.deliverer.run_once() == 0
        async with mx.ctx.sessions() as session:
            row = await session.get(Disclosure, message_id)
            assert row is not None
            assert row.state == "queued" and row.attempts == 1
            assert row.last_error is not None and row.last_error.startswith("network")
            assert row.next_attempt_at > mx.ctx.now()
            # Make it due again without waiting out the backoff.
            row.next_attempt_at = mx.ctx.now()
            await session.commit()
        await gt.start()
        assert await mx.deliverer.run_once() == 1
        assert await received_count(gt) == 1


async def test_client_without_pinned_certificate_is_refused_at_tls(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        gt = nodes["GT"]
        stranger = generate_tls_identity(tmp_path / "stranger", "XX", ["127.0.0.1"])
        peer = nodes["MX"].ctx.directory.node("GT")
        assert peer is not None
        for with_certificate in (True, False):
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.load_verify_locations(cadata=gt.ctx.keys.tls.cert_pem.decode())
            if with_certificate:
                context.load_cert_chain(stranger.cert_path, stranger.key_path)
            connector = aiohttp.TCPConnector(ssl=context)
            async with aiohttp.ClientSession(connector=connector) as session:
                with pytest.raises(aiohttp.ClientError) as refused:
                    async with session.post(gt.url + MESSAGES_PATH, data=b"x") as response:
                        await response.read()
            # The handshake itself fails: no HTTP status was ever produced.
            assert not isinstance(refused.value, aiohttp.ClientResponseError)
        assert await received_count(gt) == 0


async def test_server_certificate_must_match_the_pin(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """A node that answers on GT's address with another certificate is not trusted."""
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt, hn = nodes["MX"], nodes["GT"], nodes["HN"]
        hn_pin = hn.ctx.directory.node("HN")
        assert hn_pin is not None
        # Ask MX to talk to HN's socket while pinning GT's certificate.
        gt_peer = mx.ctx.directory.node("GT")
        assert gt_peer is not None
        from node.trust.tls import client_context

        connector = aiohttp.TCPConnector(ssl=client_context(mx.ctx.keys.tls, gt_peer))
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectorError):
                async with session.post(hn.url + MESSAGES_PATH, data=b"x") as response:
                    await response.read()
        assert await received_count(gt) == 0


async def test_every_refusal_is_problem_json_and_audited(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        good = sealed(mx, gt)
        cases: list[tuple[bytes, str, int, str]] = [
            (b"not an envelope", "application/jose", 400, "malformed_envelope"),
            (b"\xff\xfe", "application/jose", 400, "malformed_envelope"),
            (good, "application/json", 415, "unsupported_media_type"),
            (b"a" * 2_000_000, "application/jose", 413, "envelope_too_large"),
            (good[:-5] + b"AAAAA", "application/jose", 400, "decryption_failed"),
        ]
        for body, content_type, status, reason in cases:
            code, media, problem = await post_envelope(mx, gt, body, content_type=content_type)
            assert (code, media) == (status, "application/problem+json"), reason
            assert problem["reason"] == reason
            assert problem["status"] == status
            assert problem["type"].endswith("/" + reason)
        refusals = [e for e in await audit_events(gt) if e["event"] == "envelope.refused"]
        assert [e["reason"] for e in refusals] == [c[3] for c in cases]
        assert all(e["counterparty"] == "MX" for e in refusals)
        assert await received_count(gt) == 0


async def test_retry_gets_same_receipt_and_reused_id_is_refused(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        message_id = str(uuid.uuid4())
        first = sealed(mx, gt, message_id=message_id)
        status1, _, answer1 = await post_envelope(mx, gt, first)
        status2, _, answer2 = await post_envelope(mx, gt, first)
        assert (status1, status2) == (200, 200)
        assert answer1["receipt"] == answer2["receipt"]
        assert (answer1["duplicate"], answer2["duplicate"]) == (False, True)

        # The same message id sealed again is different bytes: refused, not stored.
        status3, media, problem = await post_envelope(mx, gt, sealed(mx, gt, message_id=message_id))
        assert (status3, media, problem["reason"]) == (
            409,
            "application/problem+json",
            "message_id_reused",
        )
        assert await received_count(gt) == 1
        events = [(e["event"], e.get("reason")) for e in await audit_events(gt)]
        assert events == [
            ("envelope.received", None),
            ("envelope.duplicate", None),
            ("envelope.refused", "message_id_reused"),
        ]


async def test_unknown_path_and_method_are_problems(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        from tests.support.nodes import peer_session

        async with peer_session(mx, gt) as session:
            async with session.get(gt.url + "/nothing-here") as response:
                assert response.status == 404
                assert response.content_type == "application/problem+json"
                assert (await response.json())["reason"] == "not_found"
            async with session.get(gt.url + MESSAGES_PATH) as response:
                assert response.status == 405
                assert (await response.json())["reason"] == "method_not_allowed"


async def test_envelope_digest_in_receipt_is_of_the_exact_bytes(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        body = sealed(mx, gt)
        status, _, answer = await post_envelope(mx, gt, body)
        assert status == 200
        receipt = verify_receipt(
            answer["receipt"],
            directory=mx.ctx.directory,
            expected_message_id=json.loads(b64url_decode(answer["receipt"].split(".")[1]))["jti"],
            expected_recipient="GT",
            expected_envelope_sha256=sha256_hex(body),
        )
        assert receipt.envelope_sha256 == sha256_hex(body)
