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
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NewType, cast

from sqlalchemy import Table, insert, select
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


_ENTRIES = cast(Table, AuditEntry.__table__)
_TREE = cast(Table, AuditTreeNode.__table__)
_SAFE_INT = 2**53 - 1  # RFC 8785 numbers are IEEE 754 doubles


def _plain_str(text: str) -> bool:
    return text.isascii() or not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _plain(body: dict[str, Any]) -> bool:
    """True if json.dumps gives this entry's RFC 8785 bytes.

    That holds for ASCII keys and values that are strings (without lone
    surrogates), integers in the IEEE 754 safe range, booleans, null and lists
    of strings — what entries hold. Anything else (floats, nested objects)
    takes the general path. Written flat: it runs once per append.
    """
    for key, value in body.items():
        if not key.isascii():
            return False
        kind = type(value)
        if kind is str:
            if not value.isascii() and not _plain_str(value):
                return False
        elif kind is int:
            if not -_SAFE_INT <= value <= _SAFE_INT:
                return False
        elif kind is list:
            if not all(type(item) is str for item in value):
                return False
            joined = "".join(value)  # one C-speed check for the usual all-ASCII names
            if not joined.isascii() and not _plain_str(joined):
                return False
        elif value is not None and kind is not bool:
            return False
    return True


def entry_json(body: dict[str, Any]) -> str:
    """RFC 8785 canonical JSON of an entry.

    Entries hold strings, integers and lists of names, for which sorted-key
    json.dumps without spaces or ASCII escaping *is* RFC 8785 (the same key
    order, string escapes and integer form), at a fraction of the cost;
    anything else goes through the rfc8785 library. The tests hold the two
    equal on generated values.
    """
    if _plain(body):
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return canonical_json(body).decode("utf-8")


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
) -> list[int]:
    """Append entries in order, in the caller's transaction; returns their ``seq``.

    The head row is locked for the rest of the transaction, so concurrent
    writers queue behind it and the tree never forks. Batching many events in
    one transaction is how a busy node reaches high append rates.
    """
    return [row["seq"] for row in await _append(session, node, events)]


async def _append(
    session: AsyncSession, node: str, events: Sequence[AuditEvent]
) -> list[dict[str, Any]]:
    head = (
        await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    ).scalar_one()
    size = head.size
    frontier = audit_tree.unpack(head.frontier)
    # recorded_at never goes backwards along seq (the entry's own "time" is exact), so
    # auditors' time ranges are seq ranges: see audit_queries.query_entries.
    last = (
        await session.execute(select(AuditEntry.recorded_at).where(AuditEntry.seq == size - 1))
    ).scalar_one_or_none()
    entry_rows: list[dict[str, Any]] = []
    tree_rows: list[dict[str, Any]] = []
    for event in events:
        entry = entry_json(_body(size, node, event))
        last = event.at if last is None or event.at >= last else last
        entry_rows.append(
            {
                "seq": size,
                "recorded_at": last,
                "event": event.event,
                "message_id": event.message_id,
                "counterparty": event.counterparty,
                "case_ref": event.case_ref,
                "purpose": event.purpose,
                "legal_basis": event.legal_basis,
                "entry": entry,
            }
        )
        leaf = audit_tree.leaf_hash(entry.encode("utf-8"))
        for level, index, h in audit_tree.append_leaf(size, frontier, leaf):
            tree_rows.append({"level": level, "idx": index, "hash": h})
        size += 1
    if not entry_rows:
        return entry_rows
    # Core inserts (executemany): the ORM's per-row bookkeeping is not needed here.
    await session.execute(insert(_ENTRIES), entry_rows)
    await session.execute(insert(_TREE), tree_rows)
    head.size = size
    head.frontier = audit_tree.pack(frontier)
    head.head_hash = audit_tree.fold(frontier).hex()
    await session.flush()
    return entry_rows


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
    (row,) = await _append(
        session,
        node,
        [
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
    return AuditEntry(**row)  # a detached copy of what was written


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
