"""Cases held by the interviewing node, and the interview-once view of any case.

Service functions over a :class:`NodeContext`, returning plain dataclasses
(the CLI and the local API call the same ones). A case is created by the
authority that interviewed her; interviews add answers and coverage; the
coverage report combines what this node holds of a case — its own record,
the summaries it received, its own addenda — so that nobody asks again what
was already asked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.core import schemas
from node.core.clock import rfc3339
from node.core.errors import PuenteError, SchemaError
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


def _case(row: CaseRow) -> Case:
    return Case(
        row.case_id, row.case_ref, row.authority, row.created_at, row.updated_at, row.document
    )


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
    """Record a new case (schemas/case) held by ``authority`` of this node."""
    own_authority_kind(ctx, authority)
    _check_document(document)
    now = ctx.now()
    row = CaseRow(
        case_id=str(uuid.uuid4()),
        case_ref=document["case_ref"],
        authority=authority,
        created_at=now,
        updated_at=now,
        document=dict(document),
    )
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
        raise CaseError("case_exists", "a case with this case_ref already exists") from exc
    return _case(row)


async def find_case(ctx: NodeContext, key: str) -> Case:
    """A case by id or by case_ref; :class:`CaseError` ``unknown_case``."""
    async with ctx.sessions() as session:
        row = await session.get(CaseRow, key)
        if row is None:
            row = (
                await session.execute(select(CaseRow).where(CaseRow.case_ref == key))
            ).scalar_one_or_none()
    if row is None:
        raise CaseError("unknown_case", f"no case {key} on this node")
    return _case(row)


async def list_cases(ctx: NodeContext) -> list[Case]:
    async with ctx.sessions() as session:
        rows = (await session.execute(select(CaseRow).order_by(CaseRow.created_at))).scalars()
        return [_case(r) for r in rows]


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
    """Add answers and the topics asked (coverage) to a case this node holds."""
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
    """Change a case this node holds: under its row lock, checked, audited, in one transaction.

    ``change`` may raise to refuse; the new document must still be a valid case.
    """
    own_authority_kind(ctx, authority)
    case = await find_case(ctx, key)
    now = ctx.now()
    async with ctx.sessions.begin() as session:
        row = await session.get(CaseRow, case.case_id, with_for_update=True)
        assert row is not None
        document, details = change(row.document)
        _check_document(document)
        row.document = document
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
        for s in await list_received(ctx, case_ref)
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


async def list_addenda(ctx: NodeContext, case_ref: str) -> list[Addendum]:
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(CaseAddendum)
                .where(CaseAddendum.case_ref == case_ref)
                .order_by(CaseAddendum.created_at)
            )
        ).scalars()
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


async def coverage(ctx: NodeContext, case_ref: str) -> CoverageReport:
    """Which interview topics are covered for a case (by whom, when) and which are missing.

    Combines the case this node holds (if it interviewed her), every readable
    summary it received for that case, and its own addenda.
    """
    entries: list[CoverageEntry] = []
    with contextlib.suppress(CaseError):
        entries += coverage_of((await find_case(ctx, case_ref)).document)
    for summary in await list_received(ctx, case_ref):
        if summary.body is not None:
            entries += coverage_of(summary.body)
    for addendum in await list_addenda(ctx, case_ref):
        entries += coverage_of({"interview": addendum.interview})
    if not entries and not await _known(ctx, case_ref):
        raise CaseError("unknown_case", f"nothing is held here about {case_ref}")
    return coverage_report(_unique(entries))


async def _known(ctx: NodeContext, case_ref: str) -> bool:
    try:
        await find_case(ctx, case_ref)
    except CaseError:
        return bool(await list_received(ctx, case_ref))
    return True


def _unique(entries: Sequence[CoverageEntry]) -> list[CoverageEntry]:
    # The same entry arrives once per summary that carried it (a handoff, then a share-back).
    return list(dict.fromkeys(entries))
