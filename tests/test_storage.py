"""Migrations, models and the append-only audit log, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from node.auditlog import entries as audit
from node.storage.engine import create_engine, session_factory
from node.storage.migrate import upgrade_to_head
from node.storage.models import Base


async def test_migrations_produce_exactly_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)
        await upgrade_to_head(engine)  # idempotent: a restart re-runs it
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        assert diff == []
    finally:
        await engine.dispose()


async def test_audit_log_refuses_update_and_delete(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        await upgrade_to_head(engine)
        async with sessions.begin() as session:
            await audit.append(session, node="MX", event="test.event", at=dt.datetime.now(dt.UTC))
        for statement in ("UPDATE audit_log SET event = 'rewritten'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as connection:
                    await connection.execute(text(statement))
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT event FROM audit_log"))).all()
        assert [r[0] for r in rows] == ["test.event"]
    finally:
        await engine.dispose()


async def test_audit_entries_are_appended_in_order_under_concurrency(database_url: str) -> None:
    """Concurrent writers never fork or reorder the log (the head row serialises them)."""
    import asyncio

    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        await upgrade_to_head(engine)

        async def write(i: int) -> None:
            async with sessions.begin() as session:
                await audit.append(
                    session, node="MX", event="test.concurrent", at=dt.datetime.now(dt.UTC), n=i
                )

        await asyncio.gather(*(write(i) for i in range(40)))
        async with sessions() as session:
            rows = await audit.entries(session, 0, 100)
        assert [r.seq for r in rows] == list(range(40))
        async with sessions() as session:
            assert await audit.first_damaged_entry(session) is None
    finally:
        await engine.dispose()
