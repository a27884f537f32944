"""C2SP tlog-witness between real nodes over mutual TLS, on SQLite and PostgreSQL.

Each node cosigns its peers' checkpoints; a node that shows one history to
one peer and another to a second peer is caught when the witnesses compare.
"""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.note import Checkpoint, VerifierKey, open_checkpoint, parse_note
from audit.verify import verify_export
from node.auditlog import entries as audit
from node.auditlog import queries as audit_queries
from node.auditlog.checkpoints import issue_checkpoint
from node.auditlog.export import export_log
from node.auditlog.witness import ADD_CHECKPOINT_PATH, SIZE_CONTENT_TYPE
from node.auditlog.witness_rounds import relay, submit, witness_round
from node.trust.note_signing import sign_checkpoint
from tests.support.nodes import DatabaseFactory, LiveNode, live_federation, peer_session


async def log_something(node: LiveNode, count: int = 3) -> None:
    async with node.ctx.sessions.begin() as session:
        for i in range(count):
            await audit.append(
                session, node=node.node_id, event="test.event", at=node.ctx.now(), n=i
            )


async def add_checkpoint(client: LiveNode, witness: LiveNode, body: str) -> tuple[int, str, str]:
    async with (
        peer_session(client, witness) as http,
        http.post(witness.url + ADD_CHECKPOINT_PATH, data=body.encode()) as response,
    ):
        return response.status, response.content_type, await response.text()


def witness_keys(node: LiveNode) -> list[VerifierKey]:
    return [
        VerifierKey.parse(m.audit_log["witness_key"])
        for m in node.ctx.directory.nodes.values()
        if m.audit_log and m.id != node.node_id
    ]


async def test_peers_witness_checkpoints_and_auditors_see_who(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx = nodes["MX"]
        await log_something(mx)
        results = await witness_round(mx.ctx)
        assert {
            (r.witness, r.outcome) for r in results if r.origin.startswith("puente.int/audit/MX")
        } == {
            ("GT", "cosigned"),
            ("HN", "cosigned"),
        }
        await log_something(mx, 4)
        second = await witness_round(mx.ctx)  # with a consistency proof from size 3 to 7
        assert {r.outcome for r in second if r.witness in ("GT", "HN")} <= {"cosigned", "agreed"}
        witnessed = await audit_queries.witnessed_sizes(mx.ctx)
        assert {(w["tree_size"], w["witness"]) for w in witnessed} == {
            (3, "GT"),
            (3, "HN"),
            (7, "GT"),
            (7, "HN"),
        }
        doc = await audit_queries.checkpoint_document(mx.ctx)
        assert mx.ctx.audit is not None
        opened = open_checkpoint(
            doc["checkpoint"], VerifierKey.parse(mx.ctx.audit.verifier_key), witness_keys(mx)
        )
        assert opened.checkpoint.size == 7 and len(opened.cosignatures) == 2
        await export_log(mx.ctx, tmp_path / "export")
        report = verify_export(tmp_path / "export")
        assert report.ok and {c.cosigner.split("/")[2] for c in report.cosignatures} == {"GT", "HN"}
        assert "witnessed by puente.int/witness/GT/" in report.verdict()


async def test_witness_answers_as_the_spec_says(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        await log_something(mx, 5)
        cp = await issue_checkpoint(mx.ctx)
        status, ctype, body = await add_checkpoint(mx, gt, f"old 0\n\n{cp.note}")
        assert status == 200 and body.startswith("\u2014 puente.int/witness/GT/")
        # Old size not the one GT cosigned: 409 with GT's size as text/x.tlog.size.
        await log_something(mx, 2)
        newer = await issue_checkpoint(mx.ctx)
        status, ctype, body = await add_checkpoint(mx, gt, f"old 0\n\n{newer.note}")
        assert (status, ctype, body) == (409, SIZE_CONTENT_TYPE, "5\n")
        # A wrong consistency proof: 422.
        bogus = base64.b64encode(bytes(32)).decode()
        status, _, _ = await add_checkpoint(mx, gt, f"old 5\n{bogus}\n\n{newer.note}")
        assert status == 422
        # A checkpoint for a log nobody in the directory has: 404.
        stranger = sign_checkpoint(
            Checkpoint("example.org/not-a-member", 1, bytes(32)), Ed25519PrivateKey.generate()
        )
        status, ctype, body = await add_checkpoint(mx, gt, f"old 0\n\n{stranger}")
        assert status == 404 and "unknown_origin" in body
        # MX's origin signed by another key: 403.
        assert mx.ctx.audit is not None
        forged = sign_checkpoint(
            Checkpoint(mx.ctx.audit.origin, 9, bytes(32)), Ed25519PrivateKey.generate()
        )
        status, _, body = await add_checkpoint(mx, gt, f"old 5\n\n{forged}")
        assert status == 403 and "bad_checkpoint_signature" in body
        for malformed in ("old 5\n", "old -1\n\nx\n", "olde 5\n\n" + newer.note):
            status, ctype, body = await add_checkpoint(mx, gt, malformed)
            assert status == 400 and ctype == "application/problem+json", malformed
        events = [
            e.event
            for e in await audit_queries.query_entries(
                gt.ctx, audit_queries.EntryQuery(event="witness.refused")
            )
        ]
        assert len(events) >= 5


async def test_a_node_showing_two_histories_is_caught(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """MX shows GT one checkpoint and HN another of the same size: a fork."""
    async with live_federation(tmp_path, database_factory) as nodes:
        mx, gt, hn = nodes["MX"], nodes["GT"], nodes["HN"]
        await log_something(mx, 4)
        honest = await issue_checkpoint(mx.ctx)
        assert mx.ctx.audit is not None
        # The same log key signs another history of the same size (MX equivocating).
        other = sign_checkpoint(
            Checkpoint(mx.ctx.audit.origin, honest.tree_size, bytes(range(32))),
            mx.ctx.audit.log_key,
        )
        gt_peer, hn_peer = mx.ctx.directory.node("GT"), mx.ctx.directory.node("HN")
        assert gt_peer is not None and hn_peer is not None
        assert (await submit(mx.ctx, gt_peer, honest)).outcome == "cosigned"
        status, _, _ = await add_checkpoint(mx, hn, f"old 0\n\n{other}")
        assert status == 200  # alone, HN cannot know: it has seen only this one

        # GT relays what it cosigned to the other witnesses, as every round does.
        results = await relay(gt.ctx)
        assert [(r.witness, r.outcome) for r in results] == [("HN", "fork")]

        for witness in (gt, hn):
            forks = await audit_queries.forks(witness.ctx)
            assert [(f.node, f.origin) for f in forks] == [("MX", mx.ctx.audit.origin)]
            entries = await audit_queries.query_entries(
                witness.ctx, audit_queries.EntryQuery(event="witness.fork_detected")
            )
            assert len(entries) == 1 and entries[0].counterparty == "MX"
        # HN kept both signed checkpoints: proof that MX signed two histories.
        (evidence,) = await audit_queries.forks(hn.ctx)
        key = VerifierKey.parse(mx.ctx.audit.verifier_key)
        first = open_checkpoint(evidence.cosigned_note, key).checkpoint
        second = open_checkpoint(evidence.presented_note, key).checkpoint
        assert first.size == second.size and first.root != second.root
        # And MX can no longer get HN to cosign its honest history.
        assert (await submit(mx.ctx, hn_peer, honest)).outcome == "fork"


async def test_cosignature_from_an_impostor_is_not_kept(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        mx = nodes["MX"]
        await log_something(mx)
        cp = await issue_checkpoint(mx.ctx)
        lines = parse_note(cp.note).signatures
        assert len(lines) == 1
        # GT answering with MX's own log signature line is not a cosignature by GT's key.
        from node.auditlog.witness_rounds import _keep_cosignature

        gt_peer = mx.ctx.directory.node("GT")
        assert gt_peer is not None
        outcome, _ = await _keep_cosignature(mx.ctx, gt_peer, cp, lines[0].line)
        assert outcome == "refused"
        assert await audit_queries.witnessed_sizes(mx.ctx) == []


@pytest.mark.parametrize("path", [ADD_CHECKPOINT_PATH])
async def test_witness_endpoint_requires_a_member_certificate(
    tmp_path: Path, database_factory: DatabaseFactory, path: str
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        gt = nodes["GT"]
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.post(gt.url + path, data=b"old 0\n\n") as response:
                    await response.read()
