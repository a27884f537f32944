"""Throw-away PostgreSQL servers for the test suite.

`PostgresCluster` runs `initdb` and `pg_ctl` to start a private server on a free
localhost port, with trust authentication and durability switched off (the data
lives only as long as the test run). PostgreSQL refuses to run as root, so when
the tests run as root the server runs as an unprivileged system user.

`ExternalPostgres` offers the same interface for an already running server
(`PUENTE_TEST_POSTGRES_URL`), for machines where the suite cannot start one.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import asyncpg
from sqlalchemy.engine import URL, make_url

__all__ = [
    "DatabaseFactory",
    "ExternalPostgres",
    "PostgresCluster",
    "PostgresClusterError",
    "PostgresServer",
    "validate_database_name",
]

SERVICE_USER = "puente-test"
FALLBACK_USER = "nobody"
SUPERUSER = "postgres"
LOG_TAIL_LINES = 40
START_ATTEMPTS = 3
START_TIMEOUT_SECONDS = 60

_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


DatabaseFactory = Callable[[str], Awaitable[str]]
"""Type of the `database_factory` fixture: `await factory(label)` gives a new database URL."""


class PostgresClusterError(RuntimeError):
    """The test PostgreSQL server could not be set up, started or used."""


class PostgresServer(Protocol):
    """What the test fixtures need from a PostgreSQL server."""

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy URL (asyncpg driver) of database `dbname` on this server."""
        ...

    async def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its SQLAlchemy URL."""
        ...

    def stop(self) -> None:
        """Release the server (stop it, or drop what the tests created on it)."""
        ...


def validate_database_name(name: str) -> str:
    """Return `name` if it is a plain lower-case identifier, else raise ValueError.

    Names are interpolated into CREATE/DROP DATABASE (which take no bind
    parameters), so only a conservative identifier alphabet is accepted.
    """
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"invalid test database name {name!r}")
    return name


def find_postgres_bindir() -> Path:
    """Directory holding initdb and pg_ctl: the newest /usr/lib/postgresql/*/bin, else PATH."""

    def major(path: Path) -> tuple[int, ...]:
        version = path.parent.name
        return tuple(int(part) for part in version.split(".") if part.isdigit())

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bindir
    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = Path(initdb).resolve().parent
        if os.access(bindir / "pg_ctl", os.X_OK):
            return bindir
    raise PostgresClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under "
        "/usr/lib/postgresql/*/bin or on PATH; run scripts/ensure-postgres, or set "
        "PUENTE_TEST_POSTGRES_URL to an existing server's maintenance database"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ensure_service_user() -> str:
    """Name of an unprivileged account to run the server as (root only)."""
    with contextlib.suppress(KeyError):
        pwd.getpwnam(SERVICE_USER)
        return SERVICE_USER
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
    # Re-check rather than trust the exit status: a concurrent run may have won the race.
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        try:
            pwd.getpwnam(FALLBACK_USER)
        except KeyError:
            raise PostgresClusterError(
                f"running as root but could neither create user {SERVICE_USER!r} nor find "
                f"{FALLBACK_USER!r} to run PostgreSQL as (it refuses to run as root)"
            ) from None
        return FALLBACK_USER
    return SERVICE_USER


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(server log {path} unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


class PostgresCluster:
    """A private PostgreSQL server in a temporary directory, for one test run.

    Use `start()` and `stop()`, or the instance as a context manager.
    """

    def __init__(self, bindir: Path | None = None, *, durable: bool = False) -> None:
        self.bindir = bindir if bindir is not None else find_postgres_bindir()
        # Tests run with fsync off; benchmarks (bench/) need commits that reach the disk.
        self.durable = durable
        self.port = 0
        self.run_as: str | None = None
        self._base_dir: Path | None = None
        self._running = False

    # -- paths --------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise PostgresClusterError("cluster has not been started")
        return self._base_dir

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "socket"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> PostgresCluster:
        """Create the cluster and start the server; returns self."""
        if self._running:
            return self
        # /tmp rather than $TMPDIR: a short path keeps the socket path under the
        # 107-byte limit, and $TMPDIR may sit in a home the server user cannot enter.
        tmp_root = "/tmp" if os.path.isdir("/tmp") else None
        self._base_dir = Path(tempfile.mkdtemp(prefix="puente-pg-", dir=tmp_root))
        # The unprivileged server user must be able to traverse into its directories.
        self.base_dir.chmod(0o755)
        self.data_dir.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o755)
        self.log_file.touch(mode=0o644)
        atexit.register(self.stop)
        try:
            if os.geteuid() == 0:
                self.run_as = _ensure_service_user()
                user = pwd.getpwnam(self.run_as)
                for path in (self.data_dir, self.socket_dir, self.log_file):
                    os.chown(path, user.pw_uid, user.pw_gid)
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its files. Safe to call twice."""
        if self._base_dir is None:
            return
        if self._running:
            self._running = False
            for mode in ("fast", "immediate"):
                result = self._run(
                    "pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", check=False
                )
                if result.returncode == 0:
                    break
        shutil.rmtree(self._base_dir, ignore_errors=True)
        self._base_dir = None
        atexit.unregister(self.stop)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- databases ----------------------------------------------------------

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy URL (asyncpg driver) of database `dbname` on this server."""
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    async def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its SQLAlchemy URL."""
        validate_database_name(name)
        connection = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, database="postgres"
        )
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.url_for(name)

    # -- internals ----------------------------------------------------------

    def _command(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        if self.run_as is not None:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            argv = [runuser, "-u", self.run_as, "--", *argv]
        return argv

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # A predictable environment: no PG* variables from the caller, C locale so
        # initdb does not depend on which locales the machine has, and a working
        # directory the server user can enter.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        result = subprocess.run(
            self._command(tool, *args),
            cwd=self.base_dir,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and result.returncode != 0:
            raise PostgresClusterError(
                f"{tool} {' '.join(args)} failed with exit status {result.returncode}\n"
                f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
                f"\n--- server log tail ({self.log_file}) ---\n{_tail(self.log_file)}"
            )
        return result

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def _start_server(self) -> None:
        # The port is free when picked but could be taken before the server binds
        # it; pick another and retry in that case.
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                f"-c fsync={'on' if self.durable else 'off'} -c max_connections=200"
            )
            result = self._run(
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(START_TIMEOUT_SECONDS),
                "-o",
                options,
                check=False,
            )
            if result.returncode == 0:
                self._running = True
                return
            log_tail = _tail(self.log_file)
            if attempt < START_ATTEMPTS and "could not bind" in log_tail:
                continue
            # pg_ctl may have left a half-started server behind after a timeout.
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", check=False)
            raise PostgresClusterError(
                f"PostgreSQL server did not start (pg_ctl exit status {result.returncode}, "
                f"port {self.port}, user {self.run_as or 'current'})\n"
                f"--- pg_ctl output ---\n{result.stdout}{result.stderr}"
                f"--- server log tail ({self.log_file}) ---\n{log_tail}"
            )


class ExternalPostgres:
    """An already running server, reached through its maintenance database URL.

    Databases created through it are dropped again by `stop()`.
    """

    def __init__(self, maintenance_url: str) -> None:
        url = make_url(maintenance_url)
        if url.get_backend_name() != "postgresql":
            raise PostgresClusterError(
                f"PUENTE_TEST_POSTGRES_URL must be a postgresql:// URL, got {url.drivername!r}"
            )
        self._url: URL = url.set(drivername="postgresql+asyncpg")
        self._created: list[str] = []

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy URL (asyncpg driver) of database `dbname` on this server."""
        return self._url.set(database=dbname).render_as_string(hide_password=False)

    def _dsn(self) -> str:
        """The maintenance database URL in the plain form asyncpg accepts."""
        return self._url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its SQLAlchemy URL."""
        validate_database_name(name)
        connection = await asyncpg.connect(self._dsn())
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self._created.append(name)
        return self.url_for(name)

    async def drop_created_databases(self) -> None:
        """Drop every database this object created (WITH (FORCE) needs PostgreSQL 13+)."""
        if not self._created:
            return
        connection = await asyncpg.connect(self._dsn())
        try:
            while self._created:
                name = self._created.pop()
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    def stop(self) -> None:
        """Drop the databases the tests created; the server itself keeps running."""
        asyncio.run(self.drop_created_databases())
