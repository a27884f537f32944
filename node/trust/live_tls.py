"""A listening TLS context whose certificate and trust anchors can change while it serves.

The listening socket keeps one ``ssl.SSLContext`` for its whole life. Its SNI
callback, which OpenSSL runs for every new handshake (with or without a server
name), hands the connection to the *current* context, which carries this
node's active certificate and the pins in force. ``reload`` builds a new
current context; connections already open keep theirs.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable


class LiveServerTls:
    """The server side of mutual TLS, hot-swappable for key rotation and directory updates."""

    def __init__(self, build: Callable[[], ssl.SSLContext]) -> None:
        self._build = build
        self._current = build()
        self.listening = build()
        self.listening.sni_callback = self._select
        self.reloads = 0

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def reload(self) -> None:
        """Use a freshly built context for every handshake from now on."""
        self._current = self._build()
        self.reloads += 1

    def _select(
        self,
        connection: ssl.SSLObject | ssl.SSLSocket,
        _server_name: str | None,
        _ctx: ssl.SSLContext,
    ) -> None:
        connection.context = self._current
