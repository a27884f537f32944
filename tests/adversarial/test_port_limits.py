"""Slow and idle clients are cut off at every phase, on both ports, and the node serves others.

Each attack runs against a live node with small limits (a second) and
asserts that the server closed the connection or answered 408 — never how
long it took; ``CUT_OFF_WITHIN`` only keeps a regression from hanging the
suite. Before these limits, a client that connected and never started TLS
held its socket for asyncio's default minute, a trickled request head or an
idle kept-alive connection for aiohttp's default hour, and the witness
endpoint and the local API waited for a body as long as it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.auditlog.witness import ADD_CHECKPOINT_PATH
from node.core.config import PortLimits
from node.storage.context import NodeContext
from node.trust.tls import client_context
from tests.support.api import api_client, client_ssl, running_api, user_token
from tests.support.nodes import GT, MX, DatabaseFactory, LiveNode, live_federation, peer_session

SMALL_LIMITS = PortLimits(tls_handshake_timeout=1.0, idle_timeout=1.0)
SMALL = {"tls_handshake_timeout": 1.0, "idle_timeout": 1.0}
BODY_TIMEOUT = 1.0
CUT_OFF_WITHIN = 10.0  # a bound on a hung test, not a measurement
TRICKLE_EVERY = 0.2


@contextlib.asynccontextmanager
async def federation(
    tmp_path: Path, database_factory: DatabaseFactory, **delivery: float
) -> AsyncIterator[tuple[LiveNode, LiveNode]]:
    async with live_federation(
        tmp_path,
        database_factory,
        (MX, GT),
        server_limits=SMALL,
        delivery={"inbound_body_timeout": BODY_TIMEOUT, **delivery},
    ) as nodes:
        yield nodes["MX"], nodes["GT"]


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("https://").partition(":")
    return host, int(port.split("/")[0])


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed the connection; fails if it keeps it open."""
    received = b""
    try:
        async with asyncio.timeout(CUT_OFF_WITHIN):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open; it sent {received[:80]!r}")
    except (ConnectionResetError, ssl.SSLError):
        pass  # a reset closes it too
    return received


async def trickle(writer: asyncio.StreamWriter, head: bytes) -> None:
    """Send a request line, then one header at a time, never the blank line that ends them."""
    writer.write(head)
    with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
        while not writer.is_closing():
            await writer.drain()
            await asyncio.sleep(TRICKLE_EVERY)
            writer.write(b"X-Slow: a\r\n")


async def slowloris(host: str, port: int, tls: ssl.SSLContext, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    sender = asyncio.create_task(trickle(writer, head))
    try:
        return await closed_by_server(reader)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()


async def idle_after_one_request(host: str, port: int, tls: ssl.SSLContext) -> bytes:
    """One complete request on a kept-alive connection, then silence."""
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
    await writer.drain()
    try:
        return await closed_by_server(reader)
    finally:
        writer.close()


async def never_start_tls(host: str, port: int, count: int) -> None:
    """``count`` TCP connections that never send a byte: each must be closed by the server."""
    opened = [await asyncio.open_connection(host, port) for _ in range(count)]
    try:
        for reader, _ in opened:
            assert await closed_by_server(reader) == b""
    finally:
        for _, writer in opened:
            writer.close()


async def slow_body(pause: float) -> AsyncIterator[bytes]:
    yield b"old 0\n"
    await asyncio.sleep(pause)
    yield b"\n"


async def federation_healthy(mx: LiveNode, gt: LiveNode) -> None:
    async with peer_session(mx, gt) as session, session.get(gt.url + "/healthz") as response:
        assert response.status == 200


def _peer_tls(mx: LiveNode, gt: LiveNode) -> ssl.SSLContext:
    member = mx.ctx.directory.node(gt.node_id)
    assert member is not None
    return client_context(mx.ctx.keys.tls, member)


async def test_federation_port_cuts_off_idle_slow_and_trickling_clients(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with federation(tmp_path, database_factory) as (mx, gt):
        host, port = _host_port(gt.url)
        tls = _peer_tls(mx, gt)

        idle = asyncio.create_task(never_start_tls(host, port, count=20))
        await federation_healthy(mx, gt)  # served while twenty sockets sit idle
        await idle

        head = b"POST /federation/v1/messages HTTP/1.1\r\nHost: node\r\n"
        trickled = asyncio.create_task(slowloris(host, port, tls, head))
        await federation_healthy(mx, gt)
        assert b"200 OK" not in await trickled, "a request whose head never ended was not served"

        answered = await idle_after_one_request(host, port, tls)
        assert answered.startswith(b"HTTP/1.1 200"), "served once, then closed when idle"

        await federation_healthy(mx, gt)


async def test_witness_endpoint_has_a_body_timeout_and_a_per_peer_allowance(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with federation(
        tmp_path,
        database_factory,
        witness_rate_per_peer=0.01,  # no token comes back during the test
        witness_burst_per_peer=3,
    ) as (mx, gt):
        url = gt.url + ADD_CHECKPOINT_PATH
        async with peer_session(mx, gt) as session:
            async with session.post(url, data=slow_body(3.0)) as response:
                problem = await response.json(content_type=None)
                assert (response.status, problem["reason"]) == (408, "request_timeout")
            await federation_healthy(mx, gt)
            for _ in range(2):
                async with session.post(url, data=b"not a checkpoint") as response:
                    problem = await response.json(content_type=None)
                    assert (response.status, problem["reason"]) == (400, "malformed_request")
            async with session.post(url, data=b"not a checkpoint") as response:
                problem = await response.json(content_type=None)
                assert (response.status, problem["reason"]) == (429, "rate_limited")
                assert int(response.headers["Retry-After"]) >= 1
        # Its own allowance: the peer's messages are not held back by its checkpoints.
        async with (
            peer_session(mx, gt) as session,
            session.post(
                gt.url + "/federation/v1/messages",
                data=b"x",
                headers={"Content-Type": "application/jose"},
            ) as response,
        ):
            assert response.status == 400


def _small_api(ctx: NodeContext) -> None:
    ctx.config = dataclasses.replace(
        ctx.config,
        api=dataclasses.replace(ctx.config.api, body_timeout=BODY_TIMEOUT, limits=SMALL_LIMITS),
    )


async def api_healthy(ctx: NodeContext) -> None:
    async with api_client(ctx, None) as client:
        assert (await client.call("GET", "/healthz"))[0] == 200


async def test_api_port_cuts_off_idle_slow_and_trickling_clients(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        ctx = nodes["GT"].ctx
        _small_api(ctx)
        async with running_api(ctx):
            host, port = ctx.config.api.host, ctx.config.api.port
            tls = client_ssl(ctx)

            idle = asyncio.create_task(never_start_tls(host, port, count=20))
            await api_healthy(ctx)
            await idle

            head = b"GET /api/v1/me HTTP/1.1\r\nHost: node\r\n"
            trickled = asyncio.create_task(slowloris(host, port, tls, head))
            await api_healthy(ctx)
            assert b"HTTP/1.1" not in await trickled

            answered = await idle_after_one_request(host, port, tls)
            assert answered.startswith(b"HTTP/1.1 200")

            admin = await user_token(ctx, "ops", "admin", "gt-operator")
            async with api_client(ctx, admin) as client:
                async with client.session.post(
                    client.base_url + "/api/v1/admin/users",
                    data=slow_body(3.0),
                    headers={
                        "Authorization": f"Bearer {admin}",
                        "Content-Type": "application/json",
                    },
                ) as response:
                    problem = await response.json(content_type=None)
                    assert (response.status, problem["reason"]) == (408, "request_timeout")
                assert (await client.call("GET", "/api/v1/me"))[0] == 200


async def test_a_request_head_with_too_many_headers_is_refused_before_any_handler(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        ctx = nodes["GT"].ctx
        ctx.config = dataclasses.replace(
            ctx.config, api=dataclasses.replace(ctx.config.api, limits=PortLimits(max_headers=8))
        )
        async with running_api(ctx), api_client(ctx, None) as client:
            headers = {f"X-Extra-{i}": "a" for i in range(20)}
            async with client.session.get(client.base_url + "/healthz", headers=headers) as r:
                assert r.status == 400
            await api_healthy(ctx)
