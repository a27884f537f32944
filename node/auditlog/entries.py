"""Appending to the verifiable audit log, in the caller's transaction.

An entry is written in the same database transaction as the change it
records, so neither can exist without the other. Entries carry ids, field
names, reason codes and digests — never case contents; a case is named only
by its pseudonym (HMAC-SHA256 of the case id under a per-node secret).

Each entry's bytes are its RFC 8785 canonical JSON, stored byte for byte, and
are leaf ``seq`` of an RFC 9162 Merkle tree (node.auditlog.tree) whose signed
checkpoints (node.auditlog.checkpoints) let anyone verify the log (audit/).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NewType, cast

import orjson
from sqlalchemy import Column, String, Table, bindparam, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from node.auditlog import tree as audit_tree
from node.core.canonical import canonical_json
from node.storage.audit_models import AuditTreeNode
from node.storage.models import AuditEntry, AuditHead

CaseRef = NewType("CaseRef", str)
_PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")


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
_HEAD = cast(Table, AuditHead.__table__)
_SAFE_INT = 2**53 - 1  # RFC 8785 numbers are IEEE 754 doubles


def _plain_str(text: str) -> bool:
    return text.isascii() or not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _plain(body: dict[str, Any]) -> bool:
    """True if orjson with sorted keys gives this entry's RFC 8785 bytes.

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


def entry_bytes(body: dict[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of an entry, UTF-8.

    Entries hold strings, integers and lists of names, for which orjson with
    sorted keys *is* RFC 8785 — no whitespace, UTF-8 unescaped, only ``"``,
    ``\\`` and control characters escaped (``\\n`` and the like, else
    lower-case ``\\u00xx``), ASCII keys in code-unit order, integers as
    digits — at a tenth of the cost of json.dumps; anything else goes through
    the rfc8785 library. The tests hold the two equal on generated values.
    """
    if _plain(body):
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return canonical_json(body)


def entry_json(body: dict[str, Any]) -> str:
    """RFC 8785 canonical JSON of an entry, as text."""
    return entry_bytes(body).decode("utf-8")


def _time(at: dt.datetime) -> str:
    if at.tzinfo is not dt.UTC:
        at = at.astimezone(dt.UTC)
    return at.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" is its last six


def _body(seq: int, node: str, event: AuditEvent) -> dict[str, Any]:
    if event.case_ref is not None and not _PSEUDONYM.match(event.case_ref):
        # A raw case id must never reach the log: only case_pseudonym() output.
        raise ValueError("case_ref must be a pseudonym from audit.case_pseudonym()")
    body: dict[str, Any] = {"seq": seq, "time": _time(event.at), "node": node, "event": event.event}
    # Written out, not a loop over names: this runs once per entry.
    if event.message_id is not None:
        body["message_id"] = event.message_id
    if event.counterparty is not None:
        body["counterparty"] = event.counterparty
    if event.case_ref is not None:
        body["case_ref"] = event.case_ref
    if event.purpose is not None:
        body["purpose"] = event.purpose
    if event.legal_basis is not None:
        body["legal_basis"] = event.legal_basis
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
    rows, _ = await _append(session, node, events)
    return [row[0] for row in rows]


# An entry row's columns, in the order _rows builds them.
_ENTRY_COLUMNS = (
    "seq",
    "recorded_at",
    "event",
    "message_id",
    "counterparty",
    "case_ref",
    "purpose",
    "legal_basis",
    "entry",
)
_TREE_COLUMNS = ("level", "idx", "hash")
EntryRow = tuple[Any, ...]
TreeRow = tuple[int, int, bytes]


@dataclass(frozen=True)
class _Writes:
    """One database dialect's append statements, compiled once.

    A batch's rows go to the driver in one statement per table, without
    SQLAlchemy's per-row parameter processing (which cost as much as building
    the entries): on SQLite the driver's executemany; on PostgreSQL one INSERT
    of the rows as arrays (``unnest``), which the server runs once instead of
    once per row. Ints, strs, None and bytes go to both drivers as they are;
    the one value a driver cannot take as is, the time, goes through its
    column type's own bind processor (UtcDateTime, then SQLite's text form).
    """

    insert_entries: str
    insert_tree: str
    bind_time: Callable[[dt.datetime], Any]
    as_arrays: bool

    async def insert(self, connection: AsyncConnection, sql: str, rows: list[Any]) -> None:
        if self.as_arrays:
            columns = zip(*rows, strict=True)
            await connection.exec_driver_sql(sql, tuple(list(column) for column in columns))
        else:
            await connection.exec_driver_sql(sql, rows)


# Memoized per engine's dialect (pure: the same statements for the same dialect).
_WRITES: weakref.WeakKeyDictionary[Dialect, _Writes] = weakref.WeakKeyDictionary()


def _writes(dialect: Dialect) -> _Writes:
    writes = _WRITES.get(dialect)
    if writes is None:
        bind_time = _ENTRIES.c.recorded_at.type.dialect_impl(dialect).bind_processor(dialect)
        assert bind_time is not None  # UtcDateTime always has one
        as_arrays = dialect.name == "postgresql"
        sql = _arrays_sql if as_arrays else _rows_sql
        writes = _WRITES[dialect] = _Writes(
            sql(_ENTRIES, _ENTRY_COLUMNS, dialect),
            sql(_TREE, _TREE_COLUMNS, dialect),
            bind_time,
            as_arrays,
        )
    return writes


def _rows_sql(table: Table, columns: Sequence[str], dialect: Dialect) -> str:
    """INSERT of one row with positional parameters in ``columns`` order, as the driver takes it."""
    compiled = insert(table).values({c: bindparam(c) for c in columns}).compile(dialect=dialect)
    if compiled.positiontup != list(columns):
        raise NotImplementedError(f"{dialect.name}: a driver with positional parameters")
    return compiled.string


def _arrays_sql(table: Table, columns: Sequence[str], dialect: Dialect) -> str:
    """PostgreSQL: INSERT of many rows given as one array per column, in ``columns`` order."""
    arrays = ", ".join(f"${i}::{_array_of(table.c[c], dialect)}" for i, c in enumerate(columns, 1))
    return f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"  # noqa: S608 - no input


def _array_of(column: Column[Any], dialect: Dialect) -> str:
    kind = column.type
    if isinstance(kind, String):
        # No length: a value too long for its column is refused by the column,
        # where a cast to VARCHAR(n) would cut it short without a word.
        kind = type(kind)()
    return f"{kind.compile(dialect)}[]"


def _rows(
    size: int,
    frontier: list[bytes],
    last: dt.datetime | None,
    node: str,
    events: Sequence[AuditEvent],
    bind_time: Callable[[dt.datetime], Any],
) -> tuple[list[EntryRow], list[TreeRow], dt.datetime | None]:
    """The entry rows and new subtree rows for ``events`` appended at ``size``.

    Pure: updates ``frontier`` in place. ``last`` is the newest ``recorded_at``
    so far, and is returned updated: recorded_at never goes backwards along seq
    (the entry's own "time" is exact), so auditors' time ranges are seq ranges
    (audit_queries).
    """
    entry_rows: list[EntryRow] = []
    tree_rows: list[TreeRow] = []
    leaf_hash, append_leaf = audit_tree.leaf_hash, audit_tree.append_leaf
    for event in events:
        data = entry_bytes(_body(size, node, event))
        entry = data.decode("utf-8")
        at = event.at
        if last is None or at >= last:
            last = at
        entry_rows.append(
            (
                size,
                bind_time(last),
                event.event,
                event.message_id,
                event.counterparty,
                event.case_ref,
                event.purpose,
                event.legal_basis,
                entry,
            )
        )
        tree_rows += append_leaf(size, frontier, leaf_hash(data))
        size += 1
    return entry_rows, tree_rows, last


# Built once: a small batch's cost is mostly its statements.
_LOCK_HEAD = select(_HEAD.c.size, _HEAD.c.frontier).where(_HEAD.c.id == 1).with_for_update()
# A statement of its own after the lock: on PostgreSQL it sees what the writer
# we waited for committed (a subquery of the locking one would not).
_LAST_TIME = select(_ENTRIES.c.recorded_at).where(_ENTRIES.c.seq == bindparam("seq"))
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1)


async def _append(
    session: AsyncSession, node: str, events: Sequence[AuditEvent]
) -> tuple[list[EntryRow], dt.datetime | None]:
    # The caller's pending ORM changes go first, as when this began with an ORM query.
    await session.flush()
    connection = await session.connection()
    writes = _writes(connection.dialect)
    size, packed = (await connection.execute(_LOCK_HEAD)).one()
    last = (await connection.execute(_LAST_TIME, {"seq": size - 1})).scalar_one_or_none()
    frontier = audit_tree.unpack(packed)
    entry_rows, tree_rows, last = _rows(size, frontier, last, node, events, writes.bind_time)
    if not entry_rows:
        return entry_rows, last
    await writes.insert(connection, writes.insert_entries, entry_rows)
    await writes.insert(connection, writes.insert_tree, tree_rows)
    await connection.execute(
        _MOVE_HEAD,
        {
            "size": size + len(entry_rows),
            "frontier": audit_tree.pack(frontier),
            "head_hash": audit_tree.fold(frontier).hex(),
        },
    )
    return entry_rows, last


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
    written = AuditEvent(
        event=event,
        at=at,
        message_id=message_id,
        counterparty=counterparty,
        case_ref=case_ref,
        purpose=purpose,
        legal_basis=legal_basis,
        details=details,
    )
    ((seq, *_, entry),), recorded_at = await _append(session, node, [written])
    return AuditEntry(  # a detached copy of what was written
        seq=seq,
        recorded_at=recorded_at,
        event=event,
        message_id=message_id,
        counterparty=counterparty,
        case_ref=case_ref,
        purpose=purpose,
        legal_basis=legal_basis,
        entry=entry,
    )


def event(
    event: str,
    at: dt.datetime,
    *,
    message_id: str | None = None,
    counterparty: str | None = None,
    case_ref: CaseRef | None = None,
    purpose: str | None = None,
    legal_basis: str | None = None,
    **details: Any,
) -> AuditEvent:
    """An entry for :func:`append_many`, named the way :func:`append` takes it.

    The indexed members (case_ref, purpose, legal_basis) get their own columns
    whether passed by name or in a ``**details`` mapping, as with append.
    """
    return AuditEvent(
        event=event,
        at=at,
        message_id=message_id,
        counterparty=counterparty,
        case_ref=case_ref,
        purpose=purpose,
        legal_basis=legal_basis,
        details=details,
    )


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
