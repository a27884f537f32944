"""``/api/v1/me``: who the token belongs to."""

from __future__ import annotations

from aiohttp import web

from node.api.guards import principal_of


async def me(request: web.Request) -> web.Response:
    principal = principal_of(request)
    return web.json_response(
        {"username": principal.username, "role": principal.role, "authority": principal.authority}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/me", me)
