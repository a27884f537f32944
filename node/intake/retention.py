"""Lifecycle sweeps: purge what outlived its retention, lapse consents, tidy the key stores.

Received summaries past their ``retain_until``, and the origin's own cases past
``[casework] retention_days`` (node.casework.at_rest), are crypto-shredded.

Runs as a background task of every node (``node.federation.jobs.lifecycle`` in the
server's cleanup_ctx) and can be run by hand (``puente case purge``). Each
purge is one transaction with its ``retention.purged`` audit entry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy import select

from node.casework import at_rest as case_keys
from node.casework.consents import lapse_due
from node.core.logs import get_logger
from node.intake.datakeys import ORPHAN_KEY_AGE
from node.intake.summaries import erase, key_store
from node.storage.consent_models import ReceivedSummary, SummaryKey
from node.storage.context import NodeContext

log = get_logger(__name__)

SWEEP_INTERVAL_SECONDS = 60.0
BATCH = 200


@dataclass(frozen=True)
class SweepResult:
    purged: int
    lapsed: int
    orphan_keys: int
    cases_purged: int = 0  # the origin's own cases past [casework] retention_days


async def purge_expired(ctx: NodeContext) -> int:
    """Erase every summary whose retain_until has passed. Returns how many."""
    purged = 0
    while True:
        now = ctx.now()
        async with ctx.sessions.begin() as session:
            rows = list(
                (
                    await session.execute(
                        select(ReceivedSummary)
                        .where(
                            ReceivedSummary.erased_at.is_(None),
                            ReceivedSummary.retain_until <= now,
                        )
                        .order_by(ReceivedSummary.retain_until)
                        .limit(BATCH)
                        .with_for_update()
                    )
                ).scalars()
            )
            for row in rows:
                await erase(
                    ctx,
                    session,
                    row,
                    reason="retention_expired",
                    event="retention.purged",
                    now=now,
                    retain_until=row.retain_until.isoformat(),
                )
        purged += len(rows)
        if len(rows) < BATCH:
            break
    if purged:
        log.info("retention_purged", count=purged)
    return purged


async def sweep_keys(ctx: NodeContext) -> int:
    """Destroy key files that no live summary needs (never committed, or erased)."""
    store = key_store(ctx)
    present = store.key_ids()
    if not present:
        return 0
    async with ctx.sessions() as session:
        rows = list(
            (
                await session.execute(select(SummaryKey).where(SummaryKey.key_id.in_(present)))
            ).scalars()
        )
    removed = store.sweep(
        live={row.key_id for row in rows if row.destroyed_at is None},
        recorded={row.key_id for row in rows},
        older_than=ctx.now() - ORPHAN_KEY_AGE,
    )
    if removed:
        log.info("data_keys_swept", count=removed)
    return removed


async def sweep(ctx: NodeContext) -> SweepResult:
    """One pass of every lifecycle duty."""
    return SweepResult(
        purged=await purge_expired(ctx),
        lapsed=await lapse_due(ctx),
        orphan_keys=await sweep_keys(ctx) + await case_keys.sweep_keys(ctx),
        cases_purged=await case_keys.purge_expired(ctx),
    )


async def run_forever(ctx: NodeContext, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
    while True:
        try:
            await sweep(ctx)
        except Exception:  # one failed pass must not end retention for good
            log.exception("lifecycle_sweep_failed")
        await asyncio.sleep(interval)
