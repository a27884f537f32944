"""Privacy at rest at the origin: a stolen database or backup holds no case contents.

Before: the origin kept each case (her name, her documents, the interview) as
clear JSON in ``cases.document``, so the database file, its write-ahead log
and every backup held them, and nothing could erase them short of deleting
rows everywhere. Now each case is sealed under its own data key, kept outside
the database (``keys/cases``), and erasing a case destroys that key.

The checks read the bytes an attacker would get: the SQLite file and its WAL
(or PostgreSQL's files of the database), and a backup made the usual way
(the SQLite backup API, ``pg_dump``), and look for synthetic, unique markers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, select, text

from node.casework import at_rest
from node.casework.cases import CaseErased, create_case, erase_case, find_case
from node.core.config import CaseworkConfig
from node.demo.synthetic_cases import interviewed_case
from node.intake.retention import sweep
from node.storage.consent_models import CaseRow
from node.storage.context import NodeContext
from tests.support.cases import CASE_SPECS, CONSULATE, MovableClock, audit_entries, events
from tests.support.nodes import DatabaseFactory, live_federation
from tests.support.postgres import PostgresCluster, find_postgres_bindir

REF = "GT-CONS-2026-004242"


def _document(ctx: NodeContext, name: str, document_number: str) -> dict[str, Any]:
    document = interviewed_case(case_ref=REF, node="GT", authority=CONSULATE, asked_at=ctx.now())
    document["person"]["family_names"] = name
    document["person"]["identity_document"]["number"] = document_number
    return document


def _markers() -> tuple[str, str]:
    # Unique per test: the PostgreSQL server and its WAL are shared by the whole run.
    return f"Zoraida{secrets.token_hex(6)}", f"DOC-{secrets.token_hex(6).upper()}"


class Storage:
    """The bytes of one node's database as a thief would have them: the files, and a backup."""

    def __init__(self, ctx: NodeContext, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.ctx = ctx
        self.request = request
        self.tmp_path = tmp_path
        self.url = make_url(ctx.config.database_url)

    async def uncompressed(self) -> None:
        """Keep PostgreSQL from compressing long values, which would hide clear text from grep."""
        if self.url.get_backend_name() == "sqlite":
            return
        async with self.ctx.sessions.begin() as session:
            for column in ("document", "document_ciphertext"):
                await session.execute(
                    text(f"ALTER TABLE cases ALTER COLUMN {column} SET STORAGE EXTERNAL")
                )

    async def files(self) -> bytes:
        if self.url.get_backend_name() == "sqlite":
            path = Path(str(self.url.database))
            return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
        server = self.request.getfixturevalue("postgres_cluster")
        if not isinstance(server, PostgresCluster):
            pytest.skip("the PostgreSQL server's files are not on this machine")
        async with self.ctx.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("CHECKPOINT"))
            oid = (
                await autocommit.execute(
                    text("SELECT oid FROM pg_database WHERE datname = current_database()")
                )
            ).scalar_one()
        folder = server.data_dir / "base" / str(oid)
        return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())

    def backup(self) -> bytes:
        if self.url.get_backend_name() == "sqlite":
            copy = self.tmp_path / f"backup-{secrets.token_hex(4)}.db"
            with (
                sqlite3.connect(str(self.url.database)) as source,
                sqlite3.connect(copy) as target,
            ):
                source.backup(target)
            return copy.read_bytes()
        pg_dump = find_postgres_bindir() / "pg_dump"
        if not pg_dump.exists():
            pg_dump = Path(shutil.which("pg_dump") or "pg_dump")
        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return subprocess.run(
            [str(pg_dump), "--dbname", dsn], capture_output=True, check=True, timeout=120
        ).stdout


async def test_a_stolen_database_or_backup_holds_no_case_contents_and_erasure_shreds(
    tmp_path: Path, database_factory: DatabaseFactory, request: pytest.FixtureRequest
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        gt = nodes["GT"].ctx
        storage = Storage(gt, request, tmp_path)
        await storage.uncompressed()
        name, number = _markers()
        case = await create_case(gt, authority=CONSULATE, document=_document(gt, name, number))

        # The holder reads it, found by its reference, which stays in clear to search by.
        found = await find_case(gt, REF, authority=CONSULATE)
        assert found.document["person"]["family_names"] == name
        for stolen in (await storage.files(), storage.backup()):
            assert name.encode() not in stolen and number.encode() not in stolen
            assert REF.encode() in stolen

        async with gt.sessions() as session:
            row = await session.get(CaseRow, case.case_id)
        assert row is not None and row.data_key_id is not None
        key_file = gt.config.keys_dir / "cases" / f"{row.data_key_id}.key"
        assert key_file.exists()

        await erase_case(gt, REF, authority=CONSULATE, reason="data_subject_request")
        assert not key_file.exists(), "erasure destroys the data key"
        with pytest.raises(CaseErased):
            await find_case(gt, REF, authority=CONSULATE)
        (erased,) = events(await audit_entries(gt), "case.erased")
        assert erased["data_key_id"] == row.data_key_id
        assert erased["reason"] == "data_subject_request"


async def test_cases_stored_in_clear_before_are_sealed_and_their_clear_text_is_gone(
    tmp_path: Path, database_factory: DatabaseFactory, request: pytest.FixtureRequest
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        gt = nodes["GT"].ctx
        storage = Storage(gt, request, tmp_path)
        await storage.uncompressed()
        name, number = _markers()
        now = gt.now()
        async with gt.sessions.begin() as session:  # a row as the node wrote it before
            session.add(
                CaseRow(
                    case_id="0b9b1c9e-5f4c-4f53-9d1a-6c1e8f0e4a11",
                    case_ref=REF,
                    authority=CONSULATE,
                    created_at=now,
                    updated_at=now,
                    document=_document(gt, name, number),
                )
            )
        assert name.encode() in await storage.files(), "the check sees clear text when it is there"

        assert await at_rest.seal_clear_cases(gt) == 1
        assert await at_rest.seal_clear_cases(gt) == 0
        assert name.encode() not in await storage.files()
        assert name.encode() not in storage.backup()
        found = await find_case(gt, REF, authority=CONSULATE)
        assert found.document["person"]["identity_document"]["number"] == number


async def test_retention_at_the_origin_is_crypto_shredding(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(tmp_path, database_factory, CASE_SPECS, clock=clock) as nodes:
        gt = nodes["GT"].ctx
        gt.config = dataclasses.replace(gt.config, casework=CaseworkConfig(retention_days=30))
        name, number = _markers()
        await create_case(gt, authority=CONSULATE, document=_document(gt, name, number))
        store = at_rest.key_store(gt)
        (key_id,) = store.key_ids()

        assert (await sweep(gt)).cases_purged == 0
        clock.advance(dt.timedelta(days=31))
        assert (await sweep(gt)).cases_purged == 1
        assert store.key_ids() == []
        async with gt.sessions() as session:
            row = (await session.execute(select(CaseRow))).scalar_one()
        assert (row.erasure_reason, row.document_ciphertext, row.document) == (
            "retention_expired",
            None,
            None,
        )
        (erased,) = events(await audit_entries(gt), "case.erased")
        assert erased["data_key_id"] == key_id
