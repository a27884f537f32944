"""The local API of a live test node, served over real HTTPS on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from node.api import users
from node.api.app import create_api_app, start_api_site
from node.storage.context import NodeContext


@dataclass
class ApiClient:
    """Talks to one node's local API as one user."""

    base_url: str
    session: aiohttp.ClientSession
    token: str | None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, self.base_url + path, json=json, params=params, headers=self._headers()
        ) as response:
            body: Any = (
                await response.json(content_type=None) if response.content_length != 0 else None
            )
            return response.status, body


def client_ssl(ctx: NodeContext) -> ssl.SSLContext:
    """Trust exactly the node's own certificate, as docs/api.md tells curl users to."""
    context = ssl.create_default_context(cadata=ctx.keys.tls.cert_pem.decode("ascii"))
    context.check_hostname = False  # the certificate names 127.0.0.1 as an IP SAN
    return context


@asynccontextmanager
async def running_api(ctx: NodeContext) -> AsyncIterator[web.Application]:
    app = create_api_app(ctx)
    runner = await start_api_site(app, ctx)
    try:
        yield app
    finally:
        await runner.cleanup()


@asynccontextmanager
async def api_client(ctx: NodeContext, token: str | None) -> AsyncIterator[ApiClient]:
    connector = aiohttp.TCPConnector(ssl=client_ssl(ctx))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield ApiClient(f"https://127.0.0.1:{ctx.config.api.port}", session, token)


async def user_token(
    ctx: NodeContext, username: str, role: str, authority: str, *, days: float = 1
) -> str:
    await users.create_user(ctx, username=username, role=role, authority=authority)
    token, _ = await users.issue_token(ctx, username, lifetime=dt.timedelta(days=days))
    return token
