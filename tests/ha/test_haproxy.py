"""HAProxy from deploy/haproxy/haproxy.cfg in front of two workers.

The federation port is TCP passthrough: mutual TLS ends at the worker (the
client sees the worker's certificate, the worker sees the client's), and a
worker whose local API answers GET /readyz with 503 gets no new connection
until it is ready again. The workers here are tiny aiohttp servers, not the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.haproxy import (
    API_BACKEND,
    FEDERATION_BACKEND,
    Backend,
    HAProxy,
    haproxy_unavailable,
    render_config,
)
from tests.support.testca import Issued, TestCA, common_name

_UNAVAILABLE = haproxy_unavailable()
pytestmark = [
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"HAProxy test bed: {_UNAVAILABLE}"),
    pytest.mark.timeout(120),
]

CONNECTIONS = 8


class Worker:
    """A stand-in for one `puente serve`: mTLS federation port, HTTPS API with /readyz."""

    def __init__(self, name: str, ca: TestCA) -> None:
        self.name = name
        self.ca = ca
        self.identity: Issued = ca.issue(name)
        self.ready = True
        self.readyz_calls = 0
        self.checked = asyncio.Event()  # set once /readyz has been asked 4 times
        self.federation_requests = 0
        self._runners: list[web.AppRunner] = []
        self.backend: Backend | None = None

    async def _whoami(self, request: web.Request) -> web.Response:
        self.federation_requests += 1
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        return web.json_response({"worker": self.name, "client": common_name(peercert)})

    async def _readyz(self, request: web.Request) -> web.Response:
        self.readyz_calls += 1
        if self.readyz_calls >= 4:
            self.checked.set()
        if self.ready:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def _serve(self, app: web.Application, context: ssl.SSLContext) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> Backend:
        federation = web.Application()
        federation.router.add_get("/whoami", self._whoami)
        api = web.Application()
        api.router.add_get("/readyz", self._readyz)
        api.router.add_get("/whoami", self._whoami)
        federation_port = await self._serve(
            federation, self.ca.server_context(self.identity, require_client_cert=True)
        )
        api_port = await self._serve(
            api, self.ca.server_context(self.identity, require_client_cert=False)
        )
        self.backend = Backend(self.name, federation_port, api_port)
        return self.backend

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def _bed(tmp_path: Path) -> AsyncIterator[tuple[HAProxy, list[Worker], TestCA]]:
    ca = TestCA(tmp_path / "pki")
    workers = [Worker("w1", ca), Worker("w2", ca)]
    backends = [await worker.start() for worker in workers]
    proxy = HAProxy(backends)
    try:
        await asyncio.to_thread(proxy.start)
        await asyncio.to_thread(proxy.wait_for_states, {"w1": "UP", "w2": "UP"})
        await asyncio.to_thread(proxy.wait_for_states, {"w1": "UP", "w2": "UP"}, API_BACKEND)
        # HAProxy starts servers as UP before checking them: wait until it has
        # asked every worker's /readyz for both backends (rise 2 each).
        async with asyncio.timeout(30):
            for worker in workers:
                await worker.checked.wait()
        yield proxy, workers, ca
    finally:
        await asyncio.to_thread(proxy.stop)
        for worker in workers:
            await worker.stop()


async def _exchange(port: int, context: ssl.SSLContext) -> tuple[str | None, bytes]:
    """One new TLS connection to `port`: (CN of the certificate presented, raw response)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        presented = common_name(writer.get_extra_info("peercert"))
        writer.write(b"GET /whoami HTTP/1.1\r\nHost: puente\r\nConnection: close\r\n\r\n")
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    return presented, response


async def _whoami(port: int, context: ssl.SSLContext) -> tuple[str | None, dict[str, str]]:
    """(CN of the certificate presented, the worker's JSON answer) over a new connection."""
    presented, response = await _exchange(port, context)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    answer: dict[str, str] = json.loads(body)
    return presented, answer


async def _refused(port: int, context: ssl.SSLContext) -> bool:
    """True if no answer comes back: the handshake fails, or the peer just hangs up.

    Under TLS 1.3 the client's handshake completes before the server has checked
    the client's certificate; a refusal then shows as an alert or an EOF on read.
    """
    try:
        _presented, response = await _exchange(port, context)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return True
    return response == b""


async def _spread(port: int, context: ssl.SSLContext) -> list[str]:
    """Which worker answered each of CONNECTIONS sequential connections."""
    seen = []
    for _ in range(CONNECTIONS):
        presented, answer = await _whoami(port, context)
        # Passthrough: the certificate the client checked is the answering worker's.
        assert presented == answer["worker"]
        seen.append(answer["worker"])
    return seen


async def test_passthrough_and_readyz_steer_traffic(tmp_path: Path) -> None:
    async with _bed(tmp_path) as (proxy, workers, ca):
        w1, w2 = workers
        client = ca.client_context(ca.issue("gt-node", server=False))

        # Both ready: connections go to both, and the worker sees the client's
        # own certificate (mutual TLS ended at the worker, not at HAProxy).
        seen = await _spread(proxy.federation_port, client)
        assert set(seen) == {"w1", "w2"}
        presented, answer = await _whoami(proxy.federation_port, client)
        assert answer["client"] == "gt-node" and presented == answer["worker"]

        # w2 stops being ready: HAProxy takes it out of both backends...
        w2.ready = False
        await asyncio.to_thread(proxy.wait_for_states, {"w1": "UP", "w2": "DOWN"})
        await asyncio.to_thread(proxy.wait_for_states, {"w1": "UP", "w2": "DOWN"}, API_BACKEND)
        before = w2.federation_requests
        assert await _spread(proxy.federation_port, client) == ["w1"] * CONNECTIONS
        assert w2.federation_requests == before
        # ...the local API frontend as well (HTTPS passes through: w1's certificate).
        presented, answer = await _whoami(proxy.api_port, ca.client_context())
        assert (presented, answer["worker"]) == ("w1", "w1")

        # Ready again: back in rotation.
        w2.ready = True
        await asyncio.to_thread(proxy.wait_for_states, {"w1": "UP", "w2": "UP"})
        assert set(await _spread(proxy.federation_port, client)) == {"w1", "w2"}

        # Neither ready: nobody is served (HAProxy closes the connection).
        w1.ready = w2.ready = False
        await asyncio.to_thread(proxy.wait_for_states, {"w1": "DOWN", "w2": "DOWN"})
        before = w1.federation_requests + w2.federation_requests
        assert await _refused(proxy.federation_port, client)
        assert w1.federation_requests + w2.federation_requests == before


async def test_mutual_tls_is_not_relaxed_by_the_proxy(tmp_path: Path) -> None:
    async with _bed(tmp_path) as (proxy, workers, ca):
        # The same client with its certificate is served, through the proxy.
        client = ca.client_context(ca.issue("gt-node", server=False))
        assert (await _whoami(proxy.federation_port, client))[1]["client"] == "gt-node"
        served = sum(worker.federation_requests for worker in workers)
        # No client certificate: the worker, reached through HAProxy, refuses.
        assert await _refused(proxy.federation_port, ca.client_context())
        # A certificate from another CA is refused too.
        stranger_ca = TestCA(tmp_path / "stranger")
        stranger = stranger_ca.issue("intruder", server=False)
        context = ca.client_context()
        context.load_cert_chain(stranger.cert, stranger.key)
        assert await _refused(proxy.federation_port, context)
        assert sum(worker.federation_requests for worker in workers) == served
        # HAProxy holds no certificate of its own: nothing it could present.
        config = proxy.config_file.read_text()
        assert " crt " not in config and "ssl crt" not in config
        assert "mode tcp" in config


async def test_rendered_template_and_teardown(tmp_path: Path) -> None:
    rendered = render_config(
        federation_bind="0.0.0.0:8443",
        api_bind="10.0.1.5:9443",
        backends=[Backend("w1", 8443, 9443, "10.0.0.21"), Backend("w2", 8443, 9443, "10.0.0.22")],
        runtime_socket=Path("/run/haproxy/admin.sock"),
        chroot_dir=Path("/var/lib/haproxy"),
    )
    assert "${" not in rendered
    assert "    server w1 10.0.0.21:8443 check port 9443" in rendered
    assert "    server w2 10.0.0.22:9443 check" in rendered
    assert "chroot /var/lib/haproxy" in rendered and "user haproxy" in rendered
    assert "http-check send meth GET uri /readyz" in rendered

    async with _bed(tmp_path) as (proxy, _workers, _ca):
        process = proxy.process
        directory = proxy.directory
        assert process is not None and process.poll() is None
        if os.geteuid() == 0:
            # The production privilege drop is exercised: HAProxy runs as haproxy.
            status = Path(f"/proc/{process.pid}/status").read_text()
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uid_line.split()[1] != "0"
        assert set(proxy.server_states(FEDERATION_BACKEND)) == {"w1", "w2"}
    assert process.poll() is not None
    assert not directory.exists()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.federation_port)
