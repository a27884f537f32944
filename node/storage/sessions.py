"""Read sessions and write transactions, and one SQLite writer at a time per process.

``sessions()`` is a session for reading; ``sessions.begin()`` is a write
transaction, committed when the block ends. On PostgreSQL the two differ only
in intent. On SQLite they differ in how the transaction opens, which decides
throughput under load:

- a read opens a deferred transaction (``BEGIN``): under WAL it reads a
  snapshot and never waits for a writer, nor makes one wait;
- a write opens with ``BEGIN IMMEDIATE`` (node.storage.engine), taking the
  database's single write lock at once, and writers of this process queue for
  it on an :class:`asyncio.Lock` first. SQLite's own busy handler, which a
  second writer would otherwise meet, sleeps in steps of up to 100 ms however
  soon the lock frees; the asyncio queue hands the lock over the moment the
  previous transaction commits. Other processes (a CLI command next to
  ``puente serve``) still meet the busy handler, as before.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

# The execution option node.storage.engine reads to open a write with BEGIN IMMEDIATE.
WRITE_OPTION = "puente_write"


class Sessions:
    """The node's session factory: ``sessions()`` to read, ``sessions.begin()`` to write."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(
            engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )
        self._serialize = engine.dialect.name == "sqlite"
        # One lock per event loop: tests and CLI commands may run several loops in turn.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._holder: asyncio.Task[object] | None = None

    def __call__(self) -> AsyncSession:
        """A session for reading (writes made in it are never committed)."""
        return self._read()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block ends, rolled back on an exception."""
        task = asyncio.current_task()
        if not self._serialize or (task is not None and task is self._holder):
            # PostgreSQL has row locks; a nested write keeps the old behaviour.
            async with self._write.begin() as session:
                yield session
            return
        lock = self._lock()
        async with lock:
            self._holder = task
            try:
                async with self._write.begin() as session:
                    yield session
            finally:
                self._holder = None

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock
