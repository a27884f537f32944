"""kill -9 of real node processes at every delicate moment: still exactly once.

Two ``puente serve`` processes (MX sends, GT receives) on SQLite or
PostgreSQL. While bursts of disclosures are queued and delivered, each node
is killed with SIGKILL at chosen moments (test-only crash points, see
node.core.testhooks) and at random ones, and restarted. In the end every
disclosure must have been received exactly once and receipted, nothing else
received, and both audit logs must say exactly that.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest

from node.core.clock import utcnow
from node.demo.local_federation import build_local_federation
from node.storage.context import NodeContext, open_node
from node.storage.migrate import upgrade_to_head
from tests.support.delivery import check_exactly_once, delivered_count, queue_notices
from tests.support.nodes import GT, MX, DatabaseFactory
from tests.support.processes import NodeProcess, eventually, tune_delivery

pytestmark = pytest.mark.slow

QUICK = {
    "poll_interval": 0.05,
    "retry_base": 0.05,
    "retry_max": 0.5,
    "connect_timeout": 2.0,
    "read_timeout": 10.0,
    "request_timeout": 20.0,
    "max_in_flight": 2,
}


async def crashed(node: NodeProcess) -> None:
    """Wait for a node that planned its own SIGKILL to die of it."""
    returncode = await asyncio.to_thread(node.wait_exit, 240)
    assert returncode == -signal.SIGKILL, f"exit {returncode}:\n{node.log_tail()}"


async def progress(sender: NodeContext, more: int, total: int) -> None:
    """Wait until ``more`` further disclosures are delivered (at most all ``total`` queued)."""
    target = min(await delivered_count(sender) + more, total)

    async def reached() -> bool:
        return await delivered_count(sender) >= target

    await eventually(reached, what=f"{more} more deliveries", patience=240)


# The crash points count events: a message's POST and a stored envelope each
# one-by-one, a batch request and a stored run of a batch each when batched.
# The counts put every crash in the middle of the burst of 1,000 either way.
# Batches are paced (100 messages a second), and their second burst is larger,
# so the kills still land mid-stream.
MODES: dict[str, dict[str, float]] = {
    "one_by_one": {
        "messages_per_request": 1,
        "send_rate_per_peer": 500,
        "post": 150,
        "stored": 60,
        "second": 100,
    },
    "batched": {
        "messages_per_request": 16,
        "send_rate_per_peer": 100,
        "post": 12,
        "stored": 5,
        "second": 400,
    },
}


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_kill_9_at_every_moment_loses_and_duplicates_nothing(
    tmp_path: Path, database_factory: DatabaseFactory, mode: str
) -> None:
    counts = MODES[mode]
    urls = {spec.node_id: await database_factory(spec.node_id.lower()) for spec in (MX, GT)}
    dirs = build_local_federation(
        tmp_path, (MX, GT), federation="fault-test", now=utcnow(), database_urls=urls
    )
    for data_dir in dirs.values():
        tune_delivery(
            data_dir,
            **QUICK,
            messages_per_request=int(counts["messages_per_request"]),
            send_rate_per_peer=counts["send_rate_per_peer"],
        )
    mx, gt = open_node(dirs["MX"]), open_node(dirs["GT"])
    sender, recipient = NodeProcess(dirs["MX"]), NodeProcess(dirs["GT"])
    rng = random.Random(4)  # reproducible "random" kill moments
    try:
        await upgrade_to_head(mx.engine)
        recipient.start()
        # During send: a request in the middle of the burst is about to go (one more in flight).
        sender.start(crash_at=f"sender.before_post:{counts['post']:.0f}")
        ids = await queue_notices(mx, 1000)  # the burst, queued while MX sends
        await crashed(sender)
        # The receipt came back and verified, but was never stored.
        sender.start(crash_at="sender.receipt_verified:100")
        await crashed(sender)
        # During commit: outcomes written inside the transaction, not committed.
        sender.start(crash_at="sender.outcome_uncommitted:3")
        await crashed(sender)
        sender.start()

        # The recipient: killed at a random moment, then at the planned ones.
        await progress(mx, rng.randrange(10, 60), len(ids))
        recipient.kill()
        # After GT stored it, before the receipt came back.
        recipient.start(crash_at=f"recipient.stored:{counts['stored']:.0f}")
        await crashed(recipient)
        # During GT's commit: envelope and audit entry written, not committed.
        recipient.start(crash_at=f"recipient.store_uncommitted:{counts['stored']:.0f}")
        await crashed(recipient)
        recipient.start()

        # A second burst, and kill -9 of either node at random moments.
        ids += await queue_notices(mx, int(counts["second"]), seed=5)
        for victim in (sender, recipient, sender, recipient):
            await progress(mx, rng.randrange(20, 80), len(ids))
            victim.kill()
            await asyncio.sleep(rng.uniform(0, 0.3))
            victim.start()

        async def all_delivered() -> bool:
            return await delivered_count(mx) == len(ids)

        await eventually(all_delivered, what="every disclosure receipted", patience=300)
        sender.stop()
        recipient.stop()
        verdict = await check_exactly_once(mx, gt, ids)
        assert verdict.received == 1000 + counts["second"]
        # Answers were lost after GT had stored (killed before answering, or
        # MX killed before storing the receipt): the resends got the same receipt.
        assert verdict.duplicates_answered >= 1
        assert sender.starts == 6 and recipient.starts == 6
    finally:
        sender.kill()
        recipient.kill()
        await mx.close()
        await gt.close()
