"""Cases held by the interviewing node, and the interview-once view of any case.

Service functions over a :class:`NodeContext`, returning plain dataclasses
(the CLI and the local API call the same ones). A case is created by the
authority that interviewed her; interviews add answers and coverage; the
coverage report combines what this node holds of a case — its own record,
the summaries it received, its own addenda — so that nobody asks again what
was already asked.

A case reference is the holding authority's: two authorities of one node may
use the same one (the key is (authority, case_ref)). Whatever names an
authority answers only with that authority's cases, and another's is
``unknown_case`` exactly as one that does not exist.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.casework import at_rest
from node.core import schemas
from node.core.clock import rfc3339
from node.core.errors import PuenteError, SchemaError
from node.intake.datakeys import DataKeyError, DataKeyStore
from node.intake.summaries import audit_case_ref, list_received
from node.rules.interview import (
    CoverageEntry,
    CoverageReport,
    coverage_of,
    coverage_report,
    merge_interview,
    uncovered_answers,
)
from node.storage.consent_models import CaseAddendum, CaseRow
from node.storage.context import NodeContext
from node.wire.fields import field_paths


class CaseError(PuenteError):
    """A case is unknown, or a change to it is refused."""

    reason = "case_invalid"
    http_status = 422


class CaseErased(CaseError):
    """The case was crypto-shredded: its data key is gone, and with it every copy."""

    reason = "case_erased"
    http_status = 410


@dataclass(frozen=True)
class Case:
    case_id: str
    case_ref: str
    authority: str
    created_at: dt.datetime
    updated_at: dt.datetime
    document: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "case_ref": self.case_ref,
            "authority": self.authority,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "document": dict(self.document),
        }


def _case(store: DataKeyStore, row: CaseRow) -> Case:
    """The case with its document decrypted (node.casework.at_rest)."""
    try:
        document = at_rest.read(store, row)
    except DataKeyError as exc:
        raise CaseErased(detail=f"case {row.case_ref} was erased") from exc
    return Case(row.case_id, row.case_ref, row.authority, row.created_at, row.updated_at, document)


def own_authority_kind(ctx: NodeContext, authority: str) -> str:
    """The kind of one of this node's authorities, or :class:`CaseError` ``unknown_authority``."""
    own = ctx.directory.node(ctx.node_id)
    found = own.authorities.get(authority) if own else None
    if found is None:
        raise CaseError("unknown_authority", f"{authority} is not an authority of this node")
    return found.kind


def _check_document(document: Mapping[str, Any]) -> None:
    try:
        schemas.validate(schemas.CASE, document, reason="case_invalid")
    except SchemaError as exc:
        raise CaseError("case_invalid", exc.detail) from exc
    missing = uncovered_answers(document.get("interview", {}))
    if missing:
        raise CaseError(
            "coverage_missing",
            "answers without a coverage entry (who asked, when, in which language): "
            + ", ".join(missing),
        )


async def create_case(ctx: NodeContext, *, authority: str, document: Mapping[str, Any]) -> Case:
    """Record a new case (schemas/case) held by ``authority``, sealed under its own data key."""
    own_authority_kind(ctx, authority)
    _check_document(document)
    now = ctx.now()
    key_id, key = await at_rest.new_key(ctx)
    row = CaseRow(
        case_id=str(uuid.uuid4()),
        case_ref=document["case_ref"],
        authority=authority,
        created_at=now,
        updated_at=now,
        data_key_id=key_id,
    )
    at_rest.seal(row, key, document)
    try:
        async with ctx.sessions.begin() as session:
            session.add(row)
            await session.flush()
            await audit.append(
                session,
                node=ctx.node_id,
                event="case.created",
                at=now,
                case_ref=audit_case_ref(ctx, row.case_ref),
                authority=authority,
                fields=field_paths(document),
            )
    except IntegrityError as exc:
        at_rest.key_store(ctx).destroy(key_id)  # its case never existed
        # Only this authority's own cases can collide (the key is (authority, case_ref)).
        raise CaseError("case_exists", "your authority has a case with this case_ref") from exc
    return Case(row.case_id, row.case_ref, authority, now, now, dict(document))


async def find_case(ctx: NodeContext, key: str, *, authority: str | None = None) -> Case:
    """A case by id or by case_ref; :class:`CaseError` ``unknown_case``.

    With ``authority``, only that authority's case: another authority's is
    ``unknown_case``, word for word as a case that does not exist. Without it
    (the operator's CLI), a case_ref two authorities use is ``case_ambiguous``.
    """
    async with ctx.sessions() as session:
        row = await session.get(CaseRow, key)
        if row is None or (authority is not None and row.authority != authority):
            query = select(CaseRow).where(CaseRow.case_ref == key)
            if authority is not None:
                query = query.where(CaseRow.authority == authority)
            found = list((await session.execute(query.limit(2))).scalars())
            if len(found) > 1:
                raise CaseError(
                    "case_ambiguous", f"more than one authority holds a case {key}; name one"
                )
            row = found[0] if found else None
    if row is None:
        raise CaseError("unknown_case", f"no case {key} on this node")
    return _case(at_rest.key_store(ctx), row)


async def resolve_case(ctx: NodeContext, key: str, *, acting: str) -> Case:
    """The case an authority of this node acts on: by id, or by reference — its own first.

    A reference names the acting authority's case when it has one; otherwise
    the node's only case with that reference (``case_ambiguous`` if several).
    One authority may record a route step on, or send, a case another of the
    node's authorities holds (docs/critical-route.md) — through the operator's
    CLI and the demo; the API lets a user act only on their authority's cases.
    """
    try:
        return await find_case(ctx, key, authority=acting)
    except CaseError as exc:
        if exc.reason != "unknown_case":
            raise
    return await find_case(ctx, key)


async def list_cases(
    ctx: NodeContext, *, authority: str | None = None, case_ref: str | None = None
) -> list[Case]:
    """Cases not erased, of one authority (of every one for the operator), oldest first."""
    query = select(CaseRow).where(CaseRow.erased_at.is_(None)).order_by(CaseRow.created_at)
    if authority is not None:
        query = query.where(CaseRow.authority == authority)
    if case_ref is not None:
        query = query.where(CaseRow.case_ref == case_ref)
    store = at_rest.key_store(ctx)
    async with ctx.sessions() as session:
        rows = (await session.execute(query)).scalars()
        return [_case(store, r) for r in rows]


def stamp_coverage(
    interview: Mapping[str, Any],
    *,
    node: str,
    authority: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Fill who and when into coverage entries given as ``{topic, language, interpreter}``."""
    stamped = dict(interview)
    stamped["coverage"] = [
        {
            "topic": entry["topic"],
            "asked_at": entry.get("asked_at", rfc3339(now)),
            "node": entry.get("node", node),
            "authority": entry.get("authority", authority),
            "language": entry["language"],
            "interpreter": bool(entry["interpreter"]),
        }
        for entry in interview.get("coverage", [])
    ]
    return stamped


def _check_interview(interview: Mapping[str, Any]) -> None:
    if not isinstance(interview, Mapping):
        raise CaseError("case_invalid", "an interview section is a JSON object")
    try:
        schemas.validate(
            schemas.CASE, {"case_ref": "check-only", "person": {}, "interview": interview}
        )
    except SchemaError as exc:
        raise CaseError("case_invalid", exc.detail) from exc
    if not interview.get("coverage"):
        raise CaseError("coverage_missing", "say which topics were asked (coverage)")
    missing = uncovered_answers(interview)
    if missing:
        raise CaseError("coverage_missing", "answers without coverage: " + ", ".join(missing))


async def record_interview(
    ctx: NodeContext, key: str, *, authority: str, interview: Mapping[str, Any]
) -> Case:
    """Add answers and the topics asked (coverage) to a case ``authority`` holds."""
    own_authority_kind(ctx, authority)
    stamped = stamp_coverage(interview, node=ctx.node_id, authority=authority, now=ctx.now())
    _check_interview(stamped)

    def add(document: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        merged = merge_interview(document.get("interview", {}), stamped)
        details = {
            "topics": sorted({e["topic"] for e in stamped["coverage"]}),
            "fields": field_paths({"interview": stamped}),
        }
        return {**document, "interview": merged}, details

    return await change_case(ctx, key, add, authority=authority, event="case.interviewed")


# A change to a case: the new document from the current one, and the audit entry's details
# (ids, names and codes — never values).
Change = Callable[[Mapping[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


async def change_case(
    ctx: NodeContext, key: str, change: Change, *, authority: str, event: str
) -> Case:
    """Change a case as ``authority``: under its row lock, checked, sealed, audited, at once.

    ``change`` may raise to refuse; the new document must still be a valid case.
    """
    own_authority_kind(ctx, authority)
    case = await resolve_case(ctx, key, acting=authority)
    now = ctx.now()
    store = at_rest.key_store(ctx)
    async with ctx.sessions.begin() as session:
        row = await session.get(CaseRow, case.case_id, with_for_update=True)
        assert row is not None
        document, details = change(_case(store, row).document)
        _check_document(document)
        if row.data_key_id is None:  # written before encryption at rest: sealed now
            row.data_key_id, data_key = await at_rest.new_key(ctx)
            at_rest.seal(row, data_key, document)
        else:
            at_rest.rewrite(store, row, document)
        row.updated_at = now
        await audit.append(
            session,
            node=ctx.node_id,
            event=event,
            at=now,
            case_ref=audit_case_ref(ctx, row.case_ref),
            authority=authority,
            **details,
        )
    return await find_case(ctx, case.case_id)


ERASURE_REASONS = ("data_subject_request", "entered_in_error", "no_longer_needed")


async def erase_case(ctx: NodeContext, key: str, *, authority: str, reason: str) -> str:
    """Crypto-shred a case ``authority`` holds: destroy its data key. Returns the case id.

    Consents and what was disclosed stay as they are: telling recipients to
    erase is withdrawing her consent (node.casework.consents).
    """
    if reason not in ERASURE_REASONS:
        raise CaseError("bad_reason", f"reason must be one of {', '.join(ERASURE_REASONS)}")
    case = await find_case(ctx, key, authority=authority)
    async with ctx.sessions.begin() as session:
        row = await session.get(CaseRow, case.case_id, with_for_update=True)
        assert row is not None
        if row.erased_at is None:
            await at_rest.erase(ctx, session, row, reason=reason, now=ctx.now())
    return case.case_id


@dataclass(frozen=True)
class Addendum:
    addendum_id: str
    case_ref: str
    origin_node: str
    authority: str
    created_at: dt.datetime
    interview: Mapping[str, Any]
    shared_message_id: str | None


def _addendum(row: CaseAddendum) -> Addendum:
    return Addendum(
        row.addendum_id,
        row.case_ref,
        row.origin_node,
        row.authority,
        row.created_at,
        row.interview,
        row.shared_message_id,
    )


async def add_addendum(
    ctx: NodeContext,
    *,
    case_ref: str,
    origin_node: str,
    authority: str,
    interview: Mapping[str, Any],
) -> Addendum:
    """Record what this node's ``authority`` learned about a case it received."""
    own_authority_kind(ctx, authority)
    held = [
        s
        for s in await list_received(ctx, case_ref, recipient_authority=authority)
        if s.sender_node == origin_node and s.erased_at is None
    ]
    if not held:
        raise CaseError("unknown_case", f"no readable summary of {case_ref} from {origin_node}")
    now = ctx.now()
    stamped = stamp_coverage(interview, node=ctx.node_id, authority=authority, now=now)
    _check_interview(stamped)
    row = CaseAddendum(
        addendum_id=str(uuid.uuid4()),
        case_ref=case_ref,
        origin_node=origin_node,
        authority=authority,
        created_at=now,
        interview=stamped,
    )
    async with ctx.sessions.begin() as session:
        session.add(row)
        await session.flush()
        await audit.append(
            session,
            node=ctx.node_id,
            event="case.addendum",
            at=now,
            counterparty=origin_node,
            case_ref=audit_case_ref(ctx, case_ref),
            authority=authority,
            addendum_id=row.addendum_id,
            topics=sorted({e["topic"] for e in stamped["coverage"]}),
        )
    return _addendum(row)


async def list_addenda(
    ctx: NodeContext, case_ref: str, *, authority: str | None = None
) -> list[Addendum]:
    """Addenda recorded about a case (by ``authority`` only, if given)."""
    query = select(CaseAddendum).where(CaseAddendum.case_ref == case_ref)
    if authority is not None:
        query = query.where(CaseAddendum.authority == authority)
    async with ctx.sessions() as session:
        rows = (await session.execute(query.order_by(CaseAddendum.created_at))).scalars()
        return [_addendum(r) for r in rows]


async def get_addendum(ctx: NodeContext, addendum_id: str) -> Addendum:
    async with ctx.sessions() as session:
        row = await session.get(CaseAddendum, addendum_id)
    if row is None:
        raise CaseError("unknown_addendum", f"no addendum {addendum_id}")
    return _addendum(row)


async def mark_addendum_shared(
    ctx: NodeContext, addendum_id: str, message_id: str, session: AsyncSession
) -> None:
    row = await session.get(CaseAddendum, addendum_id)
    if row is not None:
        row.shared_message_id = message_id


async def coverage(
    ctx: NodeContext, case_ref: str, *, authority: str | None = None
) -> CoverageReport:
    """Which interview topics are covered for a case (by whom, when) and which are missing.

    Combines the case this node holds (if it interviewed her), every readable
    summary it received for that case, and its own addenda — of ``authority``
    only when it is given (the API always gives it; the operator's CLI may
    look across the node's authorities).
    """
    held = await list_cases(ctx, authority=authority, case_ref=case_ref)
    received = await list_received(ctx, case_ref, recipient_authority=authority)
    entries: list[CoverageEntry] = []
    for case in held:
        entries += coverage_of(case.document)
    for summary in received:
        if summary.body is not None:
            entries += coverage_of(summary.body)
    for addendum in await list_addenda(ctx, case_ref, authority=authority):
        entries += coverage_of({"interview": addendum.interview})
    if not entries and not held and not received:
        raise CaseError("unknown_case", f"nothing is held here about {case_ref}")
    return coverage_report(_unique(entries))


def _unique(entries: Sequence[CoverageEntry]) -> list[CoverageEntry]:
    # The same entry arrives once per summary that carried it (a handoff, then a share-back).
    return list(dict.fromkeys(entries))
