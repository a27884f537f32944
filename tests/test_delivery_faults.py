"""kill -9 of real node processes at every delicate moment: still exactly once.

Two ``puente serve`` processes (MX sends, GT receives) on SQLite or
PostgreSQL. While bursts of disclosures are queued and delivered, each node
is killed with SIGKILL at chosen moments (test-only crash points, see
node.testhooks) and at random ones, and restarted. In the end every
disclosure must have been received exactly once and receipted, nothing else
received, and both audit logs must say exactly that.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest

from node.context import NodeContext, open_node
from node.localfed import build_local_federation
from node.storage.migrate import upgrade_to_head
from node.timeutil import utcnow
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


async def progress(sender: NodeContext, more: int) -> None:
    """Wait until ``more`` further disclosures are delivered."""
    target = await delivered_count(sender) + more

    async def reached() -> bool:
        return await delivered_count(sender) >= target

    await eventually(reached, what=f"{more} more deliveries", patience=240)


async def test_kill_9_at_every_moment_loses_and_duplicates_nothing(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    urls = {spec.node_id: await database_factory(spec.node_id.lower()) for spec in (MX, GT)}
    dirs = build_local_federation(
        tmp_path, (MX, GT), federation="fault-test", now=utcnow(), database_urls=urls
    )
    for data_dir in dirs.values():
        tune_delivery(data_dir, **QUICK)
    mx, gt = open_node(dirs["MX"]), open_node(dirs["GT"])
    sender, recipient = NodeProcess(dirs["MX"]), NodeProcess(dirs["GT"])
    rng = random.Random(4)  # reproducible "random" kill moments
    try:
        await upgrade_to_head(mx.engine)
        recipient.start()
        # During send: the 150th request is about to go (with one more in flight).
        sender.start(crash_at="sender.before_post:150")
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
        await progress(mx, rng.randrange(10, 60))
        recipient.kill()
        # After GT stored it, before the receipt came back.
        recipient.start(crash_at="recipient.stored:60")
        await crashed(recipient)
        # During GT's commit: envelope and audit entry written, not committed.
        recipient.start(crash_at="recipient.store_uncommitted:60")
        await crashed(recipient)
        recipient.start()

        # A second burst, and kill -9 of either node at random moments.
        ids += await queue_notices(mx, 100, seed=5)
        for victim in (sender, recipient, sender, recipient):
            await progress(mx, rng.randrange(20, 80))
            victim.kill()
            await asyncio.sleep(rng.uniform(0, 0.3))
            victim.start()

        async def all_delivered() -> bool:
            return await delivered_count(mx) == len(ids)

        await eventually(all_delivered, what="every disclosure receipted", patience=300)
        sender.stop()
        recipient.stop()
        verdict = await check_exactly_once(mx, gt, ids)
        assert verdict.received == 1100
        # Answers were lost after GT had stored (killed before answering, or
        # MX killed before storing the receipt): the resends got the same receipt.
        assert verdict.duplicates_answered >= 1
        assert sender.starts == 6 and recipient.starts == 6
    finally:
        sender.kill()
        recipient.kill()
        await mx.close()
        await gt.close()
