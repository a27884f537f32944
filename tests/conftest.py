"""Fixtures shared by the whole suite: databases on SQLite and on PostgreSQL.

A test that needs one database asks for `database_url`; it then runs once per
backend (ids `sqlite` and `postgresql`). A test that needs several databases of
the same backend (two nodes, say) asks for `database_factory` and awaits it once
per database; it is parametrized the same way through `db_backend`.

PostgreSQL: one private server is started for the whole run, lazily, the first
time a `postgresql` test needs it (see `tests/support/postgres.py`). Set
`PUENTE_TEST_POSTGRES_URL` to an existing server's maintenance database (e.g.
`postgresql://postgres@127.0.0.1:5432/postgres`) to use that server instead.
Set `PUENTE_TEST_BACKENDS=sqlite` to run only the SQLite half.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import (
    DatabaseFactory,
    ExternalPostgres,
    PostgresCluster,
    PostgresServer,
    validate_database_name,
)

BACKENDS = ("sqlite", "postgresql")


def _selected_backends() -> list[str]:
    raw = os.environ.get("PUENTE_TEST_BACKENDS", ",".join(BACKENDS))
    selected = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BACKENDS))
    if unknown or not selected:
        raise pytest.UsageError(f"PUENTE_TEST_BACKENDS={raw!r}: choose from {', '.join(BACKENDS)}")
    return [name for name in BACKENDS if name in selected]


def _label(name: str) -> str:
    """A database label reduced to the characters both backends accept in a name."""
    label = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    if not label:
        raise ValueError(f"database label {name!r} has no usable characters")
    return label


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresServer]:
    """The PostgreSQL server of this test run, stopped (or cleaned) at the end."""
    external = os.environ.get("PUENTE_TEST_POSTGRES_URL")
    server: PostgresServer = ExternalPostgres(external) if external else PostgresCluster().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=_selected_backends())
def db_backend(request: pytest.FixtureRequest) -> str:
    """The database backend this test instance runs against: `sqlite` or `postgresql`."""
    backend: str = request.param
    return backend


@pytest.fixture
def database_factory(
    db_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> DatabaseFactory:
    """An async callable that creates a fresh, empty database of `db_backend`.

    `await database_factory("node_a")` returns a SQLAlchemy async URL. The label
    names the SQLite file (`{tmp_path}/node_a.db`) or is appended to the
    PostgreSQL database name (`t_<12 hex>_node_a`); every call gives a new database.
    """
    if db_backend == "sqlite":
        used: set[str] = set()

        async def create_sqlite(name: str) -> str:
            label = _label(name)
            if label in used:
                raise ValueError(f"SQLite database label {label!r} already used in this test")
            used.add(label)
            return f"sqlite+aiosqlite:///{tmp_path}/{label}.db"

        return create_sqlite

    # Looked up here rather than declared as a parameter so that an SQLite-only
    # run never starts a PostgreSQL server.
    server: PostgresServer = request.getfixturevalue("postgres_cluster")

    async def create_postgresql(name: str) -> str:
        dbname = f"t_{uuid.uuid4().hex[:12]}_{_label(name)}"[:63]
        return await server.create_database(validate_database_name(dbname))

    return create_postgresql


@pytest.fixture
async def database_url(database_factory: DatabaseFactory) -> str:
    """URL of a fresh, empty database; the test runs once per backend."""
    return await database_factory("node")
