"""``POST /federation/v1/witness/add-checkpoint``: peers submit their checkpoints to us.

The C2SP tlog-witness rules are node.auditlog.witness; this handler authenticates
the member by its pinned TLS client certificate, holds it to its own allowance
(``witness_*_per_peer``: 429 before the body is read, 408 for a slow body;
node.federation.peer_limits) and audits refusals.
"""

from __future__ import annotations

from aiohttp import web

from node.auditlog import entries as audit
from node.auditlog.witness import add_checkpoint
from node.core.errors import PeerError
from node.core.logs import get_logger
from node.federation.app_keys import CONTEXT, PEER, WITNESS_LIMITS
from node.trust.tls import peer_pin

log = get_logger(__name__)


async def post_add_checkpoint(request: web.Request) -> web.Response:
    """The aiohttp handler; the TLS client must be a member (any member may submit)."""
    ctx = request.app[CONTEXT]
    pin = peer_pin(request.transport.get_extra_info("ssl_object") if request.transport else None)
    member = ctx.directory.node_by_pin(pin) if pin else None
    if member is None:
        raise PeerError("unknown_peer", "the TLS client certificate is not pinned for a member")
    request[PEER] = member.id
    limits = request.app[WITNESS_LIMITS]
    async with limits.admitted(member.id):
        answer = await add_checkpoint(ctx, await limits.read_body(request), submitter=member.id)
    if answer.reason is not None and answer.status != 409:
        async with ctx.sessions.begin() as session:
            await audit.append(
                session,
                node=ctx.node_id,
                event="witness.refused",
                at=ctx.now(),
                counterparty=member.id,
                reason=answer.reason,
            )
        log.warning("witness_refused", reason=answer.reason, by=member.id)
    return answer.response()
