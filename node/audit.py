"""Appending to the verifiable audit log, in the caller's transaction.

An entry is written in the same database transaction as the change it
records, so neither can exist without the other. Entries carry ids, field
names, reason codes and digests — never case contents; a case is named only
by its pseudonym (HMAC-SHA256 of the case id under a per-node secret).

Each entry's bytes are its RFC 8785 canonical JSON, stored byte for byte, and
are leaf ``seq`` of an RFC 9162 Merkle tree (node.audit_tree) whose signed
checkpoints (node.checkpoints) let anyone verify the log (audit/).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NewType

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from node import audit_tree
from node.canonical import canonical_json
from node.storage.audit_models import AuditTreeNode
from node.storage.models import AuditEntry, AuditHead

CaseRef = NewType("CaseRef", str)
_PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")
# Entry members that also get their own indexed column, for auditors' queries.
INDEXED = ("case_ref", "purpose", "legal_basis")


def case_pseudonym(secret: bytes, case_id: str) -> CaseRef:
    """The keyed hash that names a case in the log: HMAC-SHA256(secret, case id), hex.

    Whoever holds the case id and can ask the node finds its entries; the log
    alone does not let anyone enumerate or recognise people.
    """
    return CaseRef(hmac.new(secret, case_id.encode("utf-8"), hashlib.sha256).hexdigest())


@dataclass(frozen=True)
class AuditEvent:
    """One entry to append: the event, its time and its ids, names and codes."""

    event: str
    at: dt.datetime
    message_id: str | None = None
    counterparty: str | None = None
    case_ref: CaseRef | None = None
    purpose: str | None = None
    legal_basis: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def _time(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(seq: int, node: str, event: AuditEvent) -> dict[str, Any]:
    if event.case_ref is not None and not _PSEUDONYM.match(event.case_ref):
        # A raw case id must never reach the log: only case_pseudonym() output.
        raise ValueError("case_ref must be a pseudonym from audit.case_pseudonym()")
    body: dict[str, Any] = {"seq": seq, "time": _time(event.at), "node": node, "event": event.event}
    for name in ("message_id", "counterparty", *INDEXED):
        value = getattr(event, name)
        if value is not None:
            body[name] = value
    for name, value in event.details.items():
        if value is not None:
            body[name] = value
    return body


async def append_many(
    session: AsyncSession, *, node: str, events: Sequence[AuditEvent]
) -> list[AuditEntry]:
    """Append entries in order, in the caller's transaction; returns them (unattached).

    The head row is locked for the rest of the transaction, so concurrent
    writers queue behind it and the tree never forks. Batching many events in
    one transaction is how a busy node reaches high append rates.
    """
    head = (
        await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    ).scalar_one()
    size = head.size
    frontier = audit_tree.unpack(head.frontier)
    entries: list[AuditEntry] = []
    entry_rows: list[dict[str, Any]] = []
    tree_rows: list[dict[str, Any]] = []
    for event in events:
        entry = canonical_json(_body(size, node, event)).decode("utf-8")
        row = {
            "seq": size,
            "recorded_at": event.at,
            "event": event.event,
            "message_id": event.message_id,
            "counterparty": event.counterparty,
            "case_ref": event.case_ref,
            "purpose": event.purpose,
            "legal_basis": event.legal_basis,
            "entry": entry,
        }
        entry_rows.append(row)
        entries.append(AuditEntry(**row))
        leaf = audit_tree.leaf_hash(entry.encode("utf-8"))
        for level, index, h in audit_tree.append_leaf(size, frontier, leaf):
            tree_rows.append({"level": level, "index": index, "hash": h})
        size += 1
    if not entry_rows:
        return entries
    await session.execute(insert(AuditEntry), entry_rows)
    await session.execute(insert(AuditTreeNode), tree_rows)
    head.size = size
    head.frontier = audit_tree.pack(frontier)
    head.head_hash = audit_tree.fold(frontier).hex()
    await session.flush()
    return entries


async def append(
    session: AsyncSession,
    *,
    node: str,
    event: str,
    at: dt.datetime,
    message_id: str | None = None,
    counterparty: str | None = None,
    case_ref: CaseRef | None = None,
    purpose: str | None = None,
    legal_basis: str | None = None,
    **details: Any,
) -> AuditEntry:
    """Append one entry. ``details`` must hold ids, names and codes only."""
    (entry,) = await append_many(
        session,
        node=node,
        events=[
            AuditEvent(
                event=event,
                at=at,
                message_id=message_id,
                counterparty=counterparty,
                case_ref=case_ref,
                purpose=purpose,
                legal_basis=legal_basis,
                details=details,
            )
        ],
    )
    return entry


async def log_size(session: AsyncSession) -> int:
    query = select(AuditHead.size).where(AuditHead.id == 1)
    return int((await session.execute(query)).scalar_one())


async def entries(session: AsyncSession, start: int = 0, limit: int = 1000) -> Sequence[AuditEntry]:
    """Entries from ``start`` in log order."""
    result = await session.execute(
        select(AuditEntry).where(AuditEntry.seq >= start).order_by(AuditEntry.seq).limit(limit)
    )
    return result.scalars().all()


async def first_damaged_entry(session: AsyncSession, *, batch: int = 10_000) -> int | None:
    """The seq of the first stored entry that is not the one hashed into the tree, or None.

    Replays every entry against the stored leaf hashes and the head's root: a
    self-check for operators and tests. Auditors use the independent verifier.
    """
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    frontier: list[bytes] = []
    seq = 0
    while True:
        rows = (
            await session.execute(
                select(AuditEntry.seq, AuditEntry.entry, AuditTreeNode.hash)
                .outerjoin(
                    AuditTreeNode,
                    (AuditTreeNode.level == 0) & (AuditTreeNode.index == AuditEntry.seq),
                )
                .where(AuditEntry.seq >= seq)
                .order_by(AuditEntry.seq)
                .limit(batch)
            )
        ).all()
        if not rows:
            break
        for row_seq, entry, stored in rows:
            leaf = audit_tree.leaf_hash(entry.encode("utf-8"))
            if row_seq != seq or stored is None or bytes(stored) != leaf:
                return seq
            audit_tree.append_leaf(seq, frontier, leaf)
            seq += 1
    if seq != head.size or audit_tree.fold(frontier).hex() != head.head_hash:
        return seq
    return None


async def count_entries(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one())
