"""The local API's aiohttp keys."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from node.api.metrics import ApiMetrics
from node.api.preauth import PreauthGate
from node.api.users import Principal
from node.core.ratelimit import KeyedBuckets
from node.storage.context import NodeContext

API_CONTEXT = web.AppKey("api_context", NodeContext)
METRICS = web.AppKey("metrics", ApiMetrics)
# Per user, once authenticated; and per client address, before (node.api.preauth).
RATE_LIMITER = web.AppKey("rate_limiter", KeyedBuckets)
PREAUTH = web.AppKey("preauth", PreauthGate)
PRINCIPAL = web.RequestKey("principal", Principal)
# Called after something is queued, so the deliverer sends at once instead of at its next poll.
ON_QUEUED: web.AppKey[Callable[[], None]] = web.AppKey("on_queued")
