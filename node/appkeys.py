"""Every aiohttp ``AppKey`` in one place."""

from __future__ import annotations

from aiohttp import web

from node.context import NodeContext
from node.delivery import Deliverer
from node.inbound_limits import InboundLimits
from node.livetls import LiveServerTls
from node.refresher import DirectoryRefresher

CONTEXT = web.AppKey("context", NodeContext)
DELIVERER = web.AppKey("deliverer", Deliverer)
INBOUND_LIMITS = web.AppKey("inbound_limits", InboundLimits)
REFRESHER = web.AppKey("refresher", DirectoryRefresher)
SERVER_TLS = web.AppKey("server_tls", LiveServerTls)

# The member node authenticated by mutual TLS for this request (for auditing refusals).
PEER = web.RequestKey("peer", str)
