"""Rotate every key of one node while messages flow, over real mutual TLS, on both backends.

Three real nodes (MX, GT, HN) on 127.0.0.1 exchange a steady stream of
return notices: MX -> GT, GT -> MX and HN -> GT. Meanwhile GT rotates its
signing, encryption and TLS keys the way an administrator would
(node.federation.key_rotation.rotate_key, what ``puente keys rotate`` runs), the operators
publish the new entry in directory v2, GT installs it and the other nodes fetch
it from GT over mutual TLS; then the clock passes the new keys' ``nbf`` (GT
switches) and the old keys' ``exp``. A batch of envelopes is held back across
the switch so that they are delivered after it: sealed to GT's old encryption
key, signed with GT's old signing key.

At the end nothing is lost or refused that should have been accepted: every
disclosure is delivered exactly once with a receipt that verifies, no node
audited a refusal, and GT's receipts, envelopes and TLS certificate show the
switch happened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from pathlib import Path

from sqlalchemy import func, select

from node.core.canonical import b64url_decode
from node.core.clock import utcnow
from node.delivery.outbox import queue_disclosure
from node.federation.app_keys import REFRESHER
from node.federation.key_rotation import KINDS, rotate_key
from node.storage.models import AuditEntry, Disclosure, ReceivedMessage
from node.trust.directory import sign_directory
from node.trust.edit import add_node, as_document, bump
from node.trust.operator import load_operator_key, read_json
from node.trust.tls import client_context, peer_pin
from node.wire.receipts import verify_receipt
from tests.support.nodes import GT, HN, MX, DatabaseFactory, LiveNode, live_federation

HOUR = dt.timedelta(hours=1)
LEAD = HOUR  # the new keys come into force an hour after the rotation
OVERLAP = dt.timedelta(days=1)  # the old keys stay valid a day after that
NOTICE = {
    "case_ref": "MX-TEST-2026-000042",
    "person": {"given_names": "Ana Prueba", "family_names": "Ficticia", "age_estimate": 31},
    "arrival": {"date": "2026-12-01", "place_of_entry": "Aeropuerto de prueba", "means": "air"},
    "immediate_needs": ["medical_care"],
}
ROUTES = (
    ("MX", "GT", "mx-inm", "gt-reception"),
    ("GT", "MX", "gt-reception", "mx-inm"),
    ("HN", "GT", "hn-reception", "gt-reception"),
)


class OffsetClock:
    """The wall clock moved forward on demand, shared by every node (as NTP would keep them)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset

    def advance(self, delta: dt.timedelta) -> None:
        self.offset += delta


class Stream:
    """Queues one notice per route per round and, unless held, lets every node deliver."""

    def __init__(self, nodes: dict[str, LiveNode]) -> None:
        self.nodes = nodes
        self.sent: dict[str, str] = {}  # message id -> phase it was queued in
        self.phase = "before-rotation"
        self.hold = False
        self.rounds = 0
        self._stop = asyncio.Event()
        self._round_done = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            for sender, recipient, authority, recipient_authority in ROUTES:
                # Read before queueing: queue_disclosure seals before its first await, so
                # the phase and the keys it seals with belong to the same moment.
                phase = self.phase
                row = await queue_disclosure(
                    self.nodes[sender].ctx,
                    sender_authority=authority,
                    recipient_node=recipient,
                    recipient_authority=recipient_authority,
                    doc_type="return_notice",
                    body=NOTICE,
                )
                self.sent[row.message_id] = phase
            if not self.hold:
                await asyncio.gather(*(n.deliverer.run_once() for n in self.nodes.values()))
            self.rounds += 1
            self._round_done.set()
            await asyncio.sleep(0.01)  # let the refreshers and the test interleave

    async def rounds_pass(self, count: int) -> None:
        target = self.rounds + count
        while self.rounds < target:
            self._round_done.clear()
            await self._round_done.wait()

    def stop(self) -> None:
        self._stop.set()


async def pending(node: LiveNode) -> int:
    async with node.ctx.sessions() as session:
        query = select(func.count()).where(Disclosure.state.in_(("queued", "sending")))
        return int((await session.execute(query)).scalar_one())


async def drain(nodes: dict[str, LiveNode]) -> None:
    """Deliver what is left; backoff after a failed attempt is short, so this ends soon."""
    for _ in range(600):
        await asyncio.gather(*(n.deliverer.run_once() for n in nodes.values()))
        if all([await pending(n) == 0 for n in nodes.values()]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("disclosures still pending after the stream stopped")


async def refresh_all(nodes: dict[str, LiveNode], *, fetch: bool = True) -> None:
    for node in nodes.values():
        await node.app[REFRESHER].refresh_once(fetch=fetch)


def jwe_kid(envelope: str) -> str:
    return str(json.loads(b64url_decode(envelope.split(".")[0]))["kid"])


async def presented_pin(client: LiveNode, server: LiveNode) -> str | None:
    """The certificate ``server`` presents now, seen through ``client``'s pinned context."""
    member = client.ctx.directory.node(server.node_id)
    assert member is not None
    context = client_context(client.ctx.keys.tls, member, client.ctx.now())
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.ctx.config.port, ssl=context
    )
    try:
        return peer_pin(writer.get_extra_info("ssl_object"))
    finally:
        writer.close()
        await writer.wait_closed()


async def test_rotate_every_key_of_one_node_while_messages_flow(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = OffsetClock()
    fast_retry = {"retry_base": 0.05, "retry_max": 0.2, "poll_interval": 0.1}
    async with live_federation(
        tmp_path, database_factory, (MX, GT, HN), clock=clock, delivery=fast_retry
    ) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        gt_dir = gt.ctx.config.data_dir
        old = {
            "signing": str(gt.ctx.keys.signing.kid),
            "encryption": gt.ctx.keys.active_encryption_kid,
            "tls": gt.ctx.keys.tls.pin,
        }
        stream = Stream(nodes)
        streaming = asyncio.create_task(stream.run())
        try:
            await stream.rounds_pass(5)

            # GT's administrator rotates all three keys (puente keys rotate --kind ...).
            stream.phase = "rotated-not-published"
            rotations = {
                kind: rotate_key(gt_dir, kind, now=clock(), lead=LEAD, overlap=OVERLAP)
                for kind in KINDS
            }
            new = {kind: rotation.new_id for kind, rotation in rotations.items()}
            await stream.rounds_pass(3)

            # The operators publish GT's new entry in v2; GT installs it, the others fetch
            # it from GT over mutual TLS.
            operator = load_operator_key(next((tmp_path / "operator").glob("*.jwk")))
            draft = add_node(
                as_document(gt.ctx.directory.signed),
                read_json(gt.ctx.config.node_entry_path),
                replace=True,
            )
            v2 = sign_directory(
                bump(draft, now=clock(), validity=dt.timedelta(days=30)), [operator]
            )
            assert await gt.app[REFRESHER].accept(v2) is not None
            await refresh_all(nodes)
            assert {n.ctx.directory.version for n in nodes.values()} == {2}
            stream.phase = "published-not-in-force"
            await stream.rounds_pass(5)
            # Published, not yet in force: GT still uses its old keys.
            assert gt.ctx.keys.signing.kid == old["signing"]
            assert gt.ctx.keys.tls.pin == old["tls"]

            # Hold deliveries so that a batch is sealed and signed with the old keys and
            # delivered only after the switch.
            stream.hold = True
            stream.phase = "in-flight-across-the-switch"
            await stream.rounds_pass(4)
            stream.phase = "switching"  # no await between this and the clock's jump
            clock.advance(LEAD + dt.timedelta(minutes=1))
            await refresh_all(nodes, fetch=False)
            assert str(gt.ctx.keys.signing.kid) == new["signing"]
            assert gt.ctx.keys.active_encryption_kid == new["encryption"]
            assert gt.ctx.keys.tls.pin == new["tls"]
            assert await presented_pin(mx, gt) == new["tls"]
            stream.phase = "after-the-switch"
            stream.hold = False
            await stream.rounds_pass(5)

            # Past the overlap the old keys expire; the old certificate is trusted no more.
            clock.advance(OVERLAP)
            await refresh_all(nodes, fetch=False)
            stream.phase = "after-the-overlap"
            await stream.rounds_pass(5)
        finally:
            stream.stop()
            await streaming
        await drain(nodes)

        # Nothing lost: every disclosure delivered, exactly once, with a receipt that verifies.
        by_id: dict[str, Disclosure] = {}
        for node in nodes.values():
            async with node.ctx.sessions() as session:
                for row in (await session.execute(select(Disclosure))).scalars():
                    by_id[row.message_id] = row
        assert set(by_id) == set(stream.sent)
        assert {row.state for row in by_id.values()} == {"delivered"}
        for node in nodes.values():
            async with node.ctx.sessions() as session:
                received = (await session.execute(select(ReceivedMessage))).scalars().all()
            expected = {mid for mid, row in by_id.items() if row.recipient_node == node.node_id}
            assert sorted(r.message_id for r in received) == sorted(expected)

        # Nothing refused: no node audited a refusal.
        for node in nodes.values():
            async with node.ctx.sessions() as session:
                events = [
                    json.loads(e.entry)["event"]
                    for e in (await session.execute(select(AuditEntry))).scalars()
                ]
            assert not [e for e in events if e.endswith("refused")], node.node_id
            assert "directory.updated" in events
        async with gt.ctx.sessions() as session:
            activations = [
                json.loads(e.entry)
                for e in (
                    await session.execute(
                        select(AuditEntry).where(AuditEntry.event == "keys.activated")
                    )
                ).scalars()
            ]
        assert [a["keys"] for a in activations] == [new]

        # The switch is visible in what crossed the wire.
        receipt_kids: dict[str, set[str]] = {}
        sealed_to: dict[str, set[str]] = {}
        for row in by_id.values():
            assert row.receipt is not None
            receipt = verify_receipt(
                row.receipt,
                directory=mx.ctx.directory,
                expected_message_id=row.message_id,
                expected_recipient=row.recipient_node,
                expected_envelope_sha256=row.envelope_sha256,
            )
            if row.recipient_node == "GT":
                phase = stream.sent[row.message_id]
                receipt_kids.setdefault(phase, set()).add(receipt.signing_kid)
                sealed_to.setdefault(phase, set()).add(jwe_kid(row.envelope))
        assert receipt_kids["before-rotation"] == {old["signing"]}
        assert sealed_to["before-rotation"] == {old["encryption"]}
        # Held across the switch: sealed to the old key, opened (and receipted) after it.
        assert sealed_to["in-flight-across-the-switch"] == {old["encryption"]}
        assert receipt_kids["in-flight-across-the-switch"] == {new["signing"]}
        for phase in ("after-the-switch", "after-the-overlap"):
            assert receipt_kids[phase] == {new["signing"]}
            assert sealed_to[phase] == {new["encryption"]}
        # GT's envelopes to MX held across the switch were signed with its old key.
        async with gt.ctx.sessions() as session:
            gt_rows = (await session.execute(select(Disclosure))).scalars().all()
        signed_with: dict[str, set[str]] = {stream.sent[r.message_id]: set() for r in gt_rows}
        async with mx.ctx.sessions() as session:
            audit_rows = (
                (
                    await session.execute(
                        select(AuditEntry).where(AuditEntry.event == "envelope.received")
                    )
                )
                .scalars()
                .all()
            )
        for entry in (json.loads(a.entry) for a in audit_rows):
            if entry.get("counterparty") == "GT":
                signed_with.setdefault(stream.sent[entry["message_id"]], set()).add(
                    entry["signing_kid"]
                )
        assert signed_with["before-rotation"] == {old["signing"]}
        assert signed_with["in-flight-across-the-switch"] == {old["signing"]}
        assert signed_with["after-the-overlap"] == {new["signing"]}

        # GT's old certificate no longer opens a connection to MX; its new one does.
        tls_dir = gt_dir / "keys" / "tls"
        assert not await mx_answers(mx, tls_dir / f"{old['tls']}.crt")
        assert await mx_answers(mx, tls_dir / f"{new['tls']}.crt")


async def mx_answers(mx: LiveNode, cert: Path) -> bool:
    """Does MX answer a request over mutual TLS from a client presenting ``cert``?"""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_cert_chain(cert, cert.with_suffix(".key"))
    context.load_verify_locations(cadata=mx.ctx.keys.tls.cert_pem.decode("ascii"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", mx.ctx.config.port, ssl=context)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: mx\r\nConnection: close\r\n\r\n")
        await writer.drain()
        # In TLS 1.3 the server judges the client certificate after the client's side of the
        # handshake is done: a refused client learns it on its first read.
        answer = await reader.read(12)
        writer.close()
    except (ssl.SSLError, ConnectionError):
        return False
    return answer.startswith(b"HTTP/1.1 200")
