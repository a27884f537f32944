"""Operators' endpoints: liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import func, select, text

from node.api.keys import API_CONTEXT, METRICS
from node.api.openapi import openapi_document
from node.storage.models import AuditEntry, Disclosure, ReceivedMessage


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    ctx = request.app[API_CONTEXT]
    return web.json_response({"status": "ok", "node": ctx.node_id})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers and the directory has not expired."""
    ctx = request.app[API_CONTEXT]
    checks: dict[str, str] = {}
    try:
        async with ctx.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # any failure means not ready; the detail goes to the log only
        checks["database"] = "unavailable"
    checks["directory"] = "expired" if ctx.directory.is_expired(ctx.now()) else "ok"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    gauges = request.app[METRICS]
    async with ctx.sessions() as session:
        by_state = await session.execute(
            select(Disclosure.state, func.count()).group_by(Disclosure.state)
        )
        for state, count in by_state.all():
            gauges.disclosures.labels(state=state).set(count)
        received = await session.execute(select(func.count()).select_from(ReceivedMessage))
        gauges.received.set(received.scalar_one())
        entries = await session.execute(select(func.count()).select_from(AuditEntry))
        gauges.audit_entries.set(entries.scalar_one())
    gauges.directory_expiry.set((ctx.directory.expires_at - ctx.now()).total_seconds())
    return web.Response(
        body=gauges.render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def openapi(_request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/openapi.json", openapi)
