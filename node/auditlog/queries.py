"""What auditors ask of the log: checkpoints, proofs, entries, queries, subject reports, CSV.

Pure query functions over a NodeContext (no HTTP, no printing): the CLI
(node/commands/audit_cmds.py) and the API (node/audit_api.py) format them.
Proofs are in RFC 9162 form (``leaf_index``, ``tree_size``,
``inclusion_path``; ``tree_size_1``, ``tree_size_2``, ``consistency_path``)
with base64 hashes, and come with the signed checkpoint they lead to, so
``python -m audit inclusion|consistency`` can check them offline.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import datetime as dt
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.auditlog import tree as audit_tree
from node.auditlog.checkpoints import (
    SignedCheckpoint,
    checkpoint_at,
    cosigned_note,
    identity_of,
    latest_checkpoint,
    witnessed,
)
from node.auditlog.events import unknown_event
from node.core.canonical import b64url_decode
from node.core.clock import parse_bound
from node.core.errors import PuenteError
from node.rules.planning import LEGAL_BASES, SHARE_BACK
from node.rules.policy import default_policy_set
from node.storage.audit_models import WitnessFork
from node.storage.consent_models import CaseRow
from node.storage.context import NodeContext
from node.storage.directory_models import DirectoryVersion
from node.storage.models import AuditEntry

MAX_LIMIT = 10_000
# The first sixteen as they have always been (spreadsheets that read them keep
# working), then who acted and to whom; docs/audit-log.md says what each holds.
CSV_COLUMNS = (
    "seq",
    "time",
    "node",
    "event",
    "counterparty",
    "message_id",
    "case_ref",
    "purpose",
    "legal_basis",
    "consent_id",
    "policy_id",
    "policy_digest",
    "reason",
    "doc_type",
    "fields",
    "envelope_sha256",
    "user",
    "authority",
    "counterparty_authority",
    "categories",
    "withheld",
    "policy_version",
    "receipt_sha256",
)
# A CSV column that shows an entry member of another name.
_CSV_SOURCE = {"policy_digest": "policy_sha256"}
# OWASP's CSV injection rule: a cell starting with one of these is a formula to a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ESCAPE = "'"


class AuditQueryError(PuenteError):
    """A question the log cannot answer as asked (no such entry, size, checkpoint)."""

    reason = "bad_audit_query"
    http_status = 400


class UnknownCase(AuditQueryError):
    """No entry of this node's log is about the case asked for."""

    reason = "unknown_case"
    http_status = 404


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def _checkpoint(session: AsyncSession, tree_size: int | None) -> SignedCheckpoint:
    found = (
        await latest_checkpoint(session)
        if tree_size is None
        else await checkpoint_at(session, tree_size)
    )
    if found is None:
        what = "no checkpoint yet" if tree_size is None else f"no checkpoint of size {tree_size}"
        raise AuditQueryError("no_checkpoint", what)
    return found


async def checkpoint_document(ctx: NodeContext, tree_size: int | None = None) -> dict[str, Any]:
    """A signed checkpoint (with cosignatures) and who witnessed it."""
    identity_of(ctx)
    async with ctx.sessions() as session:
        cp = await _checkpoint(session, tree_size)
        note = await cosigned_note(session, cp)
        witnesses = [
            {"witness": c.witness_node, "cosigner": c.cosigner, "cosigned_at": _iso(c.cosigned_at)}
            for c in await witnessed(session)
            if c.tree_size == cp.tree_size
        ]
    return {
        "tree_size": cp.tree_size,
        "root_hash": b64(cp.root_hash),
        "signed_at": _iso(cp.signed_at),
        "checkpoint": note,
        "witnessed_by": witnesses,
    }


async def inclusion_proof(
    ctx: NodeContext, index: int, tree_size: int | None = None
) -> dict[str, Any]:
    """RFC 9162 inclusion proof of entry ``index`` against a signed checkpoint."""
    async with ctx.sessions() as session:
        cp = await _checkpoint(session, tree_size)
        if not 0 <= index < cp.tree_size:
            raise AuditQueryError(
                "entry_not_covered", f"entry {index} is not in the checkpoint of {cp.tree_size}"
            )
        row = await session.get(AuditEntry, index)
        path = await audit_tree.inclusion_proof(session, index, cp.tree_size)
        leaf = (await audit_tree.fetch_nodes(session, [(0, index)]))[(0, index)]
    return {
        "leaf_index": index,
        "tree_size": cp.tree_size,
        "leaf_hash": b64(leaf),
        "inclusion_path": [b64(h) for h in path],
        "entry": row.entry if row is not None else None,
        "checkpoint": cp.note,
    }


async def consistency_proof(
    ctx: NodeContext, old_size: int, new_size: int | None = None
) -> dict[str, Any]:
    """RFC 9162 consistency proof between two signed checkpoints."""
    async with ctx.sessions() as session:
        new = await _checkpoint(session, new_size)
        old = await _checkpoint(session, old_size)
        if old.tree_size > new.tree_size:
            raise AuditQueryError("sizes_out_of_order", "the old size is larger than the new")
        path = await audit_tree.consistency_proof(session, old.tree_size, new.tree_size)
    return {
        "tree_size_1": old.tree_size,
        "tree_size_2": new.tree_size,
        "consistency_path": [b64(h) for h in path],
        "old_checkpoint": old.note,
        "checkpoint": new.note,
    }


@dataclass(frozen=True)
class EntryQuery:
    """Filters an auditor can combine; each is backed by an index."""

    case_ref: str | None = None
    counterparty: str | None = None
    purpose: str | None = None
    legal_basis: str | None = None
    event: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    start: int = 0
    limit: int = 100


async def query_entries(ctx: NodeContext, query: EntryQuery) -> list[AuditEntry]:
    """Entries matching every given filter, in log order, from ``start`` (keyset paging).

    A filter value the log cannot hold (an unknown event, counterparty, purpose
    or legal basis) is refused with the known values, never answered with nothing.
    """
    if not 0 < query.limit <= MAX_LIMIT or query.start < 0:
        raise AuditQueryError("bad_range", f"limit is 1..{MAX_LIMIT}, start at least 0")
    async with ctx.sessions() as session:
        query = await _checked(ctx, session, query)
        return await _query(session, query)


async def _checked(ctx: NodeContext, session: AsyncSession, query: EntryQuery) -> EntryQuery:
    """``query`` with its counterparty in upper case, or AuditQueryError naming the known values."""
    if query.event is not None and (problem := unknown_event(query.event)):
        raise AuditQueryError("unknown_event", problem)
    if query.legal_basis is not None and query.legal_basis not in LEGAL_BASES:
        raise AuditQueryError(
            "unknown_legal_basis",
            f"legal basis {query.legal_basis!r} is not one a disclosure can rest on; "
            f"known: {', '.join(LEGAL_BASES)}",
        )
    if query.purpose is not None:
        purposes = known_purposes()
        if query.purpose not in purposes:
            raise AuditQueryError(
                "unknown_purpose",
                f"purpose {query.purpose!r} is in no policy; known: {', '.join(purposes)}",
            )
    if query.counterparty is not None:
        wanted = query.counterparty.upper()
        members = await known_counterparties(ctx, session)
        if wanted not in members:
            raise AuditQueryError(
                "unknown_counterparty",
                f"counterparty {query.counterparty!r} is no member of any federation directory "
                f"this node has held; known: {', '.join(sorted(members))}",
            )
        query = dataclasses.replace(query, counterparty=wanted)
    return query


def known_purposes() -> list[str]:
    """Every purpose some policy of this node allows a disclosure for."""
    policies = default_policy_set().policies.values()
    return sorted({rule.purpose for policy in policies for rule in policy.rules} | {SHARE_BACK})


async def known_counterparties(ctx: NodeContext, session: AsyncSession) -> set[str]:
    """The node ids of every directory this node has verified (members come and go)."""
    known = set(ctx.directory.nodes)
    for signed in (await session.execute(select(DirectoryVersion.signed))).scalars():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            document = json.loads(b64url_decode(json.loads(signed)["payload"]))
            known.update(str(member["id"]) for member in document["nodes"])
    return known


def time_bound(ctx: NodeContext, text: str, *, name: str, end: bool = False) -> dt.datetime:
    """A since/until a person typed: RFC 3339, or a date as a whole day in the node's zone."""
    try:
        return parse_bound(text, ctx.config.zone, end=end)
    except ValueError as exc:
        raise AuditQueryError(
            "bad_parameter",
            f"{name} is a date (2026-11-23, a whole day in {ctx.config.time_zone}) "
            f"or an RFC 3339 time (2026-11-23T15:00:00Z), not {text!r}",
        ) from exc


async def _first_seq_at(session: AsyncSession, moment: dt.datetime) -> int | None:
    """The first entry recorded at or after ``moment`` (recorded_at is monotonic in seq)."""
    found = await session.execute(
        select(AuditEntry.seq)
        .where(AuditEntry.recorded_at >= moment)
        .order_by(AuditEntry.recorded_at, AuditEntry.seq)
        .limit(1)
    )
    return found.scalar_one_or_none()


async def _query(session: AsyncSession, query: EntryQuery) -> list[AuditEntry]:
    start, end = query.start, None
    if query.since is not None:
        first = await _first_seq_at(session, query.since)
        if first is None:
            return []
        start = max(start, first)
    if query.until is not None:
        end = await _first_seq_at(session, query.until)
    statement = select(AuditEntry).where(AuditEntry.seq >= start)
    if end is not None:
        statement = statement.where(AuditEntry.seq < end)
    for column, value in (
        (AuditEntry.case_ref, query.case_ref),
        (AuditEntry.counterparty, query.counterparty),
        (AuditEntry.purpose, query.purpose),
        (AuditEntry.legal_basis, query.legal_basis),
        (AuditEntry.event, query.event),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if query.since is not None:
        statement = statement.where(AuditEntry.recorded_at >= query.since)
    if query.until is not None:
        statement = statement.where(AuditEntry.recorded_at < query.until)
    statement = statement.order_by(AuditEntry.seq).limit(query.limit)
    return list((await session.execute(statement)).scalars())


def case_ref_for(ctx: NodeContext, case_ref: str) -> str:
    """The pseudonym under which this node logs a case, from its case reference."""
    return audit.case_pseudonym(identity_of(ctx).case_secret, case_ref)


async def _reference_of(ctx: NodeContext, case: str) -> str:
    """The case reference people use; this node's own case id is taken for its reference."""
    async with ctx.sessions() as session:
        ref = (
            await session.execute(select(CaseRow.case_ref).where(CaseRow.case_id == case))
        ).scalar_one_or_none()
    return ref or case


async def subject_report(ctx: NodeContext, case: str) -> dict[str, Any]:
    """Every entry about one case, each with an inclusion proof against the latest checkpoint.

    ``case`` is the case reference on the file (``GT-2026-000123``), as
    sender and recipient both know it, or this node's id for the case. The
    report lists every kind of entry about it (sent, delivered, refused,
    viewed, withdrawn, erased, erasure confirmed) and names the case only by
    its pseudonym. :class:`UnknownCase` if no entry is about it.
    """
    pseudonym = case_ref_for(ctx, await _reference_of(ctx, case))
    rows: list[AuditEntry] = []
    start = 0
    while True:
        batch = await query_entries(
            ctx, EntryQuery(case_ref=pseudonym, start=start, limit=MAX_LIMIT)
        )
        rows.extend(batch)
        if len(batch) < MAX_LIMIT:
            break
        start = batch[-1].seq + 1
    if not rows:
        raise UnknownCase(
            "unknown_case",
            f"no entry of this node's audit log is about case {case!r}: check the case "
            "reference (as written on the file, e.g. GT-2026-000123)",
        )
    async with ctx.sessions() as session:
        cp = await latest_checkpoint(session)
        note = await cosigned_note(session, cp) if cp else None
    proofs = []
    for row in rows:
        covered = cp is not None and row.seq < cp.tree_size
        proofs.append(
            {
                "entry": json.loads(row.entry),
                "inclusion": await inclusion_proof(ctx, row.seq) if covered else None,
            }
        )
    found = [p["entry"] for p in proofs]
    disclosures = [e for e in found if str(e["event"]).startswith("disclosure.")]
    return {
        "case_ref": pseudonym,
        "origin": identity_of(ctx).origin,
        "checkpoint": note,
        "entries": proofs,
        "events": dict(Counter(str(e["event"]) for e in found)),
        "disclosures": len(
            {e.get("message_id") for e in found if e["event"] == "disclosure.queued"}
        ),
        "counterparties": sorted(
            {str(e["counterparty"]) for e in disclosures if "counterparty" in e}
        ),
        "recipients": sorted(
            {
                f"{e['counterparty']}/{e['counterparty_authority']}"
                for e in disclosures
                if "counterparty" in e and "counterparty_authority" in e
            }
        ),
    }


def csv_cell(value: Any) -> str:
    """One CSV cell: lists joined by ';', and never a formula (OWASP CSV injection).

    A cell that would start with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return, or with the escape itself, gets one apostrophe in front: a
    spreadsheet shows it as text, and a program gets the value back exactly by
    removing the first character of any cell that starts with an apostrophe.
    """
    text = ";".join(map(str, value)) if isinstance(value, list) else str(value)
    if text.startswith((*_FORMULA_START, _ESCAPE)):
        return _ESCAPE + text
    return text


def entries_csv(rows: Iterable[AuditEntry]) -> str:
    """CSV (RFC 4180) for spreadsheets: one row per entry, lists joined by ';'."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        body = json.loads(row.entry)
        writer.writerow(
            [csv_cell(body.get(_CSV_SOURCE.get(column, column), "")) for column in CSV_COLUMNS]
        )
    return out.getvalue()


def entry_json(row: AuditEntry) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(row.entry)
    return body


async def forks(ctx: NodeContext) -> Sequence[WitnessFork]:
    async with ctx.sessions() as session:
        query = select(WitnessFork).order_by(WitnessFork.id)
        return list((await session.execute(query)).scalars())


async def witnessed_sizes(ctx: NodeContext) -> list[dict[str, Any]]:
    """Which peer witnessed which tree size of this node's log, and when."""
    async with ctx.sessions() as session:
        return [
            {
                "tree_size": c.tree_size,
                "witness": c.witness_node,
                "cosigner": c.cosigner,
                "cosigned_at": _iso(c.cosigned_at),
            }
            for c in await witnessed(session)
        ]


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
