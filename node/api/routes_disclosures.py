"""A caseworker follows the disclosures of their own authority."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from node.api.guards import BadRequest, allow, int_param, principal_of
from node.api.keys import API_CONTEXT
from node.api.users import Role
from node.core.errors import PuenteError
from node.delivery import status as delivery_status
from node.storage.models import Disclosure

STATES = ("queued", "sending", "delivered", "refused", "expired", "withdrawn")


class NotFound(PuenteError):
    reason = "not_found"
    http_status = 404


def disclosure_view(row: Disclosure) -> dict[str, Any]:
    """What a caseworker sees of a disclosure: state and metadata, never the contents."""
    return {
        "message_id": row.message_id,
        "doc_type": row.doc_type,
        "case_ref": row.case_ref,
        "sender_authority": row.sender_authority,
        "recipient": {"node": row.recipient_node, "authority": row.recipient_authority},
        "fields": list(row.fields),
        "state": row.state,
        "attempts": row.attempts,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
        # Only a pending disclosure has a next attempt (GET one refines it, see below).
        "next_attempt_at": row.next_attempt_at.isoformat()
        if row.state in ("queued", "sending")
        else None,
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
        "refusal_reason": row.refusal_reason,
        "last_error": row.last_error,
        "receipt": row.receipt,
    }


@allow(Role.CASEWORKER)
async def list_disclosures(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    principal = principal_of(request)
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise BadRequest("invalid_parameter", f"state must be one of {', '.join(STATES)}")
    limit = int_param(request, "limit", 50, 1, 200)
    offset = int_param(request, "offset", 0, 0, 10_000_000)
    where = [Disclosure.sender_authority == principal.authority]
    if state is not None:
        where.append(Disclosure.state == state)
    async with ctx.sessions() as session:
        total = (
            await session.execute(select(func.count()).select_from(Disclosure).where(*where))
        ).scalar_one()
        rows = (
            (
                await session.execute(
                    select(Disclosure)
                    .where(*where)
                    .order_by(Disclosure.created_at.desc(), Disclosure.message_id)
                    .limit(limit)
                    .offset(offset)
                )
            )
            .scalars()
            .all()
        )
    return web.json_response(
        {
            "items": [disclosure_view(r) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


@allow(Role.CASEWORKER)
async def get_disclosure(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    principal = principal_of(request)
    async with ctx.sessions() as session:
        row = await session.get(Disclosure, request.match_info["message_id"])
    if row is None or row.sender_authority != principal.authority:
        raise NotFound("not_found", "no such disclosure for your authority")
    view = disclosure_view(row)
    status = await delivery_status.disclosure(ctx, row.message_id)
    if status is not None and status.next_attempt_at is not None:
        # A waiting disclosure is tried no earlier than the head of its peer's queue.
        view["next_attempt_at"] = status.next_attempt_at.isoformat()
    return web.json_response(view)


@allow(Role.CASEWORKER, Role.ADMIN)
async def peer_health(request: web.Request) -> web.Response:
    """Each destination node: reachable, backlog, next retry, last error."""
    ctx = request.app[API_CONTEXT]
    peers = await delivery_status.peers(ctx)
    return web.json_response({"items": [p.as_json() for p in peers]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/disclosures", list_disclosures)
    app.router.add_get("/api/v1/disclosures/{message_id}", get_disclosure)
    app.router.add_get("/api/v1/delivery/peers", peer_health)
