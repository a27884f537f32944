"""The federation endpoint: peers POST envelopes over mutual TLS.

``create_app`` builds the aiohttp application; ``serve`` runs it with the
deliverer as a background task. Every refusal is an RFC 9457 problem with a
reason code and an audit entry; an unexpected error is a generic 500 problem
(never a stack trace) and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from node.auditlog import witness
from node.casework.at_rest import seal_clear_cases
from node.core.errors import EnvelopeError, PeerError, PuenteError
from node.core.limits import MAX_ENVELOPE_BYTES
from node.core.listening import start_tls_site
from node.core.logs import get_logger
from node.core.responses import problem_response
from node.delivery.deliverer import MESSAGES_PATH, Deliverer
from node.federation import directory_endpoint as federation_http
from node.federation import jobs, witness_endpoint
from node.federation.app_keys import (
    CONTEXT,
    DELIVERER,
    INBOUND_LIMITS,
    PEER,
    REFRESHER,
    SERVER_TLS,
    WITNESS_LIMITS,
)
from node.federation.directory_sources import DIRECTORY_PATH
from node.federation.peer_limits import InboundLimits, PeerAllowance, Throttled
from node.federation.refresher import DirectoryRefresher, health_fields
from node.intake import receive as receiving
from node.intake.receive_batch import receive_batch
from node.storage.context import NodeContext
from node.storage.migrate import upgrade_to_head
from node.trust.directory import MemberNode
from node.trust.live_tls import LiveServerTls
from node.trust.tls import peer_pin, server_context
from node.wire import batch as batch_wire

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JOSE_CONTENT_TYPE = "application/jose"


class UnsupportedMediaType(PuenteError):
    """The request body is not a JOSE compact serialization."""

    reason = "unsupported_media_type"
    http_status = 415


def _peer(request: web.Request) -> MemberNode:
    ctx = request.app[CONTEXT]
    pin = peer_pin(request.transport.get_extra_info("ssl_object") if request.transport else None)
    member = ctx.directory.node_by_pin(pin, at=ctx.now()) if pin else None
    if member is None or member.id == ctx.node_id:
        raise PeerError("unknown_peer", "the TLS client certificate is not pinned for a member")
    return member


def _member_sending(request: web.Request, content_type: str) -> MemberNode:
    """The TLS-authenticated member, once the request is of the expected media type."""
    peer = _peer(request)
    request[PEER] = peer.id
    if request.content_type != content_type:
        raise UnsupportedMediaType(detail=f"send {content_type}")
    return peer


async def post_message(request: web.Request) -> web.Response:
    peer = _member_sending(request, JOSE_CONTENT_TYPE)
    limits = request.app[INBOUND_LIMITS]
    async with limits.admitted(peer.id):
        envelope = await limits.read_body(request)
        accepted = await receiving.receive(request.app[CONTEXT], envelope, peer_node=peer.id)
    return web.json_response({"receipt": accepted.receipt, "duplicate": accepted.duplicate})


async def post_batch(request: web.Request) -> web.Response:
    """Many envelopes in one request, one answer each (node.wire.batch)."""
    peer = _member_sending(request, batch_wire.BATCH_CONTENT_TYPE)
    limits = request.app[INBOUND_LIMITS]
    async with limits.admitted(peer.id):
        envelopes = batch_wire.parse_request(await limits.read_body(request))
        limits.charge(peer.id, len(envelopes))
        answers = await receive_batch(request.app[CONTEXT], envelopes, peer_node=peer.id)
    results = [
        batch_wire.answer(None, False, a)
        if isinstance(a, PuenteError)
        else batch_wire.answer(a.receipt, a.duplicate, None)
        for a in answers
    ]
    return web.json_response({"results": results})


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response(
        {
            "status": "ok",
            "node": ctx.node_id,
            "directory_version": ctx.directory.version,
            **health_fields(
                ctx
            ),  # directory expiry, membership, keys protected (node.federation.refresher)
        }
    )


_HTTP_REASONS = {
    404: "not_found",
    405: "method_not_allowed",
    413: "envelope_too_large",
}


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal into problem+json and audit it; hide internal errors."""
    ctx = request.app[CONTEXT]
    try:
        return await handler(request)
    except Throttled as throttled:
        # Not audited: nothing was read, and writing an entry per refused
        # request would hand a flooding peer our database. Logged instead.
        log.warning("peer_throttled", peer=request.get(PEER), reason=throttled.reason)
        response = problem_response(429, throttled.reason, throttled.detail)
        response.headers["Retry-After"] = throttled.retry_after_header
        return response
    except PuenteError as refusal:
        status, reason, detail = refusal.http_status, refusal.reason, refusal.detail
        already_audited = isinstance(refusal, EnvelopeError)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        status = http_error.status
        reason = _HTTP_REASONS.get(status, f"http_{status}")
        detail = http_error.reason or reason
        already_audited = False
    except Exception:
        log.exception("internal_error", path=request.path)
        return problem_response(500, "internal_error", "the node could not process the request")
    if not already_audited:
        await receiving.record_refusal(
            ctx, PuenteError(reason, detail), peer_node=request.get(PEER)
        )
    return problem_response(status, reason, detail)


def create_app(ctx: NodeContext, *, deliver: bool = True) -> web.Application:
    """The node's federation application. ``deliver`` runs the outbox too."""
    body_limit = max(MAX_ENVELOPE_BYTES, batch_wire.MAX_BATCH_BYTES)
    app = web.Application(
        middlewares=[problems_middleware],
        client_max_size=body_limit + batch_wire.BATCH_OVERHEAD_BYTES + 1024,
    )
    app[CONTEXT] = ctx
    app[DELIVERER] = Deliverer(ctx)
    app[INBOUND_LIMITS] = InboundLimits(PeerAllowance.messages(ctx.config.delivery))
    app[WITNESS_LIMITS] = InboundLimits(PeerAllowance.witness(ctx.config.delivery))
    # TLS follows key rotation and directory updates without a restart (node.trust.live_tls).
    app[SERVER_TLS] = LiveServerTls(lambda: server_context(ctx.keys.tls, ctx.directory, ctx.now()))
    app[REFRESHER] = DirectoryRefresher(
        ctx, server_tls=app[SERVER_TLS], forget_sessions=app[DELIVERER].forget_peer_sessions
    )
    app.router.add_post(MESSAGES_PATH, post_message)
    app.router.add_post(batch_wire.BATCH_PATH, post_batch)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(DIRECTORY_PATH, federation_http.get_directory)
    app.router.add_post(witness.ADD_CHECKPOINT_PATH, witness_endpoint.post_add_checkpoint)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_directory_refresh(periodic=deliver))
    if deliver:
        app.cleanup_ctx.append(_delivery)
        app.cleanup_ctx.append(jobs.witnessing)  # scheduled checkpoints, witnessing
        app.cleanup_ctx.append(jobs.lifecycle)  # retention purge, consent lapse
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    await upgrade_to_head(ctx.engine)
    await seal_clear_cases(ctx)  # cases written before encryption at rest (node.casework.at_rest)
    yield
    await ctx.close()


def _directory_refresh(*, periodic: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """Record the held directory at start; with ``periodic``, keep fetching newer ones."""

    async def refresh(app: web.Application) -> AsyncIterator[None]:
        refresher = app[REFRESHER]
        await refresher.start()
        task = asyncio.create_task(refresher.run_forever(), name="refresher") if periodic else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return refresh


async def _delivery(app: web.Application) -> AsyncIterator[None]:
    deliverer = app[DELIVERER]
    task = asyncio.create_task(deliverer.run_forever(), name="deliverer")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await deliverer.close()


async def start_site(app: web.Application, ctx: NodeContext) -> web.AppRunner:
    """Start listening with mutual TLS on the configured host and port, every phase limited."""
    runner = await start_tls_site(
        app,
        host=ctx.config.host,
        port=ctx.config.port,
        ssl_context=app[SERVER_TLS].listening,
        limits=ctx.config.server_limits,
        body_timeout=ctx.config.delivery.inbound_body_timeout,
    )
    log.info("node_listening", node=ctx.node_id, host=ctx.config.host, port=ctx.config.port)
    return runner
