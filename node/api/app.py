"""The local API application factory and its middlewares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from node.api import (
    routes_admin,
    routes_cases,
    routes_disclosures,
    routes_inbox,
    routes_me,
    routes_ops,
)
from node.api import routes_audit as audit_api
from node.api.guards import Forbidden, TooManyRequests
from node.api.keys import API_CONTEXT, METRICS, ON_QUEUED, PRINCIPAL, RATE_LIMITER
from node.api.metrics import ApiMetrics
from node.api.ratelimit import RateLimiter
from node.api.users import Role, authenticate
from node.auditlog import entries as audit
from node.core.errors import PuenteError
from node.core.logs import get_logger
from node.core.responses import problem_response
from node.storage.context import NodeContext

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUDIT_PREFIX = "/api/v1/audit"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"})
ROUTE_MODULES = (
    routes_ops,
    routes_me,
    routes_cases,
    routes_disclosures,
    routes_inbox,
    routes_admin,
)

_HTTP_REASONS = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    try:
        response = await handler(request)
    except PuenteError as refusal:
        response = problem_response(refusal.http_status, refusal.reason, refusal.detail)
        if isinstance(refusal, TooManyRequests):
            response.headers["Retry-After"] = refusal.detail.split()[-1]
        if refusal.http_status in (401, 403):
            await _audit_refusal(request, refusal.reason)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        reason = _HTTP_REASONS.get(http_error.status, f"http_{http_error.status}")
        response = problem_response(http_error.status, reason, http_error.reason or reason)
    except Exception:
        log.exception("api_internal_error", route=route)
        response = problem_response(500, "internal_error", "the node could not process this")
    metrics.requests.labels(route=route, status=str(response.status)).inc()
    return response


async def _audit_refusal(request: web.Request, reason: str) -> None:
    ctx = request.app[API_CONTEXT]
    principal = request.get(PRINCIPAL)
    async with ctx.sessions.begin() as session:
        await audit.append(
            session,
            node=ctx.node_id,
            event="api.refused",
            at=ctx.now(),
            reason=reason,
            user=principal.username if principal else None,
            route=request.match_info.route.resource.canonical
            if request.match_info.route.resource
            else None,
            method=request.method,
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    ctx = request.app[API_CONTEXT]
    principal = await authenticate(ctx, request.headers.get("Authorization"))
    request[PRINCIPAL] = principal
    if request.path.startswith(AUDIT_PREFIX + "/") and principal.role != Role.AUDITOR:
        # The audit API is for auditors only: it names cases, counterparties and users.
        raise Forbidden("role_forbidden", f"a {principal.role} may not read the audit log")
    limiter = request.app[RATE_LIMITER]
    key = f"user:{principal.user_id}"
    if not limiter.allow(key):
        wait = max(1, round(limiter.retry_after(key)))
        raise TooManyRequests("rate_limited", f"too many requests; retry after {wait}")
    return await handler(request)


def create_api_app(
    ctx: NodeContext,
    extra_routes: Iterable[Callable[[web.Application], None]] = (),
    *,
    on_queued: Callable[[], None] | None = None,
) -> web.Application:
    """The local API. ``on_queued`` wakes the deliverer after a disclosure is queued."""
    app = web.Application(
        middlewares=[problems_middleware, auth_middleware],
        client_max_size=ctx.config.api.max_body_bytes,
    )
    app[API_CONTEXT] = ctx
    app[METRICS] = ApiMetrics()
    app[RATE_LIMITER] = RateLimiter(ctx.config.api.rate_per_second, ctx.config.api.burst)
    if on_queued is not None:
        app[ON_QUEUED] = on_queued
    for module in ROUTE_MODULES:
        module.add_routes(app)
    audit_api.add_routes(
        app.router, AUDIT_PREFIX, context_of=lambda request: request.app[API_CONTEXT]
    )
    for add in extra_routes:
        add(app)
    return app


async def start_api_site(app: web.Application, ctx: NodeContext) -> web.AppRunner:
    """Listen for the local API on its own port, over HTTPS with the node's certificate."""
    from node.trust.tls import api_server_context

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        ctx.config.api.host,
        ctx.config.api.port,
        ssl_context=api_server_context(ctx.keys.tls),
    )
    await site.start()
    log.info("api_listening", node=ctx.node_id, host=ctx.config.api.host, port=ctx.config.api.port)
    return runner
