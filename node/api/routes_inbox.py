"""A reception officer's inbox: upcoming arrivals, a summary (audited view), follow-up."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from node.api.guards import BadRequest, allow, int_param, json_body, principal_of
from node.api.keys import API_CONTEXT
from node.api.openapi import validate_body
from node.api.users import Role
from node.intake import inbox
from node.storage.api_models import InboxItem


def item_view(item: InboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "doc_type": item.doc_type,
        "message_id": item.message_id,
        "sender_node": item.sender_node,
        "arrival_date": item.arrival_date,
        "priority": item.priority,
        "received_at": item.received_at.isoformat(),
        "acknowledged_at": item.acknowledged_at.isoformat() if item.acknowledged_at else None,
        "acknowledged_by": item.acknowledged_by,
        "outcome": item.outcome,
        "outcome_note": item.outcome_note,
    }


def _date(request: web.Request, name: str) -> dt.date | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest("invalid_parameter", f"{name} must be a date, YYYY-MM-DD") from exc


MAX_ITEM_ID = 2**31 - 1  # the integer column's range on both backends


def _item_id(request: web.Request) -> int:
    try:
        item_id = int(request.match_info["item_id"])
    except ValueError as exc:
        raise inbox.InboxError("not_found", "no such inbox item") from exc
    if not 1 <= item_id <= MAX_ITEM_ID:
        raise inbox.InboxError("not_found", "no such inbox item")
    return item_id


@allow(Role.RECEPTION_OFFICER)
async def list_items(request: web.Request) -> web.Response:
    principal = principal_of(request)
    acknowledged_raw = request.query.get("acknowledged")
    if acknowledged_raw not in (None, "true", "false"):
        raise BadRequest("invalid_parameter", "acknowledged must be true or false")
    doc_type = request.query.get("doc_type")
    if doc_type is not None and doc_type not in inbox.INBOX_DOCUMENTS:
        raise BadRequest(
            "invalid_parameter", f"doc_type must be one of {', '.join(inbox.INBOX_DOCUMENTS)}"
        )
    limit = int_param(request, "limit", 50, 1, 200)
    offset = int_param(request, "offset", 0, 0, 10_000_000)
    page = await inbox.list_inbox(
        request.app[API_CONTEXT],
        principal.authority,
        arrival_from=_date(request, "from"),
        arrival_to=_date(request, "to"),
        doc_type=doc_type,
        acknowledged=None if acknowledged_raw is None else acknowledged_raw == "true",
        limit=limit,
        offset=offset,
    )
    return web.json_response(
        {
            "items": [item_view(i) for i in page.items],
            "total": page.total,
            "limit": limit,
            "offset": offset,
        }
    )


@allow(Role.RECEPTION_OFFICER)
async def get_item(request: web.Request) -> web.Response:
    principal = principal_of(request)
    ctx = request.app[API_CONTEXT]
    item, document = await inbox.view_item(
        ctx,
        authority=principal.authority,
        username=principal.username,
        item_id=_item_id(request),
    )
    return web.json_response(
        {
            "item": item_view(item),
            "summary": document,
            "erased": document is None,
            "withheld": await inbox.withheld_for_safety(ctx, item, document),
        }
    )


@allow(Role.RECEPTION_OFFICER)
async def acknowledge(request: web.Request) -> web.Response:
    principal = principal_of(request)
    item = await inbox.acknowledge(
        request.app[API_CONTEXT],
        authority=principal.authority,
        username=principal.username,
        item_id=_item_id(request),
    )
    return web.json_response(item_view(item))


@allow(Role.RECEPTION_OFFICER)
async def record_outcome(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await json_body(request)
    validate_body("OutcomeRequest", body)
    assert isinstance(body, dict)
    item = await inbox.record_outcome(
        request.app[API_CONTEXT],
        authority=principal.authority,
        username=principal.username,
        item_id=_item_id(request),
        outcome=body["outcome"],
        note=body.get("note"),
    )
    return web.json_response(item_view(item))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/inbox", list_items)
    app.router.add_get("/api/v1/inbox/{item_id}", get_item)
    app.router.add_post("/api/v1/inbox/{item_id}/acknowledge", acknowledge)
    app.router.add_post("/api/v1/inbox/{item_id}/outcome", record_outcome)
