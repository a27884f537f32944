"""The deliverer: sends committed disclosures, verifies and stores receipts.

One worker pass takes the due disclosures for each peer in the order they
were queued and sends them one at a time; a peer that fails stops its own
queue (order is kept) and backs off with jittered exponential delay stored in
the database, so a restart does not reset it. Other peers are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
from collections import defaultdict
from typing import Any

import aiohttp
from sqlalchemy import select

from node import audit
from node.canonical import sha256_hex
from node.context import NodeContext
from node.directory import MemberNode
from node.errors import ReceiptError
from node.logs import get_logger
from node.receipts import verify_receipt
from node.storage.models import Disclosure
from node.tls import client_context

log = get_logger(__name__)

MESSAGES_PATH = "/federation/v1/messages"
PENDING_STATES = ("queued", "sending")
BATCH_PER_PEER = 100
# Refusals worth retrying: the peer is busy or the request timed out.
_RETRYABLE_STATUSES = frozenset({408, 425, 429})


class _Retry(Exception):
    """This attempt failed in a way that may succeed later."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class _Refused(Exception):
    """The recipient refused the disclosure for good, with a reason code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Deliverer:
    """Delivers the outbox of one node. ``wake()`` after queueing for low latency."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._wake = asyncio.Event()
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        interval = self.ctx.config.delivery.poll_interval
        while True:
            try:
                await self.run_once()
            except Exception:  # keep delivering whatever one pass hit
                log.exception("delivery_pass_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def run_once(self) -> int:
        """One pass: expire what is too old, then send what is due. Returns deliveries."""
        await self._expire_overdue()
        due = await self._due_by_peer()
        results = await asyncio.gather(
            *(self._drain_peer(peer, rows) for peer, rows in due.items())
        )
        return sum(results)

    async def _due_by_peer(self) -> dict[str, list[Disclosure]]:
        now = self.ctx.now()
        async with self.ctx.sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(Disclosure)
                        .where(Disclosure.state.in_(PENDING_STATES))
                        .order_by(Disclosure.created_at, Disclosure.message_id)
                    )
                )
                .scalars()
                .all()
            )
            by_peer: dict[str, list[Disclosure]] = defaultdict(list)
            blocked: set[str] = set()
            for row in rows:
                peer = row.recipient_node
                if peer in blocked or len(by_peer[peer]) >= BATCH_PER_PEER:
                    continue
                if row.next_attempt_at > now:
                    # The oldest pending disclosure for this peer is backing off;
                    # later ones wait behind it so the peer receives them in order.
                    blocked.add(peer)
                    continue
                by_peer[peer].append(row)
        return {peer: rows for peer, rows in by_peer.items() if rows}

    async def _drain_peer(self, peer_id: str, rows: list[Disclosure]) -> int:
        delivered = 0
        peer = self.ctx.directory.node(peer_id)
        for row in rows:
            if peer is None:
                await self._fail(row, "recipient_not_a_member", retry=False)
                continue
            try:
                receipt = await self._send(peer, row)
            except _Refused as refused:
                await self._fail(row, refused.reason, retry=False)
                continue
            except _Retry as retry:
                await self._fail(row, retry.error, retry=True)
                break  # keep this peer's order: the rest wait for the next pass
            await self._delivered(row, receipt)
            delivered += 1
        return delivered

    def _session(self, peer: MemberNode) -> aiohttp.ClientSession:
        session = self._sessions.get(peer.id)
        if session is None:
            connector = aiohttp.TCPConnector(
                ssl=client_context(self.ctx.keys.tls, peer), limit_per_host=1
            )
            timeout = aiohttp.ClientTimeout(total=self.ctx.config.delivery.request_timeout)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            self._sessions[peer.id] = session
        return session

    async def _send(self, peer: MemberNode, row: Disclosure) -> str:
        await self._mark_sending(row)
        try:
            async with self._session(peer).post(
                peer.endpoint + MESSAGES_PATH,
                data=row.envelope.encode("ascii"),
                headers={"Content-Type": "application/jose"},
            ) as response:
                status = response.status
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _Retry(f"network: {type(exc).__name__}") from exc
        body = _json_or_none(raw)
        if status == 200 and body is not None and isinstance(body.get("receipt"), str):
            token: str = body["receipt"]
            try:
                verify_receipt(
                    token,
                    directory=self.ctx.directory,
                    expected_message_id=row.message_id,
                    expected_recipient=row.recipient_node,
                    expected_envelope_sha256=row.envelope_sha256,
                )
            except ReceiptError as exc:
                raise _Retry(f"receipt: {exc.reason}") from exc
            return token
        if 400 <= status < 500 and status not in _RETRYABLE_STATUSES:
            reason = body.get("reason") if body else None
            raise _Refused(str(reason) if isinstance(reason, str) else f"http_{status}")
        raise _Retry(f"http_{status}")

    async def _mark_sending(self, row: Disclosure) -> None:
        if row.state == "sending":
            return
        async with self.ctx.sessions.begin() as session:
            stored = await session.get(Disclosure, row.message_id)
            if stored is not None and stored.state == "queued":
                stored.state = "sending"
        row.state = "sending"

    async def _delivered(self, row: Disclosure, receipt: str) -> None:
        now = self.ctx.now()
        async with self.ctx.sessions.begin() as session:
            stored = await session.get(Disclosure, row.message_id)
            if stored is None or stored.state not in PENDING_STATES:
                return
            stored.state = "delivered"
            stored.receipt = receipt
            stored.delivered_at = now
            stored.attempts += 1
            stored.last_error = None
            await audit.append(
                session,
                node=self.ctx.node_id,
                event="disclosure.delivered",
                at=now,
                message_id=stored.message_id,
                counterparty=stored.recipient_node,
                envelope_sha256=stored.envelope_sha256,
                receipt_sha256=sha256_hex(receipt.encode("ascii")),
            )
        log.info("disclosure_delivered", message_id=row.message_id, peer=row.recipient_node)

    async def _fail(self, row: Disclosure, error: str, *, retry: bool) -> None:
        now = self.ctx.now()
        async with self.ctx.sessions.begin() as session:
            stored = await session.get(Disclosure, row.message_id)
            if stored is None or stored.state not in PENDING_STATES:
                return
            stored.attempts += 1
            stored.last_error = error[:200]
            if retry:
                stored.state = "queued"
                stored.next_attempt_at = now + self._backoff(stored.attempts)
            else:
                stored.state = "refused"
                stored.refusal_reason = error[:64]
                await audit.append(
                    session,
                    node=self.ctx.node_id,
                    event="disclosure.refused",
                    at=now,
                    message_id=stored.message_id,
                    counterparty=stored.recipient_node,
                    reason=stored.refusal_reason,
                )
        if retry:
            log.info(
                "delivery_retry", message_id=row.message_id, peer=row.recipient_node, error=error
            )
        else:
            log.warning("disclosure_refused", message_id=row.message_id, reason=error)

    def _backoff(self, attempts: int) -> dt.timedelta:
        config = self.ctx.config.delivery
        ceiling = min(config.retry_max, config.retry_base * 2 ** min(attempts - 1, 30))
        # Full jitter: peers coming back from an outage are not hit in lock-step.
        return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311

    async def _expire_overdue(self) -> None:
        now = self.ctx.now()
        async with self.ctx.sessions.begin() as session:
            overdue = (
                (
                    await session.execute(
                        select(Disclosure).where(
                            Disclosure.state.in_(PENDING_STATES), Disclosure.expires_at <= now
                        )
                    )
                )
                .scalars()
                .all()
            )
            for row in overdue:
                row.state = "expired"
                await audit.append(
                    session,
                    node=self.ctx.node_id,
                    event="disclosure.expired",
                    at=now,
                    message_id=row.message_id,
                    counterparty=row.recipient_node,
                )


def _json_or_none(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
