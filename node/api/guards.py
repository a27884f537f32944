"""Who may call a handler, and the refusals that say no."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from aiohttp import web

from node.api.keys import PRINCIPAL
from node.api.users import Principal, Role
from node.core.errors import PuenteError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Forbidden(PuenteError):
    reason = "forbidden"
    http_status = 403


class TooManyRequests(PuenteError):
    reason = "rate_limited"
    http_status = 429


class RequestTimeout(PuenteError):
    reason = "request_timeout"
    http_status = 408


class BadRequest(PuenteError):
    reason = "invalid_request"
    http_status = 400


def allow(*roles: Role) -> Callable[[Handler], Handler]:
    """Admit only principals with one of ``roles`` to a handler."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            principal = request[PRINCIPAL]
            if principal.role not in roles:
                raise Forbidden("role_forbidden", f"a {principal.role} may not do this")
            return await handler(request)

        guarded.allowed_roles = roles  # type: ignore[attr-defined]
        return guarded

    return decorate


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def json_body(request: web.Request) -> object:
    """The request's JSON body, or a 400 problem (never a stack trace)."""
    if request.content_type != "application/json":
        raise BadRequest("unsupported_media_type", "send application/json")
    try:
        return await request.json()
    except ValueError as exc:
        raise BadRequest("invalid_json", "the body is not JSON") from exc


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest("invalid_parameter", f"{name} must be an integer") from exc
    if not low <= value <= high:
        raise BadRequest("invalid_parameter", f"{name} must be between {low} and {high}")
    return value
