"""Real nodes in the test's event loop: real TLS sockets on 127.0.0.1, real databases.

``live_federation`` initialises data directories with the production code
(node.demo.local_federation), opens each node, and starts its real aiohttp application with
mutual TLS on a free port. Delivery runs only when a test asks for it
(``deliver=True``) or calls ``node.deliverer.run_once()`` itself, so tests
decide when messages move.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from node.core.clock import Clock, utcnow
from node.core.config import AuthorityConfig
from node.delivery.deliverer import MESSAGES_PATH, Deliverer
from node.demo.local_federation import NodeSpec, build_local_federation
from node.federation.app import create_app, start_site
from node.federation.app_keys import DELIVERER
from node.storage.context import NodeContext, open_node
from node.trust.tls import client_context
from tests.support.processes import tune_delivery, tune_server_limits

DatabaseFactory = Callable[[str], Awaitable[str]]

MX = NodeSpec(
    "MX",
    "México (test)",
    (AuthorityConfig("mx-inm", "migration_authority", {"es": "INM (prueba)"}),),
)
GT = NodeSpec(
    "GT",
    "Guatemala (test)",
    (AuthorityConfig("gt-reception", "reception_centre", {"es": "Recepción GT (prueba)"}),),
)
HN = NodeSpec(
    "HN",
    "Honduras (test)",
    (AuthorityConfig("hn-reception", "reception_centre", {"es": "Recepción HN (prueba)"}),),
)


@dataclass
class LiveNode:
    ctx: NodeContext
    app: web.Application
    runner: web.AppRunner | None

    @property
    def node_id(self) -> str:
        return self.ctx.node_id

    @property
    def deliverer(self) -> Deliverer:
        return self.app[DELIVERER]

    @property
    def url(self) -> str:
        return self.ctx.config.public_url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def start(self) -> None:
        if self.runner is None:
            await self.deliverer.close()
            self.ctx = open_node(self.ctx.config.data_dir, clock=self.ctx.clock)
            self.app = create_app(self.ctx, deliver=False)
            self.runner = await start_site(self.app, self.ctx)


@asynccontextmanager
async def live_federation(
    base: Path,
    database_factory: DatabaseFactory,
    specs: Sequence[NodeSpec] = (MX, GT, HN),
    *,
    deliver: bool = False,
    clock: Clock = utcnow,
    public_urls: Mapping[str, str] | None = None,
    delivery: Mapping[str, Any] | None = None,
    server_limits: Mapping[str, Any] | None = None,
) -> AsyncIterator[dict[str, LiveNode]]:
    """``public_urls`` puts a proxy in front of a node; ``delivery`` overrides [delivery],
    ``server_limits`` [server.limits]."""
    urls = {spec.node_id: await database_factory(spec.node_id.lower()) for spec in specs}
    dirs = build_local_federation(
        base,
        specs,
        federation="test-federation",
        now=clock(),
        database_urls=urls,
        public_urls=public_urls,
    )
    for data_dir in dirs.values():
        if delivery:
            tune_delivery(data_dir, **delivery)
        if server_limits:
            tune_server_limits(data_dir, **server_limits)
    nodes: dict[str, LiveNode] = {}
    try:
        for node_id, data_dir in dirs.items():
            ctx = open_node(data_dir, clock=clock)
            app = create_app(ctx, deliver=deliver)
            nodes[node_id] = LiveNode(ctx=ctx, app=app, runner=await start_site(app, ctx))
        yield nodes
    finally:
        for node in nodes.values():
            await node.stop()
            await node.deliverer.close()


def peer_session(client: LiveNode, server: LiveNode) -> aiohttp.ClientSession:
    """A session presenting ``client``'s certificate and pinning ``server``'s."""
    peer = client.ctx.directory.node(server.node_id)
    assert peer is not None
    connector = aiohttp.TCPConnector(ssl=client_context(client.ctx.keys.tls, peer))
    return aiohttp.ClientSession(connector=connector)


async def post_envelope(
    client: LiveNode,
    server: LiveNode,
    body: bytes,
    *,
    content_type: str = "application/jose",
) -> tuple[int, str, dict[str, Any]]:
    """POST raw bytes to ``server``'s message endpoint as ``client``."""
    async with (
        peer_session(client, server) as session,
        session.post(
            server.url + MESSAGES_PATH, data=body, headers={"Content-Type": content_type}
        ) as response,
    ):
        return response.status, response.content_type, await response.json(content_type=None)
