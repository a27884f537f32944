"""One peer's outbox queue: ordered, paced, bounded, backed off (after Synapse).

A round takes the peer's oldest pending disclosures from the database (at
most ``batch_size``), marks them ``sending``, sends them in queue order with
at most ``max_in_flight`` requests open to the peer, and stores every outcome
in one transaction (node.delivery.store). The window slides by position: a
disclosure is sent only once the one ``max_in_flight`` places before it has
its answer, so with ``max_in_flight = 1`` the peer stores them in exactly
queue order, and otherwise no disclosure is stored more than
``max_in_flight - 1`` places from its queue position.

A failure that may pass (network, timeout, 5xx, 429, a receipt that does not
verify) stops the round: nothing later is sent, the failed disclosure is
retried after a jittered exponential delay (or the peer's ``Retry-After``),
and the disclosures behind it wait, so order holds across outages. Receipts
arrive before they are stored; a crash in between loses nothing, because the
recipient answers the resent bytes with the same receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from node.core.errors import TRANSIENT_REFUSALS, ReceiptError
from node.core.limits import MAX_BATCH_MESSAGES
from node.core.logs import get_logger
from node.core.ratelimit import TokenBucket
from node.delivery.backoff import parse_retry_after
from node.delivery.store import (
    Outcome,
    PeerVerdict,
    Result,
    mark_sending,
    oldest_pending,
    record_outcomes,
)
from node.storage.context import NodeContext
from node.storage.models import Disclosure
from node.trust.directory import MemberNode
from node.trust.tls import client_context
from node.wire.batch import (
    BATCH_CONTENT_TYPE,
    BATCH_PATH,
    NOT_PROCESSED,
    encode_request,
    pack,
    parse_answers,
)
from node.wire.receipts import verify_receipt

log = get_logger(__name__)

MESSAGES_PATH = "/federation/v1/messages"
JOSE_CONTENT_TYPE = "application/jose"
# A batch answer holds a receipt (about 1 KB) or a problem for each message.
MAX_RESPONSE_BYTES = 65_536 + 4_096 * MAX_BATCH_MESSAGES
# Statuses that mean "not now" rather than "never".
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
RETRYABLE_REASONS = TRANSIENT_REFUSALS


@dataclass(frozen=True)
class _Attempt:
    outcome: Outcome
    verdict: PeerVerdict


@dataclass(frozen=True)
class RoundResult:
    delivered: int
    more: bool  # the round ended without a failure: there may be more to send now
    wait: float | None  # seconds until the peer's queue is due again; None if it is empty


class PeerQueue:
    """Sends one peer's disclosures. Owns its HTTP session and its send pace."""

    def __init__(
        self, ctx: NodeContext, peer_id: str, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.ctx = ctx
        self.peer_id = peer_id
        self._monotonic = monotonic
        config = ctx.config.delivery
        self._pace = TokenBucket.full(
            config.send_rate_per_peer, config.send_burst_per_peer, monotonic()
        )
        self._session: aiohttp.ClientSession | None = None
        self._poked = asyncio.Event()
        self._batches = True  # until the peer shows it has no batch endpoint
        # Messages a request now: halved after a batch lost on the network, doubled
        # after one that got through, so a link that drops large requests still
        # carries small ones (up to [delivery] messages_per_request).
        self._per_request = ctx.config.delivery.messages_per_request

    def poke(self) -> None:
        """Look for work now rather than at the next poll."""
        self._poked.set()

    async def close(self) -> None:
        """Close the HTTP session (the next round opens a new one)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run_forever(self) -> None:
        poll = self.ctx.config.delivery.poll_interval
        while True:
            wait: float | None = poll
            try:
                result = await self.drain()
                wait = result.wait
            except Exception:  # keep this peer's queue alive whatever one round hit
                log.exception("peer_round_failed", peer=self.peer_id)
            # Poll even while backing off: another process may queue, or an
            # operator may cancel the backoff (delivery_store.retry_now).
            timeout = poll if wait is None else min(poll, max(wait, 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), timeout=timeout)
            self._poked.clear()

    async def drain(self) -> RoundResult:
        """Run rounds until the queue is empty, backing off, or a round failed."""
        delivered = 0
        while True:
            result = await self.round()
            delivered += result.delivered
            if not result.more:
                return RoundResult(delivered, False, result.wait)

    async def round(self) -> RoundResult:
        """Send the oldest due batch once; store every outcome."""
        ctx = self.ctx
        config = ctx.config.delivery
        rows = await oldest_pending(ctx, self.peer_id, config.batch_size)
        if not rows:
            return RoundResult(0, False, None)
        now = ctx.now()
        if rows[0].next_attempt_at > now:
            # The oldest is backing off; the rest wait behind it to keep the order.
            return RoundResult(0, False, (rows[0].next_attempt_at - now).total_seconds())
        peer = ctx.directory.node(self.peer_id)
        if peer is None:
            return RoundResult(0, False, None)  # the sweep refuses them (no longer a member)
        if ctx.directory.is_expired(now):
            # Fail closed: a stale member list may still name a removed node or a revoked
            # certificate. The disclosures wait for a fresh directory (node.federation.refresher).
            return RoundResult(0, False, None)
        outcomes: list[Outcome] = []
        candidates: list[Disclosure] = []
        for row in rows:
            if row.expires_at <= now and row.state == "queued" and row.attempts == 0:
                # Never left this node and too late now: expire without sending.
                outcomes.append(Outcome(row.message_id, Result.EXPIRED, attempted=False))
            else:
                candidates.append(row)
        sendable = await mark_sending(ctx, [r.message_id for r in candidates])
        attempts, verdict = await self._send_in_order(
            peer, [r for r in candidates if r.message_id in sendable]
        )
        outcomes.extend(attempts)
        await record_outcomes(ctx, self.peer_id, outcomes, verdict)
        delivered = sum(1 for o in outcomes if o.result is Result.DELIVERED)
        if delivered:
            log.info("disclosures_delivered", peer=self.peer_id, count=delivered)
        failed = verdict in (PeerVerdict.FAILING, PeerVerdict.THROTTLED)
        return RoundResult(delivered, not failed, 0.0)

    async def _send_in_order(
        self, peer: MemberNode, rows: Sequence[Disclosure]
    ) -> tuple[list[Outcome], PeerVerdict]:
        window_size = self.ctx.config.delivery.max_in_flight
        window: deque[asyncio.Task[list[_Attempt]]] = deque()
        finished: list[_Attempt] = []
        try:
            for unit in self._units(rows):
                while len(window) >= window_size:
                    finished.extend(await window.popleft())
                if _must_stop(finished) or any(_stopped(t) for t in window):
                    break
                window.append(asyncio.create_task(self._attempt_unit(peer, unit)))
            while window:
                finished.extend(await window.popleft())
        finally:
            for task in window:
                task.cancel()
        outcomes = [a.outcome for a in finished]
        answered = {o.message_id for o in outcomes}
        outcomes.extend(
            Outcome(row.message_id, Result.UNTRIED, attempted=False)
            for row in rows
            if row.message_id not in answered
        )
        return outcomes, _verdict(finished)

    def _units(self, rows: Sequence[Disclosure]) -> list[Sequence[Disclosure]]:
        """The requests to make, in order: batches, or one message each."""
        if self._unbatched():
            return [[row] for row in rows]
        sizes = [len(row.envelope) for row in rows]
        return [rows[r.start : r.stop] for r in pack(sizes, max_messages=self._per_request)]

    def _unbatched(self) -> bool:
        """Messages go one a request to /federation/v1/messages, not in batches."""
        return self._per_request == 1 or not self._batches

    async def _attempt_unit(self, peer: MemberNode, unit: Sequence[Disclosure]) -> list[_Attempt]:
        if len(unit) == 1 and self._unbatched():
            attempts = [await self._attempt(peer, row) for row in unit]
            if not any(_stops(a) for a in attempts):
                self._got_through(1)
            return attempts
        return await self._attempt_batch(peer, unit)

    def _got_through(self, messages: int) -> None:
        ceiling = self.ctx.config.delivery.messages_per_request
        self._per_request = min(ceiling, max(self._per_request, 2 * messages))

    async def _attempt(self, peer: MemberNode, row: Disclosure) -> _Attempt:
        ctx = self.ctx
        # Past its expiry but maybe already received: this is its last attempt,
        # and anything but a receipt makes it expired.
        last_chance = row.expires_at <= ctx.now()
        delay = self._pace.reserve(self._monotonic())
        if delay > 0:
            await asyncio.sleep(delay)
        ctx.crash_points.reached("sender.before_post")
        try:
            status, retry_after_header, raw = await self._post(
                peer, MESSAGES_PATH, row.envelope.encode("ascii"), JOSE_CONTENT_TYPE
            )
        except (aiohttp.ClientError, TimeoutError, OSError, _ResponseTooLarge) as exc:
            self._pace.refund()
            return self._retry(row, f"network: {type(exc).__name__}", last_chance)
        return self._judge(row, status, retry_after_header, _json_object(raw), last_chance)

    async def _attempt_batch(self, peer: MemberNode, rows: Sequence[Disclosure]) -> list[_Attempt]:
        """Send several disclosures in one request (node.wire.batch); judge each answer."""
        ctx = self.ctx
        now = ctx.now()
        last_chance = [row.expires_at <= now for row in rows]
        delay = self._pace.reserve(self._monotonic(), len(rows))
        if delay > 0:
            await asyncio.sleep(delay)
        ctx.crash_points.reached("sender.before_post")
        body = encode_request([row.envelope for row in rows])
        try:
            status, retry_after_header, raw = await self._post(
                peer, BATCH_PATH, body, BATCH_CONTENT_TYPE
            )
        except (aiohttp.ClientError, TimeoutError, OSError, _ResponseTooLarge) as exc:
            self._pace.refund(len(rows))
            self._per_request = max(1, len(rows) // 2)
            error = f"network: {type(exc).__name__}"
            pairs = zip(rows, last_chance, strict=True)
            return [self._retry(row, error, last) for row, last in pairs]
        if status in (404, 405):
            # A peer without the batch endpoint: one message a request from now on.
            log.info("peer_without_batches", peer=self.peer_id)
            self._batches = False
            return await self._one_by_one(peer, rows)
        if status != 200:
            whole = _json_object(raw)  # the whole request refused: each as if alone
            return [
                self._judge(row, status, retry_after_header, whole, last, batch=True)
                for row, last in zip(rows, last_chance, strict=True)
            ]
        self._got_through(len(rows))
        answers = parse_answers(raw, len(rows))
        if answers is None:
            return [
                self._retry(row, "batch: malformed answer", last)
                for row, last in zip(rows, last_chance, strict=True)
            ]
        return [
            self._judge(row, _item_status(answer), None, answer, last)
            for row, answer, last in zip(rows, answers, last_chance, strict=True)
        ]

    async def _one_by_one(self, peer: MemberNode, rows: Sequence[Disclosure]) -> list[_Attempt]:
        attempts: list[_Attempt] = []
        for row in rows:
            attempts.append(await self._attempt(peer, row))
            if _stops(attempts[-1]):
                break  # the rest wait behind it, in order
        return attempts

    def _judge(
        self,
        row: Disclosure,
        status: int,
        retry_after_header: str | None,
        body: dict[str, Any] | None,
        last_chance: bool,
        *,
        batch: bool = False,
    ) -> _Attempt:
        """What the peer's answer about one disclosure means: delivered, refused, or later.

        ``batch``: the answer refused a whole batch request, not this message,
        so only "later" can come of it, never a final refusal.
        """
        ctx = self.ctx
        if status == 200 and not batch:
            token = body.get("receipt") if body else None
            if not isinstance(token, str):
                return self._retry(row, "receipt: missing", last_chance)
            try:
                verify_receipt(
                    token,
                    directory=ctx.directory,
                    expected_message_id=row.message_id,
                    expected_recipient=row.recipient_node,
                    expected_envelope_sha256=row.envelope_sha256,
                )
            except ReceiptError as exc:
                return self._retry(row, f"receipt: {exc.reason}", last_chance)
            ctx.crash_points.reached("sender.receipt_verified")
            return _Attempt(
                Outcome(row.message_id, Result.DELIVERED, receipt=token), PeerVerdict.WORKING
            )
        reason = body.get("reason") if body else None
        reason = reason if isinstance(reason, str) else f"http_{status}"
        retry_after = parse_retry_after(retry_after_header, now=ctx.now())
        if status == 429:
            return self._retry(
                row, f"http_429: {reason}", last_chance, PeerVerdict.THROTTLED, retry_after
            )
        if 400 <= status < 500 and status not in _RETRYABLE_STATUSES:
            if reason in RETRYABLE_REASONS:
                return self._retry(row, reason, last_chance, PeerVerdict.WORKING)
            if batch:
                return self._retry(row, f"batch: http_{status}: {reason}", last_chance)
            if reason == "expired":
                return _Attempt(
                    Outcome(row.message_id, Result.EXPIRED, reason=reason), PeerVerdict.WORKING
                )
            return _Attempt(
                Outcome(row.message_id, Result.REFUSED, reason=reason), PeerVerdict.WORKING
            )
        if reason == NOT_PROCESSED:
            # Left for later behind an earlier message's refusal: the peer itself works.
            return self._retry(row, reason, last_chance, PeerVerdict.WORKING)
        return self._retry(
            row, f"http_{status}: {reason}", last_chance, PeerVerdict.FAILING, retry_after
        )

    def _retry(
        self,
        row: Disclosure,
        error: str,
        last_chance: bool,
        verdict: PeerVerdict = PeerVerdict.FAILING,
        retry_after: float | None = None,
    ) -> _Attempt:
        if last_chance:
            return _Attempt(Outcome(row.message_id, Result.EXPIRED, reason=error), verdict)
        log.info("delivery_retry", message_id=row.message_id, peer=self.peer_id, error=error)
        return _Attempt(
            Outcome(row.message_id, Result.RETRY, reason=error, retry_after=retry_after), verdict
        )

    async def _post(
        self, peer: MemberNode, path: str, body: bytes, content_type: str
    ) -> tuple[int, str | None, bytes]:
        async with self._client(peer).post(
            peer.endpoint + path, data=body, headers={"Content-Type": content_type}
        ) as response:
            raw = bytearray()
            async for chunk in response.content.iter_chunked(16_384):
                raw.extend(chunk)
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise _ResponseTooLarge
            return response.status, response.headers.get("Retry-After"), bytes(raw)

    def _client(self, peer: MemberNode) -> aiohttp.ClientSession:
        if self._session is None:
            config = self.ctx.config.delivery
            connector = aiohttp.TCPConnector(
                # Only pins in force: an expired or revoked certificate is not trusted.
                ssl=client_context(self.ctx.keys.tls, peer, self.ctx.now()),
                limit=config.max_in_flight,
                limit_per_host=config.max_in_flight,
            )
            # Every phase is bounded, so a peer that accepts and never answers
            # holds one of its own connections for at most request_timeout.
            timeout = aiohttp.ClientTimeout(
                total=config.request_timeout,
                connect=config.connect_timeout,
                sock_read=config.read_timeout,
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session


class _ResponseTooLarge(Exception):
    """The peer's answer is larger than any receipt or problem could be."""


def _stopped(task: asyncio.Task[list[_Attempt]]) -> bool:
    return task.done() and not task.cancelled() and any(_stops(a) for a in task.result())


def _stops(attempt: _Attempt) -> bool:
    return attempt.outcome.result is Result.RETRY


def _must_stop(finished: Sequence[_Attempt]) -> bool:
    return any(_stops(a) for a in finished)


def _verdict(finished: Sequence[_Attempt]) -> PeerVerdict:
    verdicts = {a.verdict for a in finished}
    for verdict in (PeerVerdict.FAILING, PeerVerdict.THROTTLED, PeerVerdict.WORKING):
        if verdict in verdicts:
            return verdict
    return PeerVerdict.SILENT


def _item_status(answer: dict[str, Any]) -> int:
    """A batch result's status: 200 for a receipt, a problem's own status otherwise."""
    if "receipt" in answer:
        return 200
    status = answer.get("status")
    return status if isinstance(status, int) and 400 <= status < 600 else 500


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
