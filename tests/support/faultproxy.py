"""A fault-injecting TCP proxy for the network between two nodes.

It forwards raw bytes (the TLS stays end to end, so the nodes still check
each other's pinned certificates) and, per connection, injects one fault
chosen by the test's plan:

- ``pass``: forward both ways untouched (and, with ``close_after_bytes``,
  close the connection once that much of the answers went through, so a
  keep-alive connection does not carry the rest of the test).
- ``refuse``: accept, then close at once without reading (a dropped connection).
- ``blackhole``: accept and read, never connect onward, never answer (a peer
  that accepts and never answers).
- ``delay``: like ``pass``, each chunk ``delay`` seconds late.
- ``reset``: once the client has sent ``after_request_bytes`` (so the request
  reached the recipient), reset the client's connection (RST) on the first
  bytes of the answer.
- ``truncate``: same trigger; pass ``keep_response_bytes`` of the answer,
  then close (a truncated response).
- ``stall``: same trigger; keep the connection open but never pass the answer.

The ``reset``, ``truncate`` and ``stall`` faults hit after the recipient has
read the whole request, so the recipient stores the disclosure and the
sender never sees the receipt: the case that exactly-once delivery must
survive. ``stats`` counts the faults injected and ``triggered`` counts those
that actually cut an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

FAULT_KINDS = ("pass", "refuse", "blackhole", "delay", "reset", "truncate", "stall")


@dataclass(frozen=True)
class Fault:
    kind: str = "pass"
    after_request_bytes: int = 0
    keep_response_bytes: int = 0
    delay: float = 0.0
    close_after_bytes: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}")


Plan = Callable[[int], Fault]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: SO_LINGER on, timeout 0."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1:``port`` and forwards to 127.0.0.1:``upstream_port``."""

    def __init__(self, upstream_port: int, plan: Plan, *, port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.plan = plan
        self.port = port
        self.stats: Counter[str] = Counter()
        self.triggered: Counter[str] = Counter()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        fault = self.plan(self.connections)
        self.connections += 1
        self.stats[fault.kind] += 1
        try:
            await self._serve(fault, reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve(
        self, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if fault.kind == "refuse":
            writer.close()
            return
        if fault.kind == "blackhole":
            while await reader.read(65536):
                pass
            await asyncio.Event().wait()  # never answer; the client must give up
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        sent = 0
        try:

            async def upstream() -> None:
                nonlocal sent
                while chunk := await reader.read(65536):
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
                    sent += len(chunk)
                    up_writer.write(chunk)
                    await up_writer.drain()
                up_writer.write_eof()

            async def downstream() -> None:
                passed = 0
                while chunk := await up_reader.read(65536):
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
                    armed = fault.kind in ("reset", "truncate", "stall")
                    if armed and sent >= fault.after_request_bytes:
                        self.triggered[fault.kind] += 1
                        if fault.kind == "reset":
                            _reset(writer)
                            return
                        if fault.kind == "truncate":
                            writer.write(chunk[: max(0, fault.keep_response_bytes - passed)])
                            await writer.drain()
                            writer.close()
                            return
                        await asyncio.Event().wait()  # stall: hold the line, say nothing
                    passed += len(chunk)
                    writer.write(chunk)
                    await writer.drain()
                    if fault.close_after_bytes and passed >= fault.close_after_bytes:
                        writer.close()
                        return
                writer.write_eof()

            await asyncio.gather(upstream(), downstream())
        finally:
            up_writer.transport.abort()
