"""The test harness itself: a real PostgreSQL server, and databases on both backends."""

from __future__ import annotations

import os
import uuid

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.postgres import DatabaseFactory, PostgresCluster, PostgresServer

requires_postgres = pytest.mark.skipif(
    "postgresql" not in os.environ.get("PUENTE_TEST_BACKENDS", "postgresql"),
    reason="PostgreSQL tests disabled by PUENTE_TEST_BACKENDS",
)


@requires_postgres
async def test_postgres_server_is_real_and_unprivileged(
    postgres_cluster: PostgresServer,
) -> None:
    url = make_url(postgres_cluster.url_for("postgres"))
    assert url.drivername == "postgresql+asyncpg"
    connection = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    try:
        version: str = await connection.fetchval("SELECT version()")
        current_user: str = await connection.fetchval("SELECT current_user")
        data_directory: str = await connection.fetchval("SELECT current_setting('data_directory')")
        encoding: str = await connection.fetchval("SHOW server_encoding")
    finally:
        await connection.close()

    assert "PostgreSQL" in version
    assert encoding == "UTF8"
    if isinstance(postgres_cluster, PostgresCluster):
        assert current_user == "postgres"
        assert url.port == postgres_cluster.port
        assert data_directory == str(postgres_cluster.data_dir)
        # PostgreSQL refuses to run as root; the harness must have dropped privileges.
        if os.geteuid() == 0:
            assert postgres_cluster.run_as is not None
            assert os.stat(data_directory).st_uid != 0


@requires_postgres
async def test_create_database_gives_a_fresh_database(postgres_cluster: PostgresServer) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}_fresh"
    url = await postgres_cluster.create_database(name)
    assert make_url(url).database == name
    with pytest.raises(asyncpg.DuplicateDatabaseError):
        await postgres_cluster.create_database(name)


@requires_postgres
async def test_database_name_is_validated(postgres_cluster: PostgresServer) -> None:
    with pytest.raises(ValueError, match="invalid test database name"):
        await postgres_cluster.create_database('x"; DROP DATABASE postgres; --')


async def test_database_url_round_trip(database_url: str, db_backend: str) -> None:
    assert make_url(database_url).get_backend_name() == db_backend
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("CREATE TABLE harness_check (id INTEGER PRIMARY KEY, label TEXT NOT NULL)")
            )
            await connection.execute(
                text("INSERT INTO harness_check (id, label) VALUES (:id, :label)"),
                {"id": 1, "label": "señora"},
            )
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT id, label FROM harness_check"))).all()
    finally:
        await engine.dispose()
    assert [tuple(row) for row in rows] == [(1, "señora")]


async def test_database_factory_gives_separate_databases(
    database_factory: DatabaseFactory, db_backend: str
) -> None:
    first_url = await database_factory("node_a")
    second_url = await database_factory("node_b")
    assert first_url != second_url
    assert make_url(first_url).get_backend_name() == db_backend
    with pytest.raises(ValueError, match="no usable characters"):
        await database_factory("--")

    first = create_async_engine(first_url)
    second = create_async_engine(second_url)
    try:
        async with first.begin() as connection:
            await connection.execute(text("CREATE TABLE only_in_first (id INTEGER)"))
        async with second.begin() as connection:
            await connection.execute(text("CREATE TABLE only_in_second (id INTEGER)"))
        async with first.connect() as connection:
            await connection.execute(text("SELECT id FROM only_in_first"))
        async with second.connect() as connection:
            await connection.execute(text("SELECT id FROM only_in_second"))
            with pytest.raises(DBAPIError):
                await connection.execute(text("SELECT id FROM only_in_first"))
    finally:
        await first.dispose()
        await second.dispose()
