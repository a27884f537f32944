"""Accepting a peer's batch of envelopes (node.wire.batch): in order, stored in runs.

Each envelope gets exactly the answer node.intake.receive.receive would give it
alone. What makes a batch fast is doing the per-message bookkeeping once for
many: every envelope is opened first (pure CPU); one query finds which
message ids this peer already used; the data keys of the summaries are made
in one worker-thread call (one fsync a file, then one of the directory, off
the event loop); and runs of accepted envelopes are stored in one
transaction with one run of audit appends (group commit).

Anything that is not a plain accepted envelope — a refusal, a repeat, a
consent withdrawal or erasure receipt — goes alone through
node.intake.receive.receive once the run before it is committed, so envelopes
are stored in batch order and a withdrawal applies to what came before it.
After a refusal that may pass (the recipient's directory or clock behind the
sender's), the rest are answered ``not_processed`` untouched: the sender
sends them again, in order, behind the one it retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node.auditlog import entries as audit
from node.core.errors import TRANSIENT_REFUSALS, EnvelopeError, PuenteError
from node.core.logs import get_logger
from node.intake.datakeys import DataKey
from node.intake.documents import CONTROL_DOCUMENTS, needs_data_key
from node.intake.documents import prepare as prepare_intake
from node.intake.receive import (
    Accepted,
    Ready,
    open_from,
    receipt_for,
    receive,
    received_event,
    received_row,
    record_refusal,
)
from node.intake.summaries import key_store
from node.storage.context import NodeContext
from node.storage.models import ReceivedMessage
from node.wire.batch import NOT_PROCESSED
from node.wire.envelope import OpenedEnvelope

log = get_logger(__name__)


class NotProcessed(PuenteError):
    """A batch item left untouched behind one refused for a reason that may pass."""

    reason = NOT_PROCESSED
    http_status = 503


BatchAnswer = Accepted | PuenteError


class _Reads:
    """One read session for the batch's checks, renewed after anything changed the state."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._session: AsyncSession | None = None

    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = self._ctx.sessions()
        return self._session

    async def renew(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def receive_batch(
    ctx: NodeContext, envelopes: Sequence[bytes], *, peer_node: str
) -> list[BatchAnswer]:
    """Accept a peer's batch in order; one answer per envelope, as if each came alone."""
    now = ctx.now()
    opened = [_open(ctx, envelope, peer_node, now) for envelope in envelopes]
    used = await _used_ids(ctx, peer_node, [o.message.message_id for o in opened if o])
    keyed = [
        position
        for position, item in enumerate(opened)
        if item is not None and item.message.message_id not in used and needs_data_key(item)
    ]
    made = await asyncio.to_thread(key_store(ctx).create_many, len(keyed)) if keyed else []
    keys: dict[int, DataKey] = dict(zip(keyed, made, strict=True))
    committed: set[str] = set()  # data key ids now referenced by a committed summary
    answers: list[BatchAnswer] = []
    run: list[Ready] = []
    reads = _Reads(ctx)
    try:
        for position, envelope in enumerate(envelopes):
            item = opened[position]
            ready = None
            if item is not None and item.message.message_id not in used:
                ready = await _ready(ctx, reads, envelope, item, now, keys.get(position))
            if ready is not None:
                run.append(ready)
                continue
            answers.extend(await _store_run(ctx, run, peer_node, now, committed))
            run = []
            answer = await _alone(ctx, envelope, peer_node)
            await reads.renew()  # it may have changed what the checks read (a withdrawal)
            answers.append(answer)
            if isinstance(answer, PuenteError) and answer.reason in TRANSIENT_REFUSALS:
                detail = f"not processed: an earlier message was refused ({answer.reason})"
                answers.extend(NotProcessed(detail=detail) for _ in envelopes[position + 1 :])
                return answers
        answers.extend(await _store_run(ctx, run, peer_node, now, committed))
        return answers
    finally:
        await reads.renew()
        unused = [key_id for key_id, _ in made if key_id not in committed]
        if unused:
            await asyncio.to_thread(_destroy, ctx, unused)


def _open(
    ctx: NodeContext, envelope: bytes, peer_node: str, now: dt.datetime
) -> OpenedEnvelope | None:
    try:
        return open_from(ctx, envelope, peer_node, now)
    except EnvelopeError:
        return None  # the single path refuses it, or answers a repeat of stored bytes


async def _used_ids(ctx: NodeContext, peer_node: str, message_ids: list[str]) -> set[str]:
    """Which of these message ids the peer already used (repeats take the single path)."""
    if not message_ids:
        return set()
    async with ctx.sessions() as session:
        found = await session.execute(
            select(ReceivedMessage.message_id).where(
                ReceivedMessage.sender_node == peer_node,
                ReceivedMessage.message_id.in_(message_ids),
            )
        )
        return set(found.scalars())


async def _ready(
    ctx: NodeContext,
    reads: _Reads,
    envelope: bytes,
    opened: OpenedEnvelope,
    now: dt.datetime,
    data_key: DataKey | None,
) -> Ready | None:
    """The envelope checked for a run; None sends it down the single path."""
    if opened.message.doc_type in CONTROL_DOCUMENTS:
        return None  # they change stored state: one at a time, in order
    try:
        intake = await prepare_intake(
            ctx, envelope, opened, now, session=reads.session(), fresh=True, data_key=data_key
        )
    except EnvelopeError:
        return None  # refused on its terms: the single path audits and answers it
    return Ready(envelope, opened, intake, receipt_for(ctx, opened, now))


async def _alone(ctx: NodeContext, envelope: bytes, peer_node: str) -> BatchAnswer:
    try:
        return await receive(ctx, envelope, peer_node=peer_node)
    except PuenteError as refusal:
        if not isinstance(refusal, EnvelopeError):  # EnvelopeErrors are audited where raised
            await record_refusal(ctx, refusal, peer_node=peer_node)
        return refusal


async def _store_run(
    ctx: NodeContext,
    run: Sequence[Ready],
    peer_node: str,
    now: dt.datetime,
    committed: set[str],
) -> list[BatchAnswer]:
    """Store a run of accepted envelopes in one transaction, or each alone on a conflict."""
    if not run:
        return []
    try:
        async with ctx.sessions.begin() as session:
            session.add_all([received_row(ready, now) for ready in run])
            await session.flush()
            events = [received_event(ctx, ready, now) for ready in run]
            await audit.append_many(session, node=ctx.node_id, events=events)
            for ready in run:
                await ready.intake.run(session)
            ctx.crash_points.reached("recipient.store_uncommitted")
    except IntegrityError:
        # A message id used twice in this batch: each goes alone, where the
        # unique constraint answers the second with the first one's receipt.
        return [await _alone(ctx, ready.envelope, peer_node) for ready in run]
    ctx.crash_points.reached("recipient.stored")
    committed.update(
        str(ready.intake.audit_details["data_key_id"])
        for ready in run
        if "data_key_id" in ready.intake.audit_details
    )
    log.info("envelopes_received", sender=peer_node, count=len(run))
    return [Accepted(receipt=ready.receipt, duplicate=False) for ready in run]


def _destroy(ctx: NodeContext, key_ids: list[str]) -> None:
    """Remove data keys made for envelopes that were not stored under them."""
    store = key_store(ctx)
    for key_id in key_ids:
        with contextlib.suppress(OSError):
            store.destroy(key_id)
