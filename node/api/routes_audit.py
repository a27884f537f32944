"""The auditors' HTTP API over the audit log: JSON (and CSV) answers, problem+json refusals.

``add_routes(router, prefix)`` adds, under ``/api/v1/audit`` by default:

    GET checkpoint[?size=N]                     signed checkpoint + who witnessed it
    GET proof/inclusion?index=I[&size=N]        RFC 9162 inclusion proof
    GET proof/consistency?old=M[&new=N]         RFC 9162 consistency proof
    GET entries?start=S&limit=L[&format=csv]    entries by range
    GET query?case_ref=&counterparty=&purpose=&legal_basis=&event=&since=&until=[&format=csv]
    GET subject-report?case_ref=REF             every entry about one case, with proofs
    GET witnessed                               which peer witnessed which tree size
    GET forks                                   forks seen while witnessing peers

The local API (issue 7) mounts it behind its authentication; ``context_of``
says where the NodeContext lives in that app.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node.auditlog import queries as audit_queries
from node.auditlog.queries import AuditQueryError, EntryQuery
from node.core.errors import PuenteError
from node.core.responses import problem_response
from node.storage.context import NodeContext

ContextOf = Callable[[web.Request], NodeContext]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _default_context(request: web.Request) -> NodeContext:
    from node.federation.app_keys import CONTEXT

    return request.app[CONTEXT]


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 18:
        raise AuditQueryError("bad_parameter", f"{name} is a non-negative integer")
    return int(text)


def _required_int(request: web.Request, name: str) -> int:
    value = _int(request, name)
    if value is None:
        raise AuditQueryError("missing_parameter", f"{name} is required")
    return value


def _time(request: web.Request, ctx: NodeContext, name: str) -> dt.datetime | None:
    text = request.query.get(name)
    if text is None:
        return None
    return audit_queries.time_bound(ctx, text, name=name, end=name == "until")


def _case(request: web.Request) -> str | None:
    """The case reference asked for (``case_ref``; ``case_id`` is its older name)."""
    return request.query.get("case_ref") or request.query.get("case_id") or None


def _rows_response(request: web.Request, rows: list[Any]) -> web.Response:
    if request.query.get("format") == "csv":
        return web.Response(
            text=audit_queries.entries_csv(rows), content_type="text/csv", charset="utf-8"
        )
    return web.json_response(
        {"entries": [audit_queries.entry_json(r) for r in rows], "count": len(rows)}
    )


def add_routes(
    router: web.UrlDispatcher,
    prefix: str = "/api/v1/audit",
    *,
    context_of: ContextOf = _default_context,
) -> None:
    """Add the auditors' routes under ``prefix``."""

    def route(handler: Callable[[web.Request, NodeContext], Awaitable[web.Response]]) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request, context_of(request))
            except PuenteError as refusal:
                return problem_response(refusal.http_status, refusal.reason, refusal.detail)

        return wrapped

    async def checkpoint(request: web.Request, ctx: NodeContext) -> web.Response:
        return web.json_response(
            await audit_queries.checkpoint_document(ctx, _int(request, "size"))
        )

    async def inclusion(request: web.Request, ctx: NodeContext) -> web.Response:
        doc = await audit_queries.inclusion_proof(
            ctx, _required_int(request, "index"), _int(request, "size")
        )
        return web.json_response(doc)

    async def consistency(request: web.Request, ctx: NodeContext) -> web.Response:
        doc = await audit_queries.consistency_proof(
            ctx, _required_int(request, "old"), _int(request, "new")
        )
        return web.json_response(doc)

    async def entries(request: web.Request, ctx: NodeContext) -> web.Response:
        query = EntryQuery(
            start=_int(request, "start", 0) or 0, limit=_int(request, "limit", 100) or 0
        )
        return _rows_response(request, await audit_queries.query_entries(ctx, query))

    async def query(request: web.Request, ctx: NodeContext) -> web.Response:
        case = _case(request)
        entry_query = EntryQuery(
            case_ref=audit_queries.case_ref_for(ctx, case) if case else None,
            counterparty=request.query.get("counterparty"),
            purpose=request.query.get("purpose"),
            legal_basis=request.query.get("legal_basis"),
            event=request.query.get("event"),
            since=_time(request, ctx, "since"),
            until=_time(request, ctx, "until"),
            start=_int(request, "start", 0) or 0,
            limit=_int(request, "limit", 100) or 0,
        )
        return _rows_response(request, await audit_queries.query_entries(ctx, entry_query))

    async def subject_report(request: web.Request, ctx: NodeContext) -> web.Response:
        case = _case(request)
        if not case:
            raise AuditQueryError(
                "missing_parameter", "case_ref is required: the case reference on the file"
            )
        return web.json_response(await audit_queries.subject_report(ctx, case))

    async def witnessed(request: web.Request, ctx: NodeContext) -> web.Response:
        return web.json_response({"cosignatures": await audit_queries.witnessed_sizes(ctx)})

    async def forks(request: web.Request, ctx: NodeContext) -> web.Response:
        rows = await audit_queries.forks(ctx)
        return web.json_response(
            {
                "forks": [
                    {
                        "node": f.node,
                        "origin": f.origin,
                        "reason": f.reason,
                        "detected_at": f.detected_at.isoformat(),
                        "reported_by": f.reported_by,
                        "cosigned_checkpoint": f.cosigned_note,
                        "presented_checkpoint": f.presented_note,
                    }
                    for f in rows
                ]
            }
        )

    base = prefix.rstrip("/")
    router.add_get(f"{base}/checkpoint", route(checkpoint))
    router.add_get(f"{base}/proof/inclusion", route(inclusion))
    router.add_get(f"{base}/proof/consistency", route(consistency))
    router.add_get(f"{base}/entries", route(entries))
    router.add_get(f"{base}/query", route(query))
    router.add_get(f"{base}/subject-report", route(subject_report))
    router.add_get(f"{base}/witnessed", route(witnessed))
    router.add_get(f"{base}/forks", route(forks))
