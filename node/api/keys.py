"""The local API's aiohttp keys."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from node.api.metrics import ApiMetrics
from node.api.ratelimit import RateLimiter
from node.api.users import Principal
from node.storage.context import NodeContext

API_CONTEXT = web.AppKey("api_context", NodeContext)
METRICS = web.AppKey("metrics", ApiMetrics)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
PRINCIPAL = web.RequestKey("principal", Principal)
# Called after something is queued, so the deliverer sends at once instead of at its next poll.
ON_QUEUED: web.AppKey[Callable[[], None]] = web.AppKey("on_queued")
