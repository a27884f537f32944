"""The deliverer: sends committed disclosures, one queue per peer, and sweeps the outbox.

Each member node of the directory gets its own queue (node.delivery.peer_queue) with
its own HTTP session, pace, backoff and window of requests in flight, so a
peer that is down, slow or stalled delays only its own disclosures. All the
state lives in the database: a restarted node picks up where it stopped,
backoff included, and a node that was down catches up from its outbox.

``wake()`` after queueing in this process sends at once; disclosures queued
by another process (``puente send``) are found by polling every
``poll_interval`` seconds. The sweep expires disclosures that never left this
node and refuses those to nodes that left the federation. The guarantees are
written down in docs/delivery.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from node.core.logs import get_logger
from node.delivery import store as delivery_store
from node.delivery.peer_queue import MESSAGES_PATH, PeerQueue
from node.storage.context import NodeContext
from node.storage.delivery_models import PENDING_STATES

log = get_logger(__name__)

__all__ = ["MESSAGES_PATH", "PENDING_STATES", "Deliverer"]

# Refusing disclosures to former members needs a scan of the pending index;
# once a minute is often enough for an event as rare as leaving the federation.
ORPHAN_SWEEP_SECONDS = 60.0


class Deliverer:
    """Delivers the outbox of one node. ``wake()`` after queueing for low latency."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._wake = asyncio.Event()
        self._queues: dict[str, PeerQueue] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last_orphan_sweep: float | None = None
        ctx.queued_listeners.append(self.wake)

    def wake(self) -> None:
        """Something was queued: every peer queue looks for work now."""
        self._wake.set()
        for queue in self._queues.values():
            queue.poke()

    def _peer_ids(self) -> list[str]:
        return sorted(peer for peer in self.ctx.directory.nodes if peer != self.ctx.node_id)

    def _queue(self, peer_id: str) -> PeerQueue:
        queue = self._queues.get(peer_id)
        if queue is None:
            queue = self._queues[peer_id] = PeerQueue(self.ctx, peer_id)
        return queue

    async def forget_peer_sessions(self) -> None:
        """Drop cached HTTP sessions, e.g. after the directory changed a peer's TLS pins."""
        for queue in self._queues.values():
            await queue.close()

    async def run_forever(self) -> None:
        """Run every peer queue and the sweep until cancelled."""
        interval = self.ctx.config.delivery.poll_interval
        try:
            last_sweep: float | None = None
            while True:
                # Once a poll interval at most: a wake per queued disclosure must not
                # cost a busy node a sweep each.
                if last_sweep is None or time.monotonic() - last_sweep >= interval:
                    last_sweep = time.monotonic()
                    try:
                        await self.sweep()
                    except Exception:  # keep delivering whatever one sweep hit
                        log.exception("delivery_sweep_failed")
                for peer_id in self._peer_ids():
                    task = self._tasks.get(peer_id)
                    if task is None or task.done():
                        self._tasks[peer_id] = asyncio.create_task(
                            self._queue(peer_id).run_forever(), name=f"deliver-{peer_id}"
                        )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=interval)
                self._wake.clear()
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks.clear()

    async def close(self) -> None:
        if self.wake in self.ctx.queued_listeners:
            self.ctx.queued_listeners.remove(self.wake)
        for queue in self._queues.values():
            await queue.close()
        self._queues.clear()

    async def run_once(self) -> int:
        """One pass: sweep, then send what is due to every peer. Returns deliveries."""
        await self.sweep()
        results = await asyncio.gather(
            *(self._queue(peer_id).drain() for peer_id in self._peer_ids())
        )
        return sum(result.delivered for result in results)

    async def sweep(self) -> None:
        """Expire what never left and is too late now; refuse mail to former members."""
        while await delivery_store.expire_unsent(self.ctx) > 0:
            pass
        now = time.monotonic()
        if self._last_orphan_sweep is None or now - self._last_orphan_sweep > ORPHAN_SWEEP_SECONDS:
            self._last_orphan_sweep = now
            members = set(self.ctx.directory.nodes)
            while await delivery_store.refuse_orphans(self.ctx, members) > 0:
                pass
