"""A PostgreSQL primary with a synchronous standby: what a failover keeps.

The high-availability node runs its workers against a primary whose commits are
acknowledged only once a synchronous standby holds them, so that when the
primary dies and the standby is promoted no acknowledged disclosure, receipt or
audit entry is lost; and the workers find the new primary by themselves through
a multi-host connection string.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.pg_replication import (
    STANDBY_NAME,
    ReplicatedPostgres,
    multihost_dsn,
    multihost_sqlalchemy_url,
    replication_unavailable,
)

_UNAVAILABLE = replication_unavailable()
pytestmark = [
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"replication test bed: {_UNAVAILABLE}"),
    pytest.mark.timeout(180),
]


async def _fetch_ids(dsn: str) -> set[int]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT id FROM acknowledged")
    except asyncpg.UndefinedTableError:
        return set()  # a standby may not have replayed the CREATE TABLE yet
    finally:
        await connection.close()
    return {row["id"] for row in rows}


async def _eventually_visible(dsn: str, wanted: set[int], patience: float = 30.0) -> None:
    # synchronous_commit=on waits for the standby's flush, not for its replay:
    # a hot-standby reader may see the row a moment later.
    deadline = time.monotonic() + patience
    while not wanted <= await _fetch_ids(dsn):
        if time.monotonic() > deadline:
            raise AssertionError(f"rows {sorted(wanted)} never became visible at {dsn}")
        await asyncio.sleep(0.05)


async def _server_address(connection: asyncpg.Connection) -> tuple[bool, int]:
    in_recovery: bool = await connection.fetchval("SELECT pg_is_in_recovery()")
    port: int = await connection.fetchval("SELECT inet_server_port()")
    return in_recovery, port


async def test_synchronous_replication_survives_kill_9_of_the_primary() -> None:
    async with ReplicatedPostgres() as pair:
        primary_dsn, standby_dsn = pair.primary.dsn(), pair.standby.dsn()
        assert (STANDBY_NAME, "streaming", "sync") in await pair.replication_state()

        writer = await asyncpg.connect(primary_dsn)
        try:
            assert await writer.fetchval("SHOW synchronous_commit") == "on"
            await writer.execute("CREATE TABLE acknowledged (id integer PRIMARY KEY)")
            await writer.execute("INSERT INTO acknowledged VALUES (1)")
            # A committed row is readable on the standby, which is read-only.
            await _eventually_visible(standby_dsn, {1})
            reader = await asyncpg.connect(standby_dsn)
            try:
                assert await reader.fetchval("SELECT pg_is_in_recovery()") is True
                with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                    await reader.execute("INSERT INTO acknowledged VALUES (2)")
            finally:
                await reader.close()

            # Synchronous, not merely fast: with the standby's WAL receiver frozen,
            # a commit is not acknowledged; it is once the standby is back.
            async with pair.standby_paused():
                pending = asyncio.create_task(writer.execute("INSERT INTO acknowledged VALUES (3)"))
                await asyncio.sleep(1.5)
                assert not pending.done(), "commit acknowledged without the standby"
            await asyncio.wait_for(pending, timeout=30)
        finally:
            await writer.close()

        # Writers keep committing while the primary is killed; remember what was
        # acknowledged to them.
        acknowledged: set[int] = {1, 3}
        stop = asyncio.Event()
        enough = asyncio.Event()

        async def write(first_id: int) -> None:
            connection = await asyncpg.connect(primary_dsn)
            next_id = first_id
            try:
                while not stop.is_set():
                    await connection.execute("INSERT INTO acknowledged VALUES ($1)", next_id)
                    acknowledged.add(next_id)
                    next_id += 4
                    if len(acknowledged) >= 200:
                        enough.set()
            except Exception:
                # The server went away under us (asyncpg reports that variously:
                # OSError, ConnectionDoesNotExistError, InternalClientError...).
                # Only what execute() returned from was recorded as acknowledged.
                return
            finally:
                with contextlib.suppress(Exception):
                    connection.terminate()

        writers = [asyncio.create_task(write(first)) for first in (100, 101, 102, 103)]
        await asyncio.wait_for(enough.wait(), timeout=60)
        await asyncio.to_thread(pair.kill_primary)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers), timeout=30)
        assert pair.primary.postmaster_pid() is not None  # killed, not shut down cleanly
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(primary_dsn, timeout=5)

        await pair.promote()
        promoted = await asyncpg.connect(standby_dsn)
        try:
            assert await promoted.fetchval("SELECT pg_is_in_recovery()") is False
            await promoted.execute("INSERT INTO acknowledged VALUES (2)")
            present = {row["id"] for row in await promoted.fetch("SELECT id FROM acknowledged")}
        finally:
            await promoted.close()
        lost = acknowledged - present
        assert not lost, f"{len(lost)} acknowledged rows lost in the failover: {sorted(lost)[:10]}"
        assert 2 in present


async def test_multihost_urls_find_the_writable_server_across_a_failover() -> None:
    async with ReplicatedPostgres() as pair:
        # Standby listed first, so "first host that answers" would be wrong.
        ordered = [pair.standby, pair.primary]
        dsn = multihost_dsn(ordered)
        url = multihost_sqlalchemy_url(ordered)
        assert dsn == (
            f"postgresql://postgres@127.0.0.1:{pair.standby.port},127.0.0.1:{pair.primary.port}"
            "/postgres?target_session_attrs=read-write"
        )
        assert url == (
            f"postgresql+asyncpg://postgres@/postgres?host=127.0.0.1:{pair.standby.port}"
            f"&host=127.0.0.1:{pair.primary.port}&target_session_attrs=read-write"
        )
        # SQLAlchemy's URL parser does not take libpq's comma list of hosts.
        with pytest.raises((ArgumentError, ValueError)):
            make_url(dsn.replace("postgresql://", "postgresql+asyncpg://"))

        # asyncpg itself, libpq style.
        connection = await asyncpg.connect(dsn)
        try:
            assert await _server_address(connection) == (False, pair.primary.port)
        finally:
            await connection.close()
        # Without target_session_attrs the first server (the standby) would do.
        connection = await asyncpg.connect(dsn.split("?")[0])
        try:
            assert await _server_address(connection) == (True, pair.standby.port)
        finally:
            await connection.close()

        engine = create_async_engine(url, pool_pre_ping=True)
        try:
            async with engine.begin() as conn:
                row = (
                    await conn.execute(text("SELECT pg_is_in_recovery(), inet_server_port()"))
                ).one()
                assert tuple(row) == (False, pair.primary.port)
                await conn.execute(text("CREATE TABLE failover_probe (n integer)"))
                await conn.execute(text("INSERT INTO failover_probe VALUES (1)"))

            await asyncio.to_thread(pair.kill_primary)
            await pair.promote()

            # The pooled connection to the dead primary is discarded by the
            # pre-ping; the reconnect skips the dead host and lands on the new primary.
            async with engine.begin() as conn:
                row = (
                    await conn.execute(text("SELECT pg_is_in_recovery(), inet_server_port()"))
                ).one()
                assert tuple(row) == (False, pair.standby.port)
                await conn.execute(text("INSERT INTO failover_probe VALUES (2)"))
                count = (await conn.execute(text("SELECT count(*) FROM failover_probe"))).scalar()
                assert count == 2
        finally:
            await engine.dispose()

        connection = await asyncpg.connect(dsn)
        try:
            assert await _server_address(connection) == (False, pair.standby.port)
        finally:
            await connection.close()


def test_teardown_leaves_no_server_or_files_behind() -> None:
    pair = ReplicatedPostgres().start()
    data_dirs = [node.data_dir for node in pair.nodes]
    pids = [node.postmaster_pid() for node in pair.nodes]
    assert all(pid is not None for pid in pids)
    pair.kill_primary()  # one killed, one running: both must be cleaned up
    pair.stop()
    pair.stop()  # idempotent
    for data_dir in data_dirs:
        assert not data_dir.exists()
    for pid in pids:
        assert pid is not None and not _alive(pid)


def _alive(pid: int) -> bool:
    """True if `pid` runs; a zombie (exited, not yet reaped by PID 1) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
