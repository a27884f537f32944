"""``GET /federation/v1/directory``: a node serves the directory it holds to its peers.

Over the same mutual TLS as messages, so only members ask. ``?version=<n>``
serves a version from the node's history, for a peer that must walk a chain
of directories across an operator rotation. The answer is the signed
directory exactly as verified (``application/json``): the asker verifies it.
"""

from __future__ import annotations

import json

from aiohttp import web

from node.core.errors import PeerError, PuenteError
from node.federation import directory_history
from node.federation.app_keys import CONTEXT, INBOUND_LIMITS, PEER
from node.storage.context import NodeContext
from node.trust.tls import peer_pin


class DirectoryVersionUnknown(PuenteError):
    reason = "directory_version_unknown"
    http_status = 404


async def get_directory(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    transport = request.transport
    pin = peer_pin(transport.get_extra_info("ssl_object") if transport else None)
    member = ctx.directory.node_by_pin(pin, at=ctx.now()) if pin else None
    if member is None:
        raise PeerError("unknown_peer", "the TLS client certificate is not pinned for a member")
    request[PEER] = member.id
    # Counted against the peer's allowance for messages (node.federation.peer_limits):
    # a refresh asks once an interval; a flood of old versions only slows its own mail.
    async with request.app[INBOUND_LIMITS].admitted(member.id):
        return await _answer(request, ctx)


async def _answer(request: web.Request, ctx: NodeContext) -> web.Response:
    raw_version = request.query.get("version")
    if raw_version is None:
        signed = ctx.directory.signed
    else:
        if not raw_version.isdigit() or not 0 < len(raw_version) <= 9:
            raise DirectoryVersionUnknown(detail="version must be a positive integer")
        found = await directory_history.signed_version(ctx.sessions, int(raw_version))
        if found is None:
            raise DirectoryVersionUnknown(detail=f"this node has no version {raw_version}")
        signed = found
    return web.Response(text=json.dumps(dict(signed)), content_type="application/json")
