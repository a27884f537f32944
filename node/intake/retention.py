"""Lifecycle sweeps: purge summaries whose retention ended, lapse consents, tidy the key store.

Runs as a background task of every node (``node.federation.jobs.lifecycle`` in the
server's cleanup_ctx) and can be run by hand (``puente case purge``). Each
purge is one transaction with its ``retention.purged`` audit entry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from node.casework.consents import lapse_due
from node.core.logs import get_logger
from node.intake.summaries import erase, key_store
from node.storage.consent_models import ReceivedSummary, SummaryKey
from node.storage.context import NodeContext

log = get_logger(__name__)

SWEEP_INTERVAL_SECONDS = 60.0
BATCH = 200
# A key file with no bookkeeping row is one whose summary never committed (a crash
# or a refused duplicate between writing the key and committing); give it time.
ORPHAN_KEY_AGE = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class SweepResult:
    purged: int
    lapsed: int
    orphan_keys: int


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
        rows = {
            row.key_id: row
            for row in (
                await session.execute(select(SummaryKey).where(SummaryKey.key_id.in_(present)))
            ).scalars()
        }
    cutoff = ctx.now() - ORPHAN_KEY_AGE
    removed = 0
    for key_id in present:
        row = rows.get(key_id)
        if row is None:
            created = store.created_at(key_id)
            if created is None or created > cutoff:
                continue
        elif row.destroyed_at is None:
            continue
        if store.destroy(key_id):
            removed += 1
    if removed:
        log.info("data_keys_swept", count=removed)
    return removed


async def sweep(ctx: NodeContext) -> SweepResult:
    """One pass of every lifecycle duty."""
    return SweepResult(
        purged=await purge_expired(ctx),
        lapsed=await lapse_due(ctx),
        orphan_keys=await sweep_keys(ctx),
    )


async def run_forever(ctx: NodeContext, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
    while True:
        try:
            await sweep(ctx)
        except Exception:  # one failed pass must not end retention for good
            log.exception("lifecycle_sweep_failed")
        await asyncio.sleep(interval)
