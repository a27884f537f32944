"""Listening on a port with a limit on every phase of a connection (docs/limits.md).

Both ports (the federation port and the local API) are served the same way:

* **TLS handshake**: asyncio's own ``ssl_handshake_timeout``. aiohttp's
  ``TCPSite`` does not pass it to ``loop.create_server``, so :class:`TlsSite`
  is a ``BaseSite`` that does; asyncio's default (60 s) would let a client
  that connects and never starts TLS hold a socket for a minute.
* **Request head** (header trickling) and **idle keep-alive**: aiohttp's
  ``keepalive_timeout``. Its timer starts when the connection is made and
  again after each response, is not pushed back by arriving bytes, and
  closes the connection if no complete request head has arrived when it
  fires, so one setting bounds both the wait for a request and a head sent
  a byte at a time.
* **Request head size**: aiohttp's ``max_line_size``, ``max_field_size`` and
  ``max_headers`` (a 400 before any handler runs).
* **Body**: each handler reads its body under the port's body timeout (408);
  a body that no handler reads is drained for at most ``lingering_time``,
  which is set to the same timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiohttp import web

from node.core.config import PortLimits


def runner_options(limits: PortLimits, *, body_timeout: float) -> dict[str, Any]:
    """``web.AppRunner`` keyword arguments (passed on to aiohttp's request handler)."""
    return {
        "keepalive_timeout": limits.idle_timeout,
        "lingering_time": body_timeout,
        "max_line_size": limits.max_request_line,
        "max_field_size": limits.max_header_field,
        "max_headers": limits.max_headers,
    }


class TlsSite(web.BaseSite):
    """A TCP site over TLS whose handshake must finish within ``handshake_timeout`` seconds."""

    __slots__ = ("_handshake_timeout", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        handshake_timeout: float,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None, "the runner is set up first"
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._handshake_timeout,
        )


async def start_tls_site(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    limits: PortLimits,
    body_timeout: float,
) -> web.AppRunner:
    """Set up ``app`` and listen on ``host:port`` with every phase limited."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        **runner_options(limits, body_timeout=body_timeout),
    )
    await runner.setup()
    site = TlsSite(
        runner,
        host,
        port,
        ssl_context=ssl_context,
        handshake_timeout=limits.tls_handshake_timeout,
    )
    await site.start()
    return runner
