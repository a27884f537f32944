"""The local API application factory and its middlewares.

In order: every refusal becomes problem+json (``problems_middleware``); the
client address is charged and the token checked (``auth_middleware``,
node.api.preauth before node.api.users); the body is read under the body
timeout (``body_middleware``); then the handler.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiohttp import web

from node.api import (
    preauth,
    routes_admin,
    routes_cases,
    routes_disclosures,
    routes_inbox,
    routes_me,
    routes_ops,
)
from node.api import routes_audit as audit_api
from node.api.guards import Forbidden, RequestTimeout, TooManyRequests
from node.api.keys import API_CONTEXT, METRICS, ON_QUEUED, PREAUTH, PRINCIPAL, RATE_LIMITER
from node.api.metrics import ApiMetrics
from node.api.users import AuthError, Role, authenticate
from node.auditlog import entries as audit
from node.core.errors import PuenteError
from node.core.listening import start_tls_site
from node.core.logs import get_logger
from node.core.ratelimit import KeyedBuckets
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
        if refusal.http_status == 403:
            # A 401 is counted per source and minute instead (node.api.preauth):
            # anyone can send one, and the log must not grow with a stranger's flood.
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


def _too_many(wait: float) -> TooManyRequests:
    return TooManyRequests("rate_limited", f"too many requests; retry after {max(1, round(wait))}")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request.app[API_CONTEXT]
    gate = request.app[PREAUTH]
    source = preauth.source_of(request)
    wait = gate.admit(source)
    if wait > 0:
        gate.tally.add(source, "rate_limited", ctx.now())
        raise _too_many(wait)
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    try:
        principal = await authenticate(ctx, request.headers.get("Authorization"))
    except AuthError as refused:
        gate.tally.add(source, refused.reason, ctx.now(), user=refused.user)
        raise
    request[PRINCIPAL] = principal
    if request.path.startswith(AUDIT_PREFIX + "/") and principal.role != Role.AUDITOR:
        # The audit API is for auditors only: it names cases, counterparties and users.
        raise Forbidden("role_forbidden", f"a {principal.role} may not read the audit log")
    wait = request.app[RATE_LIMITER].take(f"user:{principal.user_id}", time.monotonic())
    if wait > 0:
        raise _too_many(wait)
    return await handler(request)


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read an authenticated request's body under ``[api] body_timeout`` (408 if it is slower).

    aiohttp keeps what it read, so handlers' ``request.json()`` then costs no wait.
    """
    if request.body_exists:
        try:
            async with asyncio.timeout(request.app[API_CONTEXT].config.api.body_timeout):
                await request.read()
        except TimeoutError as exc:
            raise RequestTimeout("request_timeout", "the body did not arrive in time") from exc
    return await handler(request)


def create_api_app(
    ctx: NodeContext,
    extra_routes: Iterable[Callable[[web.Application], None]] = (),
    *,
    on_queued: Callable[[], None] | None = None,
) -> web.Application:
    """The local API. ``on_queued`` wakes the deliverer after a disclosure is queued."""
    app = web.Application(
        middlewares=[problems_middleware, auth_middleware, body_middleware],
        client_max_size=ctx.config.api.max_body_bytes,
    )
    app[API_CONTEXT] = ctx
    app[METRICS] = ApiMetrics()
    app[RATE_LIMITER] = KeyedBuckets(ctx.config.api.rate_per_second, ctx.config.api.burst)
    app[PREAUTH] = preauth.PreauthGate(ctx.config.api)
    app.cleanup_ctx.append(_preauth_tally)
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


async def _preauth_tally(app: web.Application) -> AsyncIterator[None]:
    async for _ in preauth.flushing(app[API_CONTEXT], app[PREAUTH]):
        yield


async def start_api_site(app: web.Application, ctx: NodeContext) -> web.AppRunner:
    """Listen for the local API on its own port, over HTTPS with the node's certificate."""
    from node.trust.tls import api_server_context

    runner = await start_tls_site(
        app,
        host=ctx.config.api.host,
        port=ctx.config.api.port,
        ssl_context=api_server_context(ctx.keys.tls),
        limits=ctx.config.api.limits,
        body_timeout=ctx.config.api.body_timeout,
    )
    log.info("api_listening", node=ctx.node_id, host=ctx.config.api.host, port=ctx.config.api.port)
    return runner
