"""Group commit: the writes of many concurrent requests in one transaction.

A busy node takes many requests at once, and each wants a short write
transaction. One at a time, every transaction pays its own commit (an fsync)
and, on SQLite, waits its turn for the single write lock while the event loop
serves everyone else between its statements. A :class:`GroupCommit` queues
the requests' items instead and applies whatever has queued in one
transaction, through one domain function that reads and writes for the whole
group at once (``WHERE id IN (...)``, multi-row inserts, one run of audit
appends). While a group commits the next one gathers, so a lone request waits
for nothing and a crowd shares its commits (the technique databases use for
their own logs).

Each item gets its own answer: the domain function returns a result or an
exception per item (a refusal that concerns only that item). If the group's
transaction fails as a whole, each item is tried again alone, so one bad item
cannot fail the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from node.core.logs import get_logger
from node.storage.sessions import Sessions

log = get_logger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")
# Applies a group in the caller's transaction: one result or exception per item, in order.
ApplyGroup = Callable[[AsyncSession, Sequence[Item]], Awaitable[Sequence[Result | Exception]]]


class GroupCommit(Generic[Item, Result]):
    """Queues items and applies them in shared transactions, at most ``max_items`` a group."""

    def __init__(
        self,
        sessions: Sessions,
        apply: ApplyGroup[Item, Result],
        *,
        max_items: int = 256,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._apply = apply
        self._max_items = max_items
        self._on_commit = on_commit
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.transactions = 0  # committed group transactions (for tests and metrics)

    async def submit(self, item: Item) -> Result:
        """Apply ``item`` in the next group; its result once committed, or its exception."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests, CLI commands run several)
            self._loop, self._pending, self._worker = loop, [], None
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            group = self._pending[: self._max_items]
            del self._pending[: self._max_items]
            await self._commit(group)

    async def _commit(self, group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            async with self._sessions.begin() as session:
                results = await self._apply(session, [item for item, _ in group])
        except Exception as exc:
            if len(group) > 1:
                log.warning("group_commit_split", items=len(group), error=type(exc).__name__)
                for one in group:  # each alone, so one bad item cannot fail the rest
                    await self._commit([one])
                return
            _settle(group[0][1], exc)
            return
        self.transactions += 1
        if self._on_commit is not None:
            self._on_commit()
        for (_, future), result in zip(group, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Result], outcome: Result | Exception) -> None:
    if future.done():  # the submitter was cancelled; what it asked for is committed anyway
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
