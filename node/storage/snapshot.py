"""A consistent copy of a running node's database, and putting one back (docs/backup.md).

* SQLite: the SQLite online backup API (``sqlite3.Connection.backup``) in one
  step, which reads one consistent snapshot while the node keeps writing
  (WAL mode lets readers and the writer proceed together).
* PostgreSQL: ``pg_dump --format=custom``, which reads one snapshot (a
  repeatable-read transaction) while the node keeps writing; ``pg_restore``
  puts it into an empty database. The tools come with the PostgreSQL server
  packages: found on PATH or under ``/usr/lib/postgresql/*/bin`` (the newest),
  or named by ``PUENTE_PG_BIN``.

The database's password never appears on a command line: it goes to the
tools in their environment (``PGPASSWORD``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Final

from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from node.core.errors import PuenteError

PG_BIN_ENV: Final = "PUENTE_PG_BIN"
SQLITE: Final = "sqlite"
POSTGRESQL: Final = "postgresql"


class SnapshotError(PuenteError):
    """The database could not be copied or put back."""

    reason = "backup_database_failed"
    http_status = 500


def backend_of(url: str) -> str:
    """``sqlite`` or ``postgresql``, from a SQLAlchemy URL."""
    backend = make_url(url).get_backend_name()
    if backend not in (SQLITE, POSTGRESQL):
        raise SnapshotError("unsupported_database", f"cannot back up a {backend} database")
    return backend


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise SnapshotError("unsupported_database", "an in-memory database has nothing to copy")
    return Path(database)


def pg_tool(name: str) -> Path:
    """``pg_dump`` or ``pg_restore``: PUENTE_PG_BIN, PATH, else the newest server packages."""
    configured = os.environ.get(PG_BIN_ENV)
    candidates = [Path(configured) / name] if configured else []
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))

    def major(bindir: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in bindir.parent.name.split(".") if p.isdigit())

    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    candidates += [bindir / name for bindir in bindirs]
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise SnapshotError(
        "pg_tools_missing",
        f"{name} not found: install the PostgreSQL client of the server's version, "
        f"or set {PG_BIN_ENV} to the folder that holds it",
    )


def _pg_env(url: URL) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    values = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password if isinstance(url.password, str) else None,
        "PGDATABASE": url.database,
    }
    env.update({k: v for k, v in values.items() if v})
    return env


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(  # noqa: S603 - a fixed tool with arguments we build
        argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SnapshotError("backup_database_failed", f"{what} failed: {last}")


def _sqlite_copy(source: Path, dest: Path) -> None:
    if not source.exists():
        raise SnapshotError("backup_database_failed", f"no SQLite database at {source}")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # pages=-1: one step, one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            dst.close()
    finally:
        src.close()


async def copy_database(url: str, dest: Path) -> str:
    """Write a consistent copy of the database at ``url`` to ``dest``; returns its backend."""
    backend = backend_of(url)
    if backend == SQLITE:
        await asyncio.to_thread(_sqlite_copy, sqlite_path(url), dest)
    else:
        argv = [str(pg_tool("pg_dump")), "--format=custom", "--no-owner", "--no-privileges"]
        await asyncio.to_thread(_run, [*argv, f"--file={dest}"], _pg_env(make_url(url)), "pg_dump")
    return backend


async def is_empty(url: str) -> bool:
    """Whether the database at ``url`` has no tables (a restore never writes over data)."""
    if backend_of(url) == SQLITE and not sqlite_path(url).exists():
        return True
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    return not tables


def _sqlite_restore(copy: Path, dest: Path) -> None:
    check = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        (verdict,) = check.execute("PRAGMA integrity_check").fetchone()
    finally:
        check.close()
    if verdict != "ok":
        raise SnapshotError("backup_database_failed", f"the copied database is damaged: {verdict}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(copy, dest)
    os.chmod(dest, 0o600)


async def restore_database(url: str, copy: Path, backend: str) -> None:
    """Put a copy made by :func:`copy_database` into the empty database at ``url``."""
    if backend_of(url) != backend:
        raise SnapshotError(
            "restore_database_mismatch",
            f"the backup holds a {backend} database; give a {backend} database URL",
        )
    if not await is_empty(url):
        raise SnapshotError(
            "restore_target_not_empty",
            "the target database already holds tables: restore into a new, empty database",
        )
    if backend == SQLITE:
        await asyncio.to_thread(_sqlite_restore, copy, sqlite_path(url))
    else:
        argv = [str(pg_tool("pg_restore")), "--no-owner", "--no-privileges", "--exit-on-error"]
        parsed = make_url(url)
        argv.append(f"--dbname={parsed.database}")
        await asyncio.to_thread(_run, [*argv, str(copy)], _pg_env(parsed), "pg_restore")
