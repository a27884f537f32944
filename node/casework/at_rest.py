"""The origin's own cases at rest: each sealed under its own data key, erased by destroying it.

A case's document — who she is, the interview, her needs — is stored only as
AES-256-GCM ciphertext under a random 256-bit key of its own, kept outside
the database in ``<data dir>/keys/cases/`` by the same key store as received
summaries (node.intake.datakeys). A stolen database, replica or backup holds
no case contents; erasing a case (by hand, or at the end of
``[casework] retention_days``) destroys its key and so every copy at once.

What stays in clear, and why (docs/consent-and-policy.md §8): the case id and
reference (identifiers to find the case by, never content), the holding
authority, the times, and the erasure bookkeeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.core.canonical import canonical_json
from node.core.logs import get_logger
from node.intake.datakeys import (
    ORPHAN_KEY_AGE,
    DataKey,
    DataKeyError,
    DataKeyStore,
    decrypt,
    encrypt,
)
from node.intake.summaries import ERASURE_METHOD, audit_case_ref
from node.storage.consent_models import CaseRow
from node.storage.context import NodeContext

log = get_logger(__name__)

KEY_STORE = "cases"
BATCH = 200


def key_store(ctx: NodeContext) -> DataKeyStore:
    """This node's store of per-case data keys (``keys/cases``)."""
    return DataKeyStore(ctx.config.keys_dir / KEY_STORE)


async def new_key(ctx: NodeContext) -> DataKey:
    """A fresh data key, durably written (off the event loop: it syncs the disk)."""
    return await asyncio.to_thread(key_store(ctx).create)


def _context(case_id: str) -> str:
    # Bound as AES-GCM associated data: a ciphertext cannot be moved to another case.
    return f"puente/case/{case_id}/document"


def seal(row: CaseRow, key: bytes, document: Mapping[str, Any]) -> None:
    """Store ``document`` in ``row`` encrypted under the row's own ``key``, nothing in clear."""
    row.document_ciphertext = encrypt(key, canonical_json(document), context=_context(row.case_id))
    row.document = None


def read(store: DataKeyStore, row: CaseRow) -> dict[str, Any]:
    """The case's document; :class:`DataKeyError` once it was erased."""
    if row.erased_at is not None:
        raise DataKeyError("data_key_destroyed", f"case {row.case_id} was erased")
    if row.data_key_id is None:  # written before encryption at rest, not sealed yet
        return dict(row.document or {})
    if row.document_ciphertext is None:
        raise DataKeyError("data_key_destroyed", f"case {row.case_id} has no document")
    plain = decrypt(
        store.get(row.data_key_id), row.document_ciphertext, context=_context(row.case_id)
    )
    document: dict[str, Any] = json.loads(plain)
    return document


def rewrite(store: DataKeyStore, row: CaseRow, document: Mapping[str, Any]) -> None:
    """Replace the document of a sealed row under its own key (a fresh nonce)."""
    assert row.data_key_id is not None, "a case is sealed before it is changed"
    seal(row, store.get(row.data_key_id), document)


async def erase(
    ctx: NodeContext,
    session: AsyncSession,
    row: CaseRow,
    *,
    reason: str,
    now: dt.datetime,
    **details: Any,
) -> None:
    """Crypto-shred one case in the caller's transaction: destroy its key, drop its ciphertext.

    The key file goes first: if the transaction then fails, the case is
    already unreadable and a second attempt only completes the bookkeeping.
    """
    if row.data_key_id is not None:
        key_store(ctx).destroy(row.data_key_id)
    row.document_ciphertext = None
    row.document = None
    row.erased_at = now
    row.erasure_reason = reason
    row.updated_at = now  # a send previewed before is refused preview_stale
    await audit.append(
        session,
        node=ctx.node_id,
        event="case.erased",
        at=now,
        case_ref=audit_case_ref(ctx, row.case_ref),
        authority=row.authority,
        reason=reason,
        data_key_id=row.data_key_id,
        method=ERASURE_METHOD,
        **details,
    )


async def seal_clear_cases(ctx: NodeContext) -> int:
    """Encrypt every case still held in clear (written before encryption at rest). Returns how many.

    Then the freed space is rebuilt (``VACUUM``), so the old clear text does
    not linger in free pages of the database file; backups made before
    hold it still, and are the operator's to destroy.
    """
    store = key_store(ctx)
    sealed = 0
    while True:
        async with ctx.sessions.begin() as session:
            rows = list(
                (
                    await session.execute(
                        select(CaseRow)
                        .where(CaseRow.data_key_id.is_(None), CaseRow.erased_at.is_(None))
                        .order_by(CaseRow.case_id)
                        .limit(BATCH)
                        .with_for_update()
                    )
                ).scalars()
            )
            keys = await asyncio.to_thread(store.create_many, len(rows))
            for row, (key_id, key) in zip(rows, keys, strict=True):
                document = dict(row.document or {})
                row.data_key_id = key_id
                seal(row, key, document)
        sealed += len(rows)
        if len(rows) < BATCH:
            break
    if sealed:
        await _reclaim_space(ctx)
        log.info("cases_sealed_at_rest", count=sealed)
    return sealed


async def _reclaim_space(ctx: NodeContext) -> None:
    # On the driver's own connection, outside any transaction: neither backend
    # vacuums inside one (and the engine opens one on SQLite for every statement).
    # SQLite's WAL still holds pages as they were written until it is checkpointed
    # and emptied; PostgreSQL unlinks the old files of the table at its next checkpoint.
    if ctx.engine.dialect.name == "sqlite":
        statements = ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"]
    else:
        statements = ["VACUUM FULL cases"]
    try:
        async with ctx.engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            for statement in statements:
                await driver.execute(statement)
    except Exception:  # the cases are sealed either way; the operator can vacuum by hand
        log.exception("cases_space_not_reclaimed", statements=statements)


async def purge_expired(ctx: NodeContext) -> int:
    """Erase every case unchanged for ``[casework] retention_days``. Returns how many."""
    days = ctx.config.casework.retention_days
    if days <= 0:
        return 0
    purged = 0
    while True:
        now = ctx.now()
        cutoff = now - dt.timedelta(days=days)
        async with ctx.sessions.begin() as session:
            rows = list(
                (
                    await session.execute(
                        select(CaseRow)
                        .where(CaseRow.erased_at.is_(None), CaseRow.updated_at <= cutoff)
                        .order_by(CaseRow.updated_at)
                        .limit(BATCH)
                        .with_for_update()
                    )
                ).scalars()
            )
            for row in rows:
                await erase(ctx, session, row, reason="retention_expired", now=now)
        purged += len(rows)
        if len(rows) < BATCH:
            break
    if purged:
        log.info("cases_purged", count=purged)
    return purged


async def sweep_keys(ctx: NodeContext) -> int:
    """Destroy case key files no live case needs (its case erased, or never committed)."""
    store = key_store(ctx)
    present = store.key_ids()
    if not present:
        return 0
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(CaseRow.data_key_id, CaseRow.erased_at).where(
                    CaseRow.data_key_id.in_(present)
                )
            )
        ).all()
    return store.sweep(
        live={key_id for key_id, erased_at in rows if key_id and erased_at is None},
        recorded={key_id for key_id, _ in rows if key_id},
        older_than=ctx.now() - ORPHAN_KEY_AGE,
    )
