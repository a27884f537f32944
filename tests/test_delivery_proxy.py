"""A fault-injecting TCP proxy between real nodes: nothing lost, nothing duplicated.

The sender's directory names the proxy as the recipient's endpoint; the
proxy forwards the TLS bytes and, connection by connection, drops, delays,
resets, truncates or stalls them, or accepts and never answers. The
deliverer runs on its own (``run_forever``) with short timeouts.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from node.demo.local_federation import free_port
from node.storage.delivery_models import DeliveryPeer
from tests.support.delivery import (
    check_exactly_once,
    delivered_count,
    disclosures,
    queue_notices,
    received_ids,
)
from tests.support.faultproxy import FAULT_KINDS, Fault, FaultProxy, Plan
from tests.support.nodes import GT, HN, MX, DatabaseFactory, live_federation
from tests.support.processes import eventually

IMPATIENT = {
    "poll_interval": 0.05,
    "retry_base": 0.05,
    "retry_max": 0.3,
    "connect_timeout": 0.5,
    "read_timeout": 0.5,
    "request_timeout": 2.0,
}
# The handshake and most of a request have passed once the client sent this many bytes.
REQUEST_SENT = 2200


def random_faults(seed: int) -> Plan:
    rng = random.Random(seed)  # a reproducible sequence of faults
    weights = {
        "pass": 5,
        "refuse": 2,
        "blackhole": 1,
        "delay": 2,
        "reset": 3,
        "truncate": 3,
        "stall": 3,
    }
    kinds = list(weights)

    def plan(connection: int) -> Fault:
        # The first connections show every kind at least once; then at random.
        kind = FAULT_KINDS[connection] if connection < len(FAULT_KINDS) else None
        kind = kind or rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        return Fault(
            kind,
            after_request_bytes=REQUEST_SENT,
            keep_response_bytes=rng.randrange(0, 600),
            delay=0.02 if kind == "delay" else 0.0,
            close_after_bytes=rng.randrange(2_000, 12_000),
        )

    return plan


async def test_random_network_faults_lose_and_duplicate_nothing(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    proxy_port = free_port()
    async with live_federation(
        tmp_path,
        database_factory,
        (MX, GT),
        deliver=True,
        public_urls={"GT": f"https://127.0.0.1:{proxy_port}"},
        delivery={**IMPATIENT, "max_in_flight": 2},
    ) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        proxy = FaultProxy(gt.ctx.config.port, random_faults(seed=4), port=proxy_port)
        await proxy.start()
        try:
            ids = await queue_notices(mx.ctx, 150)
            mx.deliverer.wake()

            async def all_delivered() -> bool:
                return await delivered_count(mx.ctx) == len(ids)

            await eventually(all_delivered, what="every disclosure receipted", patience=240)
        finally:
            await proxy.close()
        verdict = await check_exactly_once(mx.ctx, gt.ctx, ids)
    assert set(proxy.stats) == set(FAULT_KINDS), proxy.stats
    assert {"reset", "truncate", "stall"} <= set(proxy.triggered), proxy.triggered
    # Some answers were lost after GT stored the disclosure; the retry got the same receipt.
    assert verdict.duplicates_answered >= 1


async def test_a_peer_that_never_answers_holds_up_no_one_else(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    proxy_port = free_port()
    async with live_federation(
        tmp_path,
        database_factory,
        (MX, GT, HN),
        deliver=True,
        public_urls={"GT": f"https://127.0.0.1:{proxy_port}"},
        delivery=IMPATIENT,
    ) as nodes:
        mx, gt, hn = nodes["MX"], nodes["GT"], nodes["HN"]
        silent = True
        proxy = FaultProxy(
            gt.ctx.config.port,
            lambda _: Fault("blackhole") if silent else Fault(),
            port=proxy_port,
        )
        await proxy.start()
        try:
            to_gt = await queue_notices(mx.ctx, 20)
            to_hn = await queue_notices(mx.ctx, 20, to="HN")
            mx.deliverer.wake()

            async def hn_done() -> bool:
                rows = await disclosures(mx.ctx, to_hn)
                return {r.state for r in rows} == {"delivered"}

            async def gt_timed_out_twice() -> bool:
                async with mx.ctx.sessions() as session:
                    health = await session.get(DeliveryPeer, "GT")
                return health is not None and health.consecutive_failures >= 2

            await eventually(hn_done, what="HN's disclosures delivered", patience=120)
            await eventually(gt_timed_out_twice, what="GT's attempts time out", patience=120)
            waiting = await disclosures(mx.ctx, to_gt)
            assert Counter(r.state for r in waiting).keys() <= {"queued", "sending"}
            assert (waiting[0].last_error or "").startswith("network")
            assert await received_ids(gt.ctx) == []
            assert proxy.stats["blackhole"] >= 2

            silent = False

            async def gt_done() -> bool:
                rows = await disclosures(mx.ctx, to_gt)
                return {r.state for r in rows} == {"delivered"}

            await eventually(gt_done, what="GT's disclosures delivered", patience=120)
        finally:
            await proxy.close()
        await check_exactly_once(mx.ctx, hn.ctx, to_hn)
        await check_exactly_once(mx.ctx, gt.ctx, to_gt)
