"""Appending to the audit log, in the caller's transaction.

An entry is written in the same database transaction as the change it
records, so neither can exist without the other. Entries carry ids, field
names, reason codes and digests — never case contents. Each entry's hash
chains to the previous one: entry_hash = SHA-256(prev_hash || entry), where
entry is the RFC 8785 canonical JSON stored byte for byte in the row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.canonical import canonical_json
from node.storage.models import AuditEntry, AuditHead


def chain_hash(prev_hash: str, entry: bytes) -> str:
    """The next link of the hash chain."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + entry).hexdigest()


async def append(
    session: AsyncSession,
    *,
    node: str,
    event: str,
    at: dt.datetime,
    message_id: str | None = None,
    counterparty: str | None = None,
    **details: Any,
) -> AuditEntry:
    """Append one entry. ``details`` must hold ids, names and codes only."""
    head = (
        await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    ).scalar_one()
    body: dict[str, Any] = {
        "seq": head.size,
        "time": at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "node": node,
        "event": event,
    }
    if message_id is not None:
        body["message_id"] = message_id
    if counterparty is not None:
        body["counterparty"] = counterparty
    body.update({k: v for k, v in details.items() if v is not None})
    entry = canonical_json(body)
    entry_hash = chain_hash(head.head_hash, entry)
    row = AuditEntry(
        seq=head.size,
        recorded_at=at,
        event=event,
        message_id=message_id,
        counterparty=counterparty,
        entry=entry.decode("utf-8"),
        prev_hash=head.head_hash,
        entry_hash=entry_hash,
    )
    session.add(row)
    head.size += 1
    head.head_hash = entry_hash
    await session.flush()
    return row


async def log_size(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


async def entries(session: AsyncSession, start: int = 0, limit: int = 1000) -> Sequence[AuditEntry]:
    result = await session.execute(
        select(AuditEntry).where(AuditEntry.seq >= start).order_by(AuditEntry.seq).limit(limit)
    )
    return result.scalars().all()


def verify_chain(rows: Sequence[AuditEntry], *, start_hash: str = "0" * 64) -> int | None:
    """The seq of the first entry whose chain link is wrong, or None if all hold."""
    prev = start_hash
    for row in rows:
        if row.prev_hash != prev or chain_hash(prev, row.entry.encode("utf-8")) != row.entry_hash:
            return row.seq
        prev = row.entry_hash
    return None
