"""Every aiohttp ``AppKey`` in one place."""

from __future__ import annotations

from aiohttp import web

from node.delivery.deliverer import Deliverer
from node.federation.peer_limits import InboundLimits
from node.federation.refresher import DirectoryRefresher
from node.storage.context import NodeContext
from node.trust.live_tls import LiveServerTls

CONTEXT = web.AppKey("context", NodeContext)
DELIVERER = web.AppKey("deliverer", Deliverer)
INBOUND_LIMITS = web.AppKey("inbound_limits", InboundLimits)
WITNESS_LIMITS = web.AppKey("witness_limits", InboundLimits)
REFRESHER = web.AppKey("refresher", DirectoryRefresher)
SERVER_TLS = web.AppKey("server_tls", LiveServerTls)

# The member node authenticated by mutual TLS for this request (for auditing refusals).
PEER = web.RequestKey("peer", str)
