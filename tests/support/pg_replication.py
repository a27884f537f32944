"""A PostgreSQL primary and a synchronous streaming-replication standby, for HA tests.

`ReplicatedPostgres` builds on the patterns of `tests/support/postgres.py`
(temporary directories under /tmp, free ports, an unprivileged service user
when running as root, a log tail in every error):

- the primary runs `initdb` and starts with `synchronous_standby_names=standby1`
  given on its command line, so a commit under `synchronous_commit=on` (the
  default) is acknowledged only once the standby has flushed its WAL;
- the standby is made by `pg_basebackup -R -C -S standby1` (which writes
  `standby.signal` and `primary_conninfo`, and creates the physical replication
  slot on the primary, so the primary keeps every WAL segment the standby has
  not received), and connects with `application_name=standby1`;
- `wait_streaming()` waits until the primary's `pg_stat_replication` shows the
  standby `streaming` and `sync`;
- `kill_primary()` sends SIGKILL to the primary's postmaster (no shutdown
  checkpoint, no goodbye to the standby) and waits until its children are gone;
- `promote()` runs `pg_ctl promote` on the standby and waits until it accepts
  writes. The synchronous setting lives only on the old primary's command line
  (`pg_basebackup` copies configuration files, not command-line options), so the
  promoted standby, which has no standby of its own, does not block its commits.

Both servers listen on 127.0.0.1 and free ports by default. For the
network-namespace test bed each `PgNodeSpec` can name a listen address, a port
and a namespace: the server then runs under `ip netns exec NAMESPACE`, and
`pg_hba.conf` trusts every address (these are throw-away test servers).

Data durability: `fsync` is off unless `durable=True`. A SIGKILL of a process
does not lose what the kernel already holds in its page cache, so the
acknowledged-commit guarantees the tests check hold either way; only a host
crash would need fsync.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg

from tests.support.postgres import (
    SUPERUSER,
    PostgresClusterError,
    _ensure_service_user,
    _free_port,
    _tail,
    find_postgres_bindir,
)

__all__ = [
    "STANDBY_NAME",
    "PgNode",
    "PgNodeSpec",
    "ReplicatedPostgres",
    "multihost_dsn",
    "multihost_sqlalchemy_url",
    "replication_unavailable",
    "server_pids",
]

STANDBY_NAME = "standby1"
START_TIMEOUT_SECONDS = 60
WAIT_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class PgNodeSpec:
    """Where one server listens: address, port (0 = a free one) and network namespace."""

    host: str = "127.0.0.1"
    port: int = 0
    netns: str | None = None


@dataclasses.dataclass
class PgNode:
    """One running (or killed) server of the pair."""

    name: str
    host: str
    port: int
    netns: str | None
    base_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "socket"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq/asyncpg URL of database `dbname` on this server."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def postmaster_pid(self) -> int | None:
        """The postmaster's process id from `postmaster.pid`, or None if there is none."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return int(first_line) if first_line.strip().isdigit() else None


def replication_unavailable() -> str | None:
    """Why a replicated pair cannot be started here (None when it can): no server binaries."""
    try:
        bindir = find_postgres_bindir()
    except PostgresClusterError as exc:
        return str(exc)
    if not os.access(bindir / "pg_basebackup", os.X_OK):
        return f"pg_basebackup not found in {bindir}; run scripts/ensure-postgres"
    return None


def multihost_dsn(nodes: Sequence[PgNode], dbname: str = "postgres") -> str:
    """The libpq form asyncpg accepts: `postgresql://u@h1:p1,h2:p2/db?target_session_attrs=...`."""
    hosts = ",".join(f"{node.host}:{node.port}" for node in nodes)
    return f"postgresql://{SUPERUSER}@{hosts}/{dbname}?target_session_attrs=read-write"


def multihost_sqlalchemy_url(nodes: Sequence[PgNode], dbname: str = "postgres") -> str:
    """The form SQLAlchemy's asyncpg dialect accepts: one `host=h:p` query item per server.

    `postgresql+asyncpg://u@/db?host=h1:p1&host=h2:p2&target_session_attrs=read-write`;
    the comma form in the authority part is rejected by SQLAlchemy's URL parser.
    """
    hosts = "&".join(f"host={node.host}:{node.port}" for node in nodes)
    return f"postgresql+asyncpg://{SUPERUSER}@/{dbname}?{hosts}&target_session_attrs=read-write"


class ReplicatedPostgres:
    """A primary and a synchronous standby in temporary directories, for one test.

    Use `start()` / `stop()`, or `async with` (which also waits until the standby
    streams synchronously).
    """

    def __init__(
        self,
        bindir: Path | None = None,
        *,
        primary: PgNodeSpec | None = None,
        standby: PgNodeSpec | None = None,
        durable: bool = False,
    ) -> None:
        self.bindir = bindir if bindir is not None else find_postgres_bindir()
        self.durable = durable
        self._specs = {"primary": primary or PgNodeSpec(), "standby": standby or PgNodeSpec()}
        self.run_as: str | None = None
        self._root: Path | None = None
        self._nodes: dict[str, PgNode] = {}
        self._running: set[str] = set()
        self.promoted = False

    # -- accessors ----------------------------------------------------------

    @property
    def primary(self) -> PgNode:
        """The server started as primary (after a failover, the dead one)."""
        return self._node("primary")

    @property
    def standby(self) -> PgNode:
        """The server started as standby (after `promote()`, the writable one)."""
        return self._node("standby")

    @property
    def nodes(self) -> list[PgNode]:
        return [self.primary, self.standby]

    def _node(self, role: str) -> PgNode:
        try:
            return self._nodes[role]
        except KeyError:
            raise PostgresClusterError(f"the {role} has not been created") from None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> ReplicatedPostgres:
        """initdb and start the primary, base-backup and start the standby; returns self."""
        if self._root is not None:
            return self
        tmp_root = "/tmp" if os.path.isdir("/tmp") else None
        self._root = Path(tempfile.mkdtemp(prefix="puente-pgha-", dir=tmp_root))
        self._root.chmod(0o755)
        atexit.register(self.stop)
        try:
            if os.geteuid() == 0:
                self.run_as = _ensure_service_user()
            primary = self._prepare("primary", data_dir_mode=0o700)
            self._run(
                primary,
                "initdb",
                "-D",
                str(primary.data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            self._configure_primary(primary)
            self._start(primary, extra=f"-c synchronous_standby_names={STANDBY_NAME}")
            standby = self._prepare("standby", data_dir_mode=None)
            self._base_backup(primary, standby)
            self._start(standby, extra="")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers (immediate shutdown), kill leftovers, delete files. Idempotent."""
        if self._root is None:
            return
        for role in ("standby", "primary"):
            node = self._nodes.get(role)
            if node is None:
                continue
            if role in self._running:
                self._run(
                    node, "pg_ctl", "stop", "-D", str(node.data_dir), "-m", "immediate", "-w",
                    check=False,
                )  # fmt: skip
                self._running.discard(role)
            self._reap(node)
        shutil.rmtree(self._root, ignore_errors=True)
        self._root = None
        self._nodes.clear()
        atexit.unregister(self.stop)

    async def __aenter__(self) -> ReplicatedPostgres:
        await asyncio.to_thread(self.start)
        try:
            await self.wait_streaming()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- replication --------------------------------------------------------

    async def replication_state(self) -> list[tuple[str, str, str]]:
        """(application_name, state, sync_state) of each standby, as the primary sees it."""
        connection = await asyncpg.connect(self.primary.dsn())
        try:
            rows = await connection.fetch(
                "SELECT application_name, state, sync_state FROM pg_stat_replication"
            )
        finally:
            await connection.close()
        return [(row["application_name"], row["state"], row["sync_state"]) for row in rows]

    async def wait_streaming(self, patience: float = WAIT_SECONDS) -> None:
        """Wait until the standby streams from the primary as its synchronous standby."""
        deadline = time.monotonic() + patience
        state: list[tuple[str, str, str]] = []
        while time.monotonic() < deadline:
            state = await self.replication_state()
            if (STANDBY_NAME, "streaming", "sync") in state:
                return
            await asyncio.sleep(0.1)
        raise PostgresClusterError(
            f"standby not streaming synchronously after {patience}s; pg_stat_replication: {state}"
            f"\n--- standby log tail ---\n{_tail(self.standby.log_file)}"
        )

    async def walreceiver_pid(self) -> int:
        """Process id of the standby's WAL receiver (to pause it with SIGSTOP, say)."""
        connection = await asyncpg.connect(self.standby.dsn())
        try:
            pid: int | None = await connection.fetchval("SELECT pid FROM pg_stat_wal_receiver")
        finally:
            await connection.close()
        if pid is None:
            raise PostgresClusterError("the standby has no WAL receiver")
        return pid

    @contextlib.asynccontextmanager
    async def standby_paused(self) -> AsyncIterator[None]:
        """Freeze the standby's WAL receiver (SIGSTOP) for the duration of the block."""
        pid = await self.walreceiver_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def kill_primary(self) -> None:
        """`kill -9` the primary's postmaster and wait until its children have exited."""
        primary = self.primary
        pid = primary.postmaster_pid()
        if pid is None:
            raise PostgresClusterError("the primary has no postmaster.pid")
        os.kill(pid, signal.SIGKILL)
        self._running.discard("primary")
        # The backends, the walsender and the auxiliary processes notice the
        # postmaster's death and exit by themselves; give them a moment, then force.
        self._reap(primary, grace=10.0)

    async def promote(self, patience: float = WAIT_SECONDS) -> None:
        """`pg_ctl promote` the standby and wait until it is out of recovery."""
        standby = self.standby
        await asyncio.to_thread(
            self._run, standby, "pg_ctl", "promote", "-D", str(standby.data_dir), "-w",
            "-t", str(int(patience)),
        )  # fmt: skip
        deadline = time.monotonic() + patience
        while True:
            connection = await asyncpg.connect(standby.dsn())
            try:
                in_recovery: bool = await connection.fetchval("SELECT pg_is_in_recovery()")
            finally:
                await connection.close()
            if not in_recovery:
                self.promoted = True
                return
            if time.monotonic() > deadline:
                raise PostgresClusterError(f"standby still in recovery {patience}s after promote")
            await asyncio.sleep(0.1)

    # -- internals ----------------------------------------------------------

    def _prepare(self, role: str, *, data_dir_mode: int | None) -> PgNode:
        assert self._root is not None
        spec = self._specs[role]
        base = self._root / role
        base.mkdir(mode=0o755)
        node = PgNode(
            name=role,
            host=spec.host,
            port=spec.port or _free_port(),
            netns=spec.netns,
            base_dir=base,
        )
        if data_dir_mode is not None:
            node.data_dir.mkdir(mode=data_dir_mode)
        node.socket_dir.mkdir(mode=0o755)
        node.log_file.touch(mode=0o644)
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            for path in (base, node.socket_dir, node.log_file):
                os.chown(path, user.pw_uid, user.pw_gid)
            if data_dir_mode is not None:
                os.chown(node.data_dir, user.pw_uid, user.pw_gid)
        self._nodes[role] = node
        return node

    def _configure_primary(self, primary: PgNode) -> None:
        settings = {
            "wal_level": "replica",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "hot_standby": "on",
            "wal_keep_size": "64MB",
            "synchronous_commit": "on",
            "fsync": "on" if self.durable else "off",
            "max_connections": "100",
        }
        with (primary.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests/support/pg_replication.py\n")
            for key, value in settings.items():
                conf.write(f"{key} = '{value}'\n")
        if primary.host != "127.0.0.1" or self._specs["standby"].host != "127.0.0.1":
            # Servers in network namespaces: trust the test bed's addresses too.
            with (primary.data_dir / "pg_hba.conf").open("a", encoding="utf-8") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")
                hba.write("host replication all 0.0.0.0/0 trust\n")

    def _base_backup(self, primary: PgNode, standby: PgNode) -> None:
        self._run(
            standby,
            "pg_basebackup",
            "-h", primary.host,
            "-p", str(primary.port),
            "-U", SUPERUSER,
            "-D", str(standby.data_dir),
            "-R",  # standby.signal + primary_conninfo in postgresql.auto.conf
            "-C", "-S", STANDBY_NAME,  # create the physical replication slot
            "-X", "stream",
            "-c", "fast",
            "--no-sync",
        )  # fmt: skip
        # -R names no application_name; the primary's synchronous_standby_names
        # matches on it. A later line in postgresql.auto.conf overrides the earlier.
        conninfo = (
            f"host={primary.host} port={primary.port} user={SUPERUSER} "
            f"application_name={STANDBY_NAME}"
        )
        with (standby.data_dir / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")

    def _start(self, node: PgNode, *, extra: str) -> None:
        options = (
            f"-p {node.port} -k {node.socket_dir} -c listen_addresses={node.host} "
            f"-c cluster_name={node.name} {extra}"
        ).strip()
        result = self._run(
            node,
            "pg_ctl", "start", "-D", str(node.data_dir), "-l", str(node.log_file),
            "-w", "-t", str(START_TIMEOUT_SECONDS), "-o", options,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            self._run(node, "pg_ctl", "stop", "-D", str(node.data_dir), "-m", "immediate",
                      check=False)  # fmt: skip
            raise PostgresClusterError(
                f"{node.name} did not start on {node.host}:{node.port} "
                f"(pg_ctl exit status {result.returncode})\n{result.stdout}{result.stderr}"
                f"--- server log tail ({node.log_file}) ---\n{_tail(node.log_file)}"
            )
        self._running.add(node.name)

    def _reap(self, node: PgNode, *, grace: float = 0.0) -> None:
        """Make sure no process of `node` survives: wait `grace` seconds, then SIGKILL."""
        pids = server_pids(node.data_dir)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = server_pids(node.data_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _command(self, node: PgNode, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        if self.run_as is not None:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            argv = [runuser, "-u", self.run_as, "--", *argv]
        if node.netns is not None:
            argv = ["ip", "netns", "exec", node.netns, *argv]
        return argv

    def _run(
        self, node: PgNode, tool: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        result = subprocess.run(
            self._command(node, tool, *args),
            cwd=node.base_dir,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and result.returncode != 0:
            raise PostgresClusterError(
                f"{tool} {' '.join(args)} ({node.name}) failed with exit status "
                f"{result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n"
                f"{result.stderr}\n--- server log tail ({node.log_file}) ---\n"
                f"{_tail(node.log_file)}"
            )
        return result


def server_pids(data_dir: Path) -> list[int]:
    """Processes of the server at `data_dir`, the postmaster and every child.

    PostgreSQL processes change their working directory to the data directory,
    which finds the orphans of a killed postmaster too.
    """
    target = str(data_dir)
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != target:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(int(entry.name))
    return sorted(found)
