"""The running node's side of directory trust, with real nodes over real mutual TLS.

Distribution (a file source, peers, a chain across an operator rotation served
from a peer's history), the expiry warning (logs and ``/healthz``), an expired
directory that stops traffic and the recovery when a newer one arrives, a
revoked certificate and a removed node refused at the TLS layer, and a receipt
verified later against the directory history. Both database backends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from sqlalchemy import select

from node.core.errors import DirectoryError, PuenteError, ReceiptError
from node.delivery.outbox import queue_disclosure
from node.federation import directory_history
from node.federation.app_keys import REFRESHER
from node.federation.directory_sources import DIRECTORY_PATH
from node.federation.key_rotation import rotate_key
from node.federation.refresher import health_fields
from node.storage.models import AuditEntry, Disclosure
from node.trust.directory import sign_directory
from node.trust.edit import (
    add_node,
    as_document,
    bump,
    remove_key,
    remove_node,
    revoke,
    set_operators,
)
from node.trust.keys import generate_signing_key, public_jwk
from node.trust.operator import load_operator_key, publish_for_sources
from node.wire.receipts import verify_receipt
from tests.support.nodes import (
    GT,
    HN,
    MX,
    DatabaseFactory,
    LiveNode,
    live_federation,
    peer_session,
)

DAY = dt.timedelta(days=1)
NOTICE = {
    "case_ref": "MX-TEST-2026-000077",
    "person": {"given_names": "Ana Prueba", "family_names": "Ficticia", "age_estimate": 31},
    "arrival": {"date": "2026-12-01", "place_of_entry": "Aeropuerto de prueba", "means": "air"},
    "immediate_needs": ["medical_care"],
}


class Operators:
    """The federation operator of the local test federation (one key, threshold 1)."""

    def __init__(self, base: Path) -> None:
        self.key = load_operator_key(next((base / "operator").glob("*.jwk")))

    def next_version(
        self,
        held: LiveNode,
        edit: Callable[[dict[str, Any]], dict[str, Any]] = lambda doc: doc,
        *,
        validity: dt.timedelta = 30 * DAY,
        signers: list[Any] | None = None,
    ) -> dict[str, Any]:
        document = edit(as_document(held.ctx.directory.signed))
        document = bump(document, now=held.ctx.now(), validity=validity)
        return sign_directory(document, signers or [self.key])


async def health(client: LiveNode, server: LiveNode) -> dict[str, Any]:
    async with peer_session(client, server) as session, session.get(server.url + "/healthz") as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


AUTHORITIES = {"MX": "mx-inm", "GT": "gt-reception", "HN": "hn-reception"}


async def send(sender: LiveNode, to: str, authority: str) -> Disclosure:
    return await queue_disclosure(
        sender.ctx,
        sender_authority=AUTHORITIES[sender.node_id],
        recipient_node=to,
        recipient_authority=authority,
        doc_type="return_notice",
        body=NOTICE,
    )


async def state_of(node: LiveNode, message_id: str) -> Disclosure:
    async with node.ctx.sessions() as session:
        row = await session.get(Disclosure, message_id)
    assert row is not None
    return row


async def events(node: LiveNode, name: str) -> list[dict[str, Any]]:
    async with node.ctx.sessions() as session:
        rows = (await session.execute(select(AuditEntry).where(AuditEntry.event == name))).scalars()
        return [json.loads(r.entry) for r in rows]


async def test_a_file_source_and_peers_distribute_a_new_version(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, (MX, GT, HN)) as nodes:
        mx, gt, hn = nodes["MX"], nodes["GT"], nodes["HN"]
        operators = Operators(tmp_path)
        published = tmp_path / "published"
        v2 = operators.next_version(mx)
        publish_for_sources(published, v2)
        # MX reads a file source; GT and HN know no source and ask their peers.
        source = f"file://{published / 'directory.json'}"
        federation = dataclasses.replace(mx.ctx.config.federation, sources=(source,))
        mx.ctx.config = dataclasses.replace(mx.ctx.config, federation=federation)

        report = await mx.app[REFRESHER].refresh_once()
        assert report.accepted == [2] and mx.ctx.directory.version == 2
        for node in (gt, hn):
            report = await node.app[REFRESHER].refresh_once()
            assert report.accepted == [2], node.node_id
        # Each node wrote it where it keeps its directory, recorded it and audited the change.
        for node in nodes.values():
            on_disk = json.loads(node.ctx.config.directory_path.read_text())
            assert on_disk == v2
            assert [
                v.version for v in await directory_history.list_versions(node.ctx.sessions)
            ] == [
                1,
                2,
            ]
            (updated,) = await events(node, "directory.updated")
            assert updated["directory_version"] == 2 and updated["previous_version"] == 1

        # An older copy offered again changes nothing (and is not an error worth a warning).
        report = await mx.app[REFRESHER].refresh_once(offered=[mx.ctx.directory.signed])
        assert report.accepted == [] and mx.ctx.directory.version == 2
        v1 = await directory_history.signed_version(mx.ctx.sessions, 1)
        assert v1 is not None
        report = await mx.app[REFRESHER].refresh_once(fetch=False, offered=[v1])
        assert [r.reason for r in report.refused] == ["directory_rollback"]
        assert mx.ctx.directory.version == 2

        # Peers serve any version they have seen; an unknown one is a clear refusal.
        async with peer_session(gt, mx) as session:
            async with session.get(mx.url + DIRECTORY_PATH + "?version=1") as response:
                assert response.status == 200 and await response.json() == v1
            async with session.get(mx.url + DIRECTORY_PATH + "?version=9") as response:
                assert response.status == 404
                assert (await response.json())["reason"] == "directory_version_unknown"
            async with session.get(mx.url + DIRECTORY_PATH + "?version=x") as response:
                assert (await response.json())["reason"] == "directory_version_unknown"


async def test_a_chain_across_an_operator_rotation_is_walked_through_a_peer(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """HN missed v2, the hand-over to new operators; v3 alone is signed only by them."""
    async with live_federation(tmp_path, database_factory, (MX, GT, HN)) as nodes:
        mx, hn = nodes["MX"], nodes["HN"]
        operators = Operators(tmp_path)
        new_operator = generate_signing_key()
        handover = operators.next_version(
            mx,
            lambda doc: set_operators(doc, [public_jwk(new_operator)], 1),
            signers=[operators.key, new_operator],
        )
        assert await mx.app[REFRESHER].accept(handover) is not None
        v3 = operators.next_version(mx, signers=[new_operator])
        assert await mx.app[REFRESHER].accept(v3) is not None
        # Offered v3 alone, HN cannot accept it...
        report = await hn.app[REFRESHER].refresh_once(fetch=False, offered=[v3])
        assert [r.reason for r in report.refused] == ["directory_under_threshold"]
        assert hn.ctx.directory.version == 1
        # ... fetching, it finds v3 at MX, then asks MX for v2 and walks the chain.
        report = await hn.app[REFRESHER].refresh_once()
        assert report.accepted == [2, 3] and hn.ctx.directory.version == 3


async def test_expiry_is_warned_then_stops_traffic_until_a_new_directory(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock_offset = [dt.timedelta(0)]

    def clock() -> dt.datetime:
        return dt.datetime.now(dt.UTC) + clock_offset[0]

    async with live_federation(tmp_path, database_factory, (MX, GT), clock=clock) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        operators = Operators(tmp_path)
        short = operators.next_version(mx, validity=5 * DAY)
        for node in nodes.values():
            await node.app[REFRESHER].accept(short)
        assert (await health(mx, gt))["directory"]["status"] == "warning"

        with structlog.testing.capture_logs() as logs:
            clock_offset[0] = 4 * DAY + dt.timedelta(hours=12)
            report = await gt.app[REFRESHER].refresh_once(fetch=False)
        assert report.health is not None and report.health.status == "critical"
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "directory_expiry_critical"
        ]
        body = await health(mx, gt)
        assert body["directory"]["status"] == "critical"
        assert 0 < body["directory"]["expires_in_seconds"] <= 86400
        assert body["keys_protected"] is False and body["member"] is True

        # Expired: nothing is queued, sent or accepted...
        clock_offset[0] = 6 * DAY
        with pytest.raises(DirectoryError) as refused:
            await send(mx, "GT", "gt-reception")
        assert refused.value.reason == "directory_expired"
        assert (await health(mx, gt))["directory"]["status"] == "expired"
        # (queued before the expiry, the disclosure waits instead of going out)
        clock_offset[0] = 4 * DAY
        waiting = await send(mx, "GT", "gt-reception")
        clock_offset[0] = 6 * DAY
        await mx.deliverer.run_once()
        assert (await state_of(mx, waiting.message_id)).state == "queued"
        # ... and a peer with a fresh directory is refused with a retryable 503.
        async with (
            peer_session(mx, gt) as session,
            session.post(
                gt.url + "/federation/v1/messages",
                data=b"x.y.z.w.v",
                headers={"Content-Type": "application/jose"},
            ) as response,
        ):
            assert response.status == 503
            assert (await response.json())["reason"] == "directory_expired"

        # A newer directory (fetched from a peer here) brings both back; the queue drains.
        renewed = operators.next_version(mx)
        await gt.app[REFRESHER].accept(renewed)
        report = await mx.app[REFRESHER].refresh_once()
        assert report.accepted == [renewed_version(renewed)]
        await mx.deliverer.run_once()
        assert (await state_of(mx, waiting.message_id)).state == "delivered"


def renewed_version(signed: dict[str, Any]) -> int:
    return int(as_document(signed)["version"])


async def handshake_refused(client: LiveNode, server: LiveNode) -> bool:
    """Is ``client``, presenting its current certificate, refused by ``server`` at TLS?"""
    member = client.ctx.directory.node(server.node_id)
    assert member is not None
    try:
        async with (
            peer_session(client, server) as session,
            session.get(server.url + "/healthz") as response,
        ):
            return response.status != 200
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
        return True


async def test_a_removed_node_can_neither_send_nor_receive(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, (MX, GT, HN)) as nodes:
        mx, gt, hn = nodes["MX"], nodes["GT"], nodes["HN"]
        operators = Operators(tmp_path)
        queued_before = await send(mx, "HN", "hn-reception")
        assert not await handshake_refused(hn, gt)
        await send(hn, "GT", "gt-reception")  # a member may send
        without_hn = operators.next_version(mx, lambda doc: remove_node(doc, "HN"))
        for node in (mx, gt):
            await node.app[REFRESHER].accept(without_hn)
        # HN cannot reach the others: its certificate is no longer a trust anchor.
        assert await handshake_refused(hn, gt)
        assert await handshake_refused(hn, mx)
        # Nobody sends to HN: new disclosures are refused, queued ones are refused too.
        with pytest.raises(PuenteError) as refused:
            await send(mx, "HN", "hn-reception")
        assert refused.value.reason == "unknown_recipient"
        await mx.deliverer.run_once()
        row = await state_of(mx, queued_before.message_id)
        assert row.state == "refused"
        # HN itself, once it holds the directory without it, stops too.
        await hn.app[REFRESHER].accept(without_hn)
        assert health_fields(hn.ctx)["member"] is False
        with pytest.raises(PuenteError) as own:
            await send(hn, "GT", "gt-reception")
        assert own.value.reason == "unknown_authority"  # it serves no authority of the federation


async def test_revoked_keys_are_refused_at_the_handshake_and_never_used(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        operators = Operators(tmp_path)
        pin, kid = mx.ctx.keys.tls.pin, str(mx.ctx.keys.signing.kid)

        def revoke_both(doc: dict[str, Any]) -> dict[str, Any]:
            at = gt.ctx.now()
            doc = revoke(doc, "MX", pin, at=at, reason="keyCompromise")
            return revoke(doc, "MX", kid, at=at, reason="keyCompromise")

        revoked = operators.next_version(gt, revoke_both)
        assert not await handshake_refused(mx, gt)
        await gt.app[REFRESHER].accept(revoked)
        assert await handshake_refused(mx, gt)
        # MX itself will not sign with a key its peers would refuse.
        await mx.app[REFRESHER].accept(revoked)
        with pytest.raises(PuenteError) as refused:
            await send(mx, "GT", "gt-reception")
        assert refused.value.reason == "signing_key_not_in_force"


async def test_an_old_receipt_verifies_against_the_history(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """Years later: GT's old signing key is gone from the directory, not from the history."""
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        operators = Operators(tmp_path)
        row = await send(mx, "GT", "gt-reception")
        await mx.deliverer.run_once()
        delivered = await state_of(mx, row.message_id)
        assert delivered.receipt is not None and delivered.delivered_at is not None
        old_kid = str(gt.ctx.keys.signing.kid)

        rotate_key(gt.ctx.config.data_dir, "signing", now=gt.ctx.now(), lead=dt.timedelta(0))
        entry = json.loads(gt.ctx.config.node_entry_path.read_text())
        with_new = operators.next_version(gt, lambda doc: add_node(doc, entry, replace=True))
        await mx.app[REFRESHER].accept(with_new)
        without_old = operators.next_version(mx, lambda doc: remove_key(doc, "GT", old_kid))
        await mx.app[REFRESHER].accept(without_old)

        def verify(directory: Any) -> None:
            verify_receipt(
                delivered.receipt or "",
                directory=directory,
                expected_message_id=delivered.message_id,
                expected_recipient="GT",
                expected_envelope_sha256=delivered.envelope_sha256,
                seen_at=delivered.delivered_at,
            )

        with pytest.raises(ReceiptError) as refused:
            verify(mx.ctx.directory)
        assert refused.value.reason == "receipt_unknown_key"
        then = await directory_history.directory_in_force(
            mx.ctx.sessions, mx.ctx.trust_root, delivered.delivered_at
        )
        assert then is not None and then.version == 1
        verify(then)
