"""A peer down for hours: store and forward, bounded backoff, the backlog in order.

Real ``puente serve`` processes whose clocks read a shared offset file
(node.core.testhooks), so eleven hours of outage pass in seconds. The sender is
killed and restarted in the middle of the outage to show the backoff lives
in the database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from node.core.testhooks import FileClock
from node.delivery import status as delivery_status
from node.demo.local_federation import build_local_federation
from node.storage.context import NodeContext, open_node
from node.storage.delivery_models import DeliveryPeer
from node.storage.migrate import upgrade_to_head
from tests.support.delivery import (
    audit_entries,
    check_exactly_once,
    delivered_count,
    disclosures,
    queue_notices,
    received_ids,
)
from tests.support.nodes import GT, MX, DatabaseFactory
from tests.support.processes import NodeProcess, eventually, set_clock, tune_delivery

pytestmark = pytest.mark.slow

RETRY_MAX = 300.0


async def failures(sender: NodeContext) -> int:
    async with sender.sessions() as session:
        health = await session.get(DeliveryPeer, "GT")
    return health.consecutive_failures if health else 0


async def backoff_now(sender: NodeContext, head_id: str) -> tuple[int, float]:
    """The peer's failure count and the delay chosen after the last failure, read consistently."""
    while True:
        before = await failures(sender)
        head = (await disclosures(sender, [head_id]))[0]
        async with sender.sessions() as session:
            health = await session.get(DeliveryPeer, "GT")
        assert health is not None and health.last_attempt_at is not None
        if health.consecutive_failures == before:
            return before, (head.next_attempt_at - health.last_attempt_at).total_seconds()


async def test_a_peer_down_for_hours_receives_its_backlog_in_order(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock_file = tmp_path / "clock"
    set_clock(clock_file, 0)
    clock = FileClock(clock_file)
    urls = {spec.node_id: await database_factory(spec.node_id.lower()) for spec in (MX, GT)}
    dirs = build_local_federation(
        tmp_path, (MX, GT), federation="outage-test", now=clock(), database_urls=urls
    )
    for data_dir in dirs.values():
        tune_delivery(
            data_dir, poll_interval=0.05, retry_base=1.0, retry_max=RETRY_MAX, max_in_flight=1
        )
    mx, gt = open_node(dirs["MX"], clock=clock), open_node(dirs["GT"], clock=clock)
    sender = NodeProcess(dirs["MX"], clock_file=clock_file)
    recipient = NodeProcess(dirs["GT"], clock_file=clock_file)
    offset = 0.0
    try:
        await upgrade_to_head(mx.engine)
        sender.start()  # GT is down from the start
        backlog = await queue_notices(mx, 150)
        short_lived = await queue_notices(mx, 3, ttl=dt.timedelta(hours=2), seed=9)
        backlog += await queue_notices(mx, 50, seed=10)

        async def one_more_failure(than: int) -> None:
            async def failed() -> bool:
                return await failures(mx) > than

            await eventually(failed, what=f"attempt {than + 1} fails")

        await one_more_failure(0)
        backoffs = []  # (consecutive failures, the delay chosen after the last of them)
        for step in range(30):
            backoffs.append(await backoff_now(mx, backlog[0]))
            seen = backoffs[-1][0]
            if step == 15:
                # kill -9 mid-outage; the restarted sender goes on from the stored count.
                sender.kill()
                sender.start()
            if step == 20:
                offset += 8 * 3600  # the long, quiet middle of the outage
            offset += RETRY_MAX  # any backoff is due by now
            set_clock(clock_file, offset)
            await one_more_failure(seen)
            if step == 15:
                assert await failures(mx) == seen + 1, "the restart did not reset the count"
        for count, delay in backoffs:
            top = min(RETRY_MAX, 1.0 * 2 ** (count - 1))
            assert top / 2 <= delay <= top, (count, delay)
        assert max(delay for _, delay in backoffs) >= RETRY_MAX / 2, "it grew to the cap"
        assert await failures(mx) >= 31
        assert offset > 10 * 3600

        # Nothing left for GT while it was down; the short-lived ones expired.
        assert await delivered_count(mx) == 0
        expired = {r.message_id for r in await disclosures(mx) if r.state == "expired"}
        assert expired == set(short_lived)
        [gt_view] = [p for p in await delivery_status.peers(mx) if p.peer == "GT"]
        assert gt_view.reachable is False and gt_view.backlog == len(backlog)

        await upgrade_to_head(gt.engine)
        recipient.start()
        offset += RETRY_MAX
        set_clock(clock_file, offset)

        async def all_delivered() -> bool:
            return await delivered_count(mx) == len(backlog)

        await eventually(all_delivered, what="the backlog delivered", patience=180)
        sender.stop()
        recipient.stop()
        assert await received_ids(gt) == backlog, "in the order it was queued"
        await check_exactly_once(mx, gt, backlog)
        expired_events = [e for e in await audit_entries(mx) if e["event"] == "disclosure.expired"]
        assert sorted(e["message_id"] for e in expired_events) == sorted(short_lived)
        [gt_view] = [p for p in await delivery_status.peers(mx) if p.peer == "GT"]
        assert gt_view.reachable is True and gt_view.backlog == 0
        assert gt_view.consecutive_failures == 0
    finally:
        sender.kill()
        recipient.kill()
        await mx.close()
        await gt.close()
