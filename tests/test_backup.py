"""Backups of a serving node, restored elsewhere: on SQLite and PostgreSQL, with real keys.

MX holds two summaries from GT and has erased one of them. While MX keeps
writing (every read is an audited view), it is backed up; the archive is
restored into a new directory and database. The restored log verifies with
the independent verifier and extends the checkpoint the archive names; the
live summary reads as before; the erased one stays unreadable even when data
keys are restored. A tampered, re-encrypted, foreign or forged archive is
refused with its reason code and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pyrage
import pytest
from joserfc.jwk import OKPKey
from sqlalchemy import select

from audit.__main__ import check_consistency
from audit.note import VerifierKey
from audit.verify import verify_export
from node.auditlog.checkpoints import issue_checkpoint
from node.auditlog.export import export_log
from node.auditlog.queries import consistency_proof
from node.commands.backup_cmds import make_backup, restore
from node.intake.datakeys import DataKeyError
from node.intake.summaries import erase, key_store, open_body, read_received
from node.storage.consent_models import ReceivedSummary
from node.storage.context import open_node
from node.trust.archive import ArchiveError, write_archive
from tests.support.cases import CASE_SPECS, handoff, new_case
from tests.support.nodes import DatabaseFactory, LiveNode, live_federation

CASE_REF = "GT-CONS-2026-000500"


async def _summaries(ctx: Any) -> list[ReceivedSummary]:
    async with ctx.sessions() as session:
        query = select(ReceivedSummary).order_by(ReceivedSummary.id)
        return list((await session.execute(query)).scalars())


async def _keep_reading(mx: LiveNode, stop: asyncio.Event) -> int:
    """An officer who keeps reading: every read appends audit entries, as the node serves."""
    reads = 0
    while not stop.is_set():
        await read_received(mx.ctx, CASE_REF, viewer="mx-officer-1")
        reads += 1
        await asyncio.sleep(0)
    return reads


def _restore_args(target: Path, archive: Path, identity: Path, node: LiveNode, **extra: Any) -> Any:
    data = node.ctx.config.data_dir
    return argparse.Namespace(
        archive=archive,
        dir=target,
        identity=identity,
        node=node.node_id,
        trust_root=data / "trust-root.json",
        directory=data / "directory.json",
        database_url=extra.get("database_url"),
        restore_data_keys=extra.get("restore_data_keys", False),
        checkpoint=extra.get("checkpoint"),
        passphrase_file=None,
    )


def _identity(tmp_path: Path) -> tuple[Path, str]:
    made = pyrage.x25519.Identity.generate()
    path = tmp_path / "backup-identity.txt"
    path.write_text(f"# public key: {made.to_public()}\n{made}\n", "ascii")
    return path, str(made.to_public())


async def test_round_trip_while_serving_keeps_erasure(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    identity, recipient = _identity(tmp_path)
    async with live_federation(tmp_path / "fed", database_factory, CASE_SPECS) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        await new_case(gt.ctx, CASE_REF)
        kept = await handoff(gt.ctx, CASE_REF, "MX", "mx-comar")
        erased = await handoff(gt.ctx, CASE_REF, "MX", "mx-inm")
        assert await gt.deliverer.run_once() == 2
        rows = {row.message_id: row for row in await _summaries(mx.ctx)}
        async with mx.ctx.sessions.begin() as session:
            row = await session.get(ReceivedSummary, rows[erased.message_id].id)
            assert row is not None
            await erase(
                mx.ctx, session, row, reason="retention", event="retention.purged", now=mx.ctx.now()
            )
        erased_key = rows[erased.message_id].data_key_id
        await issue_checkpoint(mx.ctx)

        stop = asyncio.Event()
        reader = asyncio.create_task(_keep_reading(mx, stop))
        await asyncio.sleep(0.05)
        archive = tmp_path / "mx.age"
        made = await make_backup(
            mx.ctx, archive, recipient=recipient, include_keys=True, user="operator-1"
        )
        stop.set()
        assert await reader > 0
        assert made.manifest["node"] == "MX" and made.manifest["includes_keys"] is True
        assert f"data/keys/summaries/{erased_key}.key" not in made.manifest["members"]
        assert archive.stat().st_mode & 0o077 == 0, "readable by its owner only"
        plain_text = archive.read_bytes()
        assert b"mx-comar" not in plain_text and CASE_REF.encode() not in plain_text

        target = tmp_path / "restored"
        url = None
        if "postgresql" in mx.ctx.config.database_url:
            url = await database_factory("restored")
        done = await restore(
            _restore_args(target, archive, identity, mx, database_url=url, restore_data_keys=True)
        )
        assert done.node == "MX" and done.data_keys >= 1 and done.published is None
        assert done.tree_size >= made.manifest["audit_log"]["tree_size"]

    restored = open_node(target)
    try:
        # The live summary reads as it did; the one erased before the backup never again.
        by_id = {row.message_id: row for row in await _summaries(restored)}
        assert open_body(key_store(restored), by_id[kept.message_id]) == dict(kept.preview.document)
        gone = by_id[erased.message_id]
        assert gone.erased_at is not None and gone.body_ciphertext is None
        with pytest.raises(DataKeyError):
            key_store(restored).get(erased_key)
        assert not (target / "keys" / "summaries" / f"{erased_key}.key").exists()
        # The log verifies independently and extends the checkpoint the archive names.
        export = await export_log(restored, tmp_path / "export")
        report = verify_export(tmp_path / "export")
        assert report.ok, report.verdict()
        old_size = made.manifest["audit_log"]["tree_size"]
        proof = await consistency_proof(restored, old_size, export.tree_size)
        vkey = VerifierKey.parse(restored.audit.verifier_key if restored.audit else "")
        assert check_consistency(proof, vkey).startswith("OK")
        assert proof["old_checkpoint"] == made.manifest["audit_log"]["checkpoint"]
    finally:
        await restored.close()


def _tar_with(archive_plain: bytes, name: str, content: bytes) -> bytes:
    """The same tar with one member's content replaced (manifest untouched)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive_plain)) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member in source:
            data = source.extractfile(member)
            body = data.read() if data else b""
            if member.name == name:
                body = content
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    return out.getvalue()


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_tampered_foreign_and_forged_archives_are_refused(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    identity, recipient = _identity(tmp_path)
    async with live_federation(tmp_path / "fed", database_factory, CASE_SPECS) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        archive = tmp_path / "mx.age"
        await make_backup(mx.ctx, archive, recipient=recipient, include_keys=True, user="op")
        ident = pyrage.x25519.Identity.from_str(identity.read_text().splitlines()[-1])
        plain = pyrage.decrypt(archive.read_bytes(), [ident])
        to_recipient = [pyrage.x25519.Recipient.from_str(recipient)]

        flipped = bytearray(archive.read_bytes())
        flipped[len(flipped) // 2] ^= 0x01
        (tmp_path / "flipped.age").write_bytes(bytes(flipped))
        # Re-encrypted by someone who knows only the public recipient: contents changed.
        (tmp_path / "changed.age").write_bytes(
            pyrage.encrypt(_tar_with(plain, "data/puente.toml", b"[node]\n"), to_recipient)
        )
        # A real backup of another node.
        await make_backup(
            gt.ctx, tmp_path / "gt.age", recipient=recipient, include_keys=False, user="op"
        )
        # Signed by GT's key but claiming to be MX's, under MX's key id.
        forged_key = OKPKey.import_key(
            {**gt.ctx.keys.signing.as_dict(private=True), "kid": str(mx.ctx.keys.signing.kid)}
        )
        member = tmp_path / "member.txt"
        member.write_text("x")
        write_archive(
            tmp_path / "forged.age",
            members=[("data/puente.toml", member)],
            manifest={"node": "MX", "created_at": "2026-11-23T00:00:00Z"},
            signing_key=forged_key,
            recipient=recipient,
            workdir=tmp_path,
        )
        cases = {
            "flipped.age": "backup_undecryptable",
            "changed.age": "backup_tampered",
            "gt.age": "backup_wrong_node",
            "forged.age": "backup_signature_invalid",
        }
        for name, reason in cases.items():
            target = tmp_path / f"target-{name}"
            with pytest.raises(ArchiveError) as refused:
                await restore(_restore_args(target, tmp_path / name, identity, mx))
            assert refused.value.reason == reason, name
            assert not (target / "puente.toml").exists() and not (target / "puente.db").exists()


def test_cli_refusals_are_one_line(tmp_path: Path) -> None:
    def puente(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "node.commands", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    made = puente("backup", "keygen", "--out", str(tmp_path / "id.txt"))
    assert made.returncode == 0 and made.stdout.startswith("age1")
    again = puente("backup", "keygen", "--out", str(tmp_path / "id.txt"))
    assert again.returncode == 2 and again.stderr.startswith("puente: already_exists:")
    for argv, reason in (
        (["backup", "--dir", str(tmp_path)], "missing_option"),
        (
            [
                "restore",
                str(tmp_path / "none.age"),
                "--dir",
                str(tmp_path / "new"),
                "--identity",
                str(tmp_path / "id.txt"),
            ],
            "missing_option",
        ),
    ):
        refused = puente(*argv)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(f"puente: {reason}:"), refused.stderr
        assert "Traceback" not in refused.stderr
    with contextlib.suppress(FileNotFoundError):
        assert not (tmp_path / "new" / "puente.toml").exists()
