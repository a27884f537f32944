"""The local API's aiohttp keys."""

from __future__ import annotations

from aiohttp import web

from node.api.metrics import ApiMetrics
from node.api.ratelimit import RateLimiter
from node.context import NodeContext
from node.users import Principal

API_CONTEXT = web.AppKey("api_context", NodeContext)
METRICS = web.AppKey("metrics", ApiMetrics)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
PRINCIPAL = web.RequestKey("principal", Principal)
