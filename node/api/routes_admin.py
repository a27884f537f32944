"""An admin manages users and tokens and sees the node's keys and peers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from node.api import users
from node.api.guards import allow, json_body
from node.api.keys import API_CONTEXT
from node.api.openapi import validate_body
from node.api.users import Role
from node.storage.api_models import ApiToken, User
from node.trust.keys import public_jwk


def user_view(user: User, tokens: list[ApiToken]) -> dict[str, Any]:
    return {
        "username": user.username,
        "role": user.role,
        "authority": user.authority,
        "created_at": user.created_at.isoformat(),
        "disabled": user.disabled_at is not None,
        "tokens": [token_view(t) for t in tokens],
    }


def token_view(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "created_at": token.created_at.isoformat(),
        "expires_at": token.expires_at.isoformat(),
        "revoked": token.revoked_at is not None,
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
    }


@allow(Role.ADMIN)
async def list_users(request: web.Request) -> web.Response:
    rows = await users.list_users(request.app[API_CONTEXT])
    return web.json_response({"items": [user_view(u, t) for u, t in rows]})


@allow(Role.ADMIN)
async def create_user(request: web.Request) -> web.Response:
    body = await json_body(request)
    validate_body("CreateUserRequest", body)
    assert isinstance(body, dict)
    user = await users.create_user(
        request.app[API_CONTEXT],
        username=body["username"],
        role=body["role"],
        authority=body["authority"],
    )
    return web.json_response(user_view(user, []), status=201)


@allow(Role.ADMIN)
async def issue_token(request: web.Request) -> web.Response:
    body = await json_body(request)
    validate_body("IssueTokenRequest", body)
    assert isinstance(body, dict)
    token, row = await users.issue_token(
        request.app[API_CONTEXT],
        request.match_info["username"],
        lifetime=dt.timedelta(days=body.get("lifetime_days", 30)),
    )
    return web.json_response({"token": token, **token_view(row)}, status=201)


@allow(Role.ADMIN)
async def revoke_token(request: web.Request) -> web.Response:
    await users.revoke_token(request.app[API_CONTEXT], request.match_info["token_id"])
    return web.json_response({"revoked": request.match_info["token_id"]})


@allow(Role.ADMIN)
async def keys(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    return web.json_response(
        {
            "node": ctx.node_id,
            "signing_key": public_jwk(ctx.keys.signing),
            "encryption_keys": [public_jwk(k) for k in ctx.keys.encryption.values()],
            "active_encryption_kid": ctx.keys.active_encryption_kid,
            "tls_pin": ctx.keys.tls.pin,
        }
    )


@allow(Role.ADMIN, Role.CASEWORKER)
async def peers(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    directory = ctx.directory
    return web.json_response(
        {
            "directory_version": directory.version,
            "directory_expires_at": directory.expires_at.isoformat(),
            "items": [
                {
                    "node": member.id,
                    "name": member.name,
                    "endpoint": member.endpoint,
                    "authorities": [
                        {"id": a.id, "kind": a.kind, "names": dict(a.names)}
                        for a in member.authorities.values()
                    ],
                }
                for member in directory.nodes.values()
                if member.id != ctx.node_id
            ],
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/admin/users", list_users)
    app.router.add_post("/api/v1/admin/users", create_user)
    app.router.add_post("/api/v1/admin/users/{username}/tokens", issue_token)
    app.router.add_delete("/api/v1/admin/tokens/{token_id}", revoke_token)
    app.router.add_get("/api/v1/admin/keys", keys)
    app.router.add_get("/api/v1/peers", peers)
