"""The pieces together: a primary and its synchronous standby on two "hosts".

Each PostgreSQL server runs in its own network namespace with its own address,
so the standby streams over the bed's bridge, and a client in the root
namespace finds the writable one through the multi-host URL after a failover,
exactly as the node's workers would across machines.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.netns import NetnsBed, netns_unavailable
from tests.support.pg_replication import (
    PgNodeSpec,
    ReplicatedPostgres,
    multihost_dsn,
    multihost_sqlalchemy_url,
    replication_unavailable,
)

_UNAVAILABLE = netns_unavailable() or replication_unavailable()
pytestmark = [
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"netns test bed: {_UNAVAILABLE}"),
    pytest.mark.timeout(180),
]


async def test_replication_and_failover_between_two_namespaces() -> None:
    with NetnsBed(["db1", "db2"]) as bed:
        db1, db2 = bed.host("db1"), bed.host("db2")
        pair = ReplicatedPostgres(
            primary=PgNodeSpec(host=db1.address, port=5432, netns=db1.netns),
            standby=PgNodeSpec(host=db2.address, port=5432, netns=db2.netns),
        )
        async with pair:
            # Same port on both: they are different hosts.
            assert (pair.primary.host, pair.primary.port) == (db1.address, 5432)
            assert (pair.standby.host, pair.standby.port) == (db2.address, 5432)
            standby = await asyncpg.connect(pair.standby.dsn())
            try:
                # The standby's WAL receiver talks to db1's address over the bridge.
                sender: str = await standby.fetchval("SELECT sender_host FROM pg_stat_wal_receiver")
                assert sender == db1.address
            finally:
                await standby.close()

            engine = create_async_engine(multihost_sqlalchemy_url(pair.nodes), pool_pre_ping=True)
            try:
                async with engine.begin() as conn:
                    await conn.execute(text("CREATE TABLE t (n integer)"))
                    await conn.execute(text("INSERT INTO t VALUES (1)"))
                    address = (await conn.execute(text("SELECT host(inet_server_addr())"))).scalar()
                    assert address == db1.address

                await asyncio.to_thread(pair.kill_primary)
                await pair.promote()

                async with engine.begin() as conn:
                    address = (await conn.execute(text("SELECT host(inet_server_addr())"))).scalar()
                    assert address == db2.address
                    await conn.execute(text("INSERT INTO t VALUES (2)"))
                    rows = (await conn.execute(text("SELECT n FROM t ORDER BY n"))).scalars()
                    assert list(rows) == [1, 2]
            finally:
                await engine.dispose()

            connection = await asyncpg.connect(multihost_dsn(pair.nodes))
            try:
                assert await connection.fetchval("SELECT host(inet_server_addr())") == db2.address
            finally:
                await connection.close()
