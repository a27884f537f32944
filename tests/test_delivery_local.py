"""Delivery between real nodes in one process: order, backoff, expiry, refusals, limits, status.

Real TLS on 127.0.0.1, real databases on both backends; the deliverer runs
when the test says (``run_once``) and the clock is moved, not waited for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from sqlalchemy import Table, insert, select, update

from node.core.canonical import sha256_hex
from node.delivery import status as delivery_status
from node.delivery.deliverer import Deliverer
from node.delivery.store import retry_now
from node.demo.local_federation import free_port
from node.federation.app_keys import INBOUND_LIMITS
from node.storage.delivery_models import DeliveryPeer
from node.storage.models import Disclosure
from tests.support.delivery import (
    MovableClock,
    audit_entries,
    check_exactly_once,
    disclosures,
    queue_notices,
    received_ids,
)
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.nodes import (
    GT,
    HN,
    MX,
    DatabaseFactory,
    LiveNode,
    live_federation,
    peer_session,
)
from tests.support.processes import eventually, puente

FAST = {"retry_base": 1.0, "retry_max": 60.0}


async def run_until_settled(node: LiveNode, clock: MovableClock, rounds: int = 50) -> None:
    """Run the deliverer, moving the clock past any backoff, until nothing is pending."""
    for _ in range(rounds):
        await node.deliverer.run_once()
        rows = await disclosures(node.ctx)
        if all(r.state not in ("queued", "sending") for r in rows):
            return
        clock.advance(seconds=FAST["retry_max"])
    raise AssertionError("still pending after every round")


async def test_backlog_arrives_in_queue_order_across_batches(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    tune = {**FAST, "batch_size": 7, "max_in_flight": 1}
    async with live_federation(
        tmp_path, database_factory, (MX, GT), clock=clock, delivery=tune
    ) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        await gt.stop()
        ids = await queue_notices(mx.ctx, 40)
        assert await mx.deliverer.run_once() == 0  # down: the first one fails, the rest wait
        rows = await disclosures(mx.ctx)
        head = rows[0]
        assert head.message_id == ids[0] and head.attempts == 1 and head.state == "queued"
        # The first request (one batch of a round, at most batch_size) was tried;
        # everything behind it waits.
        tried = [r for r in rows if r.attempts]
        assert tried == rows[: len(tried)] and len(tried) <= tune["batch_size"]
        assert all(r.state == "queued" for r in rows), "nothing overtakes the one backing off"
        await gt.start()
        await run_until_settled(mx, clock)
        assert await received_ids(gt.ctx) == ids, "stored in exactly the order queued"
        await check_exactly_once(mx.ctx, gt.ctx, ids)


async def test_a_window_reorders_at_most_within_its_size(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    window = 4
    async with live_federation(
        tmp_path, database_factory, (MX, GT), clock=clock, delivery={"max_in_flight": window}
    ) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        ids = await queue_notices(mx.ctx, 60)
        await run_until_settled(mx, clock)
        stored = await received_ids(gt.ctx)
        position = {message_id: i for i, message_id in enumerate(ids)}
        assert max(abs(position[m] - i) for i, m in enumerate(stored)) < window
        await check_exactly_once(mx.ctx, gt.ctx, ids)


async def test_backoff_survives_a_restart_and_grows_to_its_ceiling(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(
        tmp_path, database_factory, (MX, GT), clock=clock, delivery=FAST
    ) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        await gt.stop()
        ids = await queue_notices(mx.ctx, 3)
        gaps = []
        for _ in range(10):
            clock.advance(seconds=FAST["retry_max"])
            await mx.deliverer.run_once()
            head = (await disclosures(mx.ctx))[0]
            gaps.append((head.next_attempt_at - mx.ctx.now()).total_seconds())
        async with mx.ctx.sessions() as session:
            health = await session.get(DeliveryPeer, "GT")
        assert health is not None and health.consecutive_failures == 10
        assert gaps[0] <= FAST["retry_base"] < gaps[5], "the delay grows"
        assert max(gaps) <= FAST["retry_max"], "and never beyond retry_max"

        # A restarted deliverer (a new process would start the same way) reads
        # the backoff from the database: it does not try before the time.
        await gt.start()
        restarted = Deliverer(mx.ctx)
        try:
            assert await restarted.run_once() == 0
            head = (await disclosures(mx.ctx))[0]
            assert head.attempts == 10 and head.next_attempt_at > mx.ctx.now()
            # An operator who knows the peer is back cancels the wait.
            assert await retry_now(mx.ctx, "GT") >= 1
            assert await restarted.run_once() == 3
        finally:
            await restarted.close()
        async with mx.ctx.sessions() as session:
            health = await session.get(DeliveryPeer, "GT")
        assert health is not None and health.consecutive_failures == 0
        await check_exactly_once(mx.ctx, gt.ctx, ids)


async def test_expiry_of_a_disclosure_that_never_left(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(
        tmp_path, database_factory, (MX, GT), clock=clock, delivery=FAST
    ) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        await gt.stop()
        [late] = await queue_notices(mx.ctx, 1, ttl=dt.timedelta(hours=1))
        clock.advance(hours=2)
        await gt.start()
        await mx.deliverer.run_once()
        [row] = await disclosures(mx.ctx)
        assert (row.state, row.attempts) == ("expired", 0)
        events = [e for e in await audit_entries(mx.ctx) if e.get("message_id") == late]
        assert [e["event"] for e in events] == ["disclosure.queued", "disclosure.expired"]
        assert events[1]["attempts"] == 0
        assert await received_ids(gt.ctx) == []


async def test_expiry_after_attempts_asks_the_recipient_first(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """Overdue but maybe received: one last attempt decides delivered or expired."""
    clock = MovableClock()
    proxy_port = free_port()
    async with live_federation(
        tmp_path,
        database_factory,
        (MX, GT),
        clock=clock,
        # One message a request: the proxy loses the answer of one of them.
        delivery={**FAST, "read_timeout": 0.5, "request_timeout": 2.0, "messages_per_request": 1},
        public_urls={"GT": f"https://127.0.0.1:{proxy_port}"},
    ) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        lose_answers = True
        proxy = FaultProxy(
            gt.ctx.config.port,
            lambda _: Fault("stall", after_request_bytes=2200) if lose_answers else Fault(),
            port=proxy_port,
        )
        await proxy.start()
        try:
            # Stored at GT, the receipt lost on the way back.
            kept, lost = await queue_notices(mx.ctx, 2, ttl=dt.timedelta(hours=1))
            assert await mx.deliverer.run_once() == 0
            assert await received_ids(gt.ctx) == [kept]
            # Marked sending when the sender was killed: it may or may not have left.
            async with mx.ctx.sessions.begin() as session:
                await session.execute(
                    update(Disclosure).where(Disclosure.message_id == lost).values(state="sending")
                )
            lose_answers = False
            clock.advance(hours=2)
            await mx.deliverer.run_once()
        finally:
            await proxy.close()
        by_id = {r.message_id: r for r in await disclosures(mx.ctx)}
        assert by_id[kept].state == "delivered", "GT had it before expiry: its receipt counts"
        assert by_id[lost].state == "expired" and by_id[lost].last_error == "expired"
        assert await received_ids(gt.ctx) == [kept]
        gt_events = [(e["event"], e.get("reason")) for e in await audit_entries(gt.ctx)]
        assert ("envelope.duplicate", None) in gt_events
        assert ("envelope.refused", "expired") in gt_events
        mx_events = {(e["event"], e.get("message_id")) for e in await audit_entries(mx.ctx)}
        assert ("disclosure.delivered", kept) in mx_events
        assert ("disclosure.expired", lost) in mx_events


async def test_a_refused_disclosure_keeps_its_reason_and_the_queue_moves_on(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(tmp_path, database_factory, (MX, GT), clock=clock) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        bad, *good = await queue_notices(mx.ctx, 3)
        tampered = (await disclosures(mx.ctx, [bad]))[0].envelope[:-6] + "AAAAAA"
        async with mx.ctx.sessions.begin() as session:
            await session.execute(
                update(Disclosure)
                .where(Disclosure.message_id == bad)
                .values(envelope=tampered, envelope_sha256=sha256_hex(tampered.encode()))
            )
        assert await mx.deliverer.run_once() == 2
        row = (await disclosures(mx.ctx, [bad]))[0]
        assert (row.state, row.refusal_reason, row.receipt) == (
            "refused",
            "decryption_failed",
            None,
        )
        refused = [e for e in await audit_entries(mx.ctx) if e["event"] == "disclosure.refused"]
        assert [(e["message_id"], e["reason"]) for e in refused] == [(bad, "decryption_failed")]
        assert await received_ids(gt.ctx) == good
        view = await delivery_status.disclosure(mx.ctx, bad)
        assert view is not None and view.as_json()["refusal_reason"] == "decryption_failed"


@pytest.mark.parametrize("per_request", [1, 4])
async def test_a_rate_limited_sender_gets_everything_through_exactly_once(
    tmp_path: Path, database_factory: DatabaseFactory, per_request: int
) -> None:
    clock = MovableClock()
    # A batch costs its messages' worth of the peer's rate (at most the burst).
    limits = {
        "inbound_rate_per_peer": 2.0,
        "inbound_burst_per_peer": 3,
        "messages_per_request": per_request,
    }
    async with live_federation(
        tmp_path, database_factory, (MX, GT), clock=clock, delivery={**FAST, **limits}
    ) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        ids = await queue_notices(mx.ctx, 12)

        async def all_through() -> bool:
            await mx.deliverer.run_once()
            clock.advance(seconds=2)  # past the peer's Retry-After, without waiting for it
            await asyncio.sleep(0.2)  # the peer's bucket refills in real time
            return {r.state for r in await disclosures(mx.ctx)} == {"delivered"}

        await eventually(all_through, what="every disclosure through the limit")
        await check_exactly_once(mx.ctx, gt.ctx, ids)
        assert sum(r.attempts for r in await disclosures(mx.ctx)) > len(ids), "some got 429"
        async with mx.ctx.sessions() as session:
            health = await session.get(DeliveryPeer, "GT")
        assert health is not None and (health.last_error or "").startswith("http_429")
        assert health.consecutive_failures == 0 and health.last_failure_at is None, (
            "busy is not down"
        )


async def _slow_body(pause: float) -> AsyncIterator[bytes]:
    yield b"eyJ"
    await asyncio.sleep(pause)
    yield b"x"


async def test_inbound_limits_answer_429_with_retry_after_and_408_for_slow_bodies(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    limits = {
        "inbound_rate_per_peer": 0.01,  # no token comes back during the test
        "inbound_burst_per_peer": 3,
        "inbound_max_concurrent_per_peer": 2,
        "inbound_body_timeout": 0.5,
    }
    async with live_federation(tmp_path, database_factory, (MX, GT), delivery=limits) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        url = gt.url + "/federation/v1/messages"
        headers = {"Content-Type": "application/jose"}

        async def post(session: aiohttp.ClientSession, body: Any) -> tuple[int, str, Any]:
            async with session.post(url, data=body, headers=headers) as response:
                return (
                    response.status,
                    response.headers.get("Retry-After", ""),
                    await response.json(content_type=None),
                )

        async with (
            peer_session(mx, gt) as one,
            peer_session(mx, gt) as two,
            peer_session(mx, gt) as three,
        ):
            slow = [asyncio.create_task(post(s, _slow_body(5.0))) for s in (one, two)]
            inbound = gt.app[INBOUND_LIMITS]

            async def both_slow_ones_hold_a_slot() -> bool:
                return inbound.in_flight("MX") == 2

            await eventually(both_slow_ones_hold_a_slot, what="two requests in flight")
            status, retry_after, problem = await post(three, b"x")
            assert (status, problem["reason"]) == (429, "too_many_concurrent_requests")
            assert int(retry_after) >= 1
            for status, _, problem in await asyncio.gather(*slow):
                assert (status, problem["reason"]) == (408, "request_timeout")
            # The slow ones took two of the three tokens; the refused one took none.
            status, _, problem = await post(three, b"x")
            assert (status, problem["reason"]) == (400, "malformed_envelope")
            status, retry_after, problem = await post(three, b"x")
            assert (status, problem["reason"]) == (429, "rate_limited")
            assert problem["status"] == 429 and int(retry_after) >= 1
        reasons = [e.get("reason") for e in await audit_entries(gt.ctx)]
        assert reasons.count("request_timeout") == 2
        assert "rate_limited" not in reasons, "a flood of 429s is logged, not audited"


async def test_status_shows_peer_health_backlog_and_states(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(
        tmp_path, database_factory, (MX, GT, HN), clock=clock, delivery=FAST
    ) as nodes:
        mx, hn = nodes["MX"], nodes["HN"]
        await hn.stop()
        to_gt = await queue_notices(mx.ctx, 2)
        to_hn = await queue_notices(mx.ctx, 3, to="HN")
        await mx.deliverer.run_once()
        data_dir = mx.ctx.config.data_dir
        code, out, err = await puente("status", "--dir", str(data_dir), "--json")
        assert code == 0, err
        status = json.loads(out)
        peers = {p["peer"]: p for p in status["peers"]}
        assert peers["GT"]["reachable"] is True and peers["GT"]["backlog"] == 0
        assert peers["HN"]["reachable"] is False and peers["HN"]["backlog"] == 3
        assert peers["HN"]["next_attempt_at"] and peers["HN"]["last_error"].startswith("network")
        assert status["counts"]["delivered"] == 2 and status["counts"]["queued"] == 3
        states = {d["message_id"]: d["state"] for d in status["disclosures"]}
        assert {states[m] for m in to_gt} == {"delivered"}
        assert {states[m] for m in to_hn} == {"queued"}
        waiting = {d["next_attempt_at"] for d in status["disclosures"] if d["state"] == "queued"}
        assert waiting == {peers["HN"]["next_attempt_at"]}, "none is tried before the head"
        code, text, err = await puente("status", "--dir", str(data_dir), "--peer", "HN")
        assert code == 0 and "HN  UNREACHABLE backlog 3" in text, err
        assert all(m not in text for m in to_gt), "--peer filters the list"


async def test_a_hundred_thousand_queued_disclosures_keep_memory_bounded(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """The deliverer, the sweep and the status read bounded pages, never the whole outbox.

    The rows are inserted directly (queueing 100,000 through the outbox would
    take minutes); each carries a real 2 KB sealed envelope. Both peers are
    down, so every pass reads the queue heads and backs off.
    """
    clock = MovableClock()
    async with live_federation(
        tmp_path, database_factory, (MX, GT, HN), clock=clock, delivery=FAST
    ) as nodes:
        mx = nodes["MX"]
        await nodes["GT"].stop()
        await nodes["HN"].stop()
        [template] = await disclosures(mx.ctx, await queue_notices(mx.ctx, 1))
        envelope = template.envelope + "A" * max(0, 2048 - len(template.envelope))
        now = mx.ctx.now()
        total = 100_000
        columns = {c.name: getattr(template, c.key) for c in Disclosure.__table__.columns}
        async with mx.ctx.sessions.begin() as session:
            for start in range(0, total, 5_000):
                await session.execute(
                    insert(cast(Table, Disclosure.__table__)),
                    [
                        {
                            **columns,
                            "message_id": str(uuid.uuid4()),
                            "recipient_node": "GT" if i % 2 else "HN",
                            "recipient_authority": "gt-reception" if i % 2 else "hn-reception",
                            "envelope": envelope,
                            "created_at": now + dt.timedelta(microseconds=i),
                            "next_attempt_at": now,
                            # One in a thousand is overdue: the sweep expires them in pages.
                            "expires_at": now + dt.timedelta(hours=-1 if i % 1000 == 0 else 72),
                        }
                        for i in range(start, start + 5_000)
                    ],
                )
        tracemalloc.start()
        try:
            for _ in range(3):
                await mx.deliverer.run_once()
                clock.advance(seconds=FAST["retry_max"])
            peers = await delivery_status.peers(mx.ctx)
            counts = await delivery_status.counts(mx.ctx)
            page = await delivery_status.disclosures(mx.ctx, limit=50)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # The whole outbox is over 200 MB of envelopes; the work touched a few pages.
        assert peak < 24 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
        assert counts["expired"] == total // 1000
        assert sum(p.backlog for p in peers) == total + 1 - total // 1000
        assert {p.peer: p.reachable for p in peers} == {"GT": False, "HN": False}
        assert len(page) == 50
        async with mx.ctx.sessions() as session:
            attempted = (
                await session.execute(select(Disclosure).where(Disclosure.attempts > 0))
            ).scalars()
            assert {r.recipient_node for r in attempted} <= {"GT", "HN"}


async def test_queueing_in_process_wakes_the_deliverer_without_waiting_for_a_poll(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    hour = {"poll_interval": 3600.0}  # only a wake-up can explain a delivery
    async with live_federation(
        tmp_path, database_factory, (MX, GT), deliver=True, delivery=hour
    ) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        await asyncio.sleep(0.2)  # let the deliverer reach its first long wait
        ids = await queue_notices(mx.ctx, 3)

        async def delivered() -> bool:
            return await received_ids(gt.ctx) == ids

        await eventually(delivered, what="delivery after the wake-up", patience=60)
        await check_exactly_once(mx.ctx, gt.ctx, ids)
