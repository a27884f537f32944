"""A single-node etcd and Patroni members on loopback, from deploy/patroni/patroni.yml.

`PatroniCluster(members=2)` renders the repository's Patroni template once per
member (free ports, paths under one temporary directory, random passwords,
short timings), starts `etcd` (Debian's etcd-server) and then the members one
after the other, so the first bootstraps the cluster with `initdb` and the
others clone it with `pg_basebackup`. Patroni and PostgreSQL run as the
unprivileged service user of `tests/support/postgres.py` when the tests run as
root (PostgreSQL refuses root).

`kill(member)` is a host crash: SIGKILL to Patroni and to every process of its
PostgreSQL server. `stop()` ends everything (members, then etcd) and deletes the
directory; it is idempotent and registered at exit.

None of this imports the node: it exercises only the deploy/ configuration.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import functools
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.pg_replication import server_pids
from tests.support.postgres import _ensure_service_user, _tail, find_postgres_bindir

__all__ = [
    "TEMPLATE",
    "PatroniCluster",
    "PatroniError",
    "PatroniMember",
    "patroni_unavailable",
    "render_template",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "deploy" / "patroni" / "patroni.yml"
SCOPE = "puente"
NAMESPACE = "/puente/"

# Short timings so a failover takes seconds, not a minute; the template's
# constraint loop_wait + 2 * retry_timeout <= ttl holds.
TEST_TIMING = {"ttl": "10", "loop_wait": "1", "retry_timeout": "4"}


class PatroniError(RuntimeError):
    """etcd or a Patroni member could not be started or did not behave."""


def patroni_unavailable() -> str | None:
    """Why Patroni cannot run here (None when it can)."""
    missing = [tool for tool in ("patroni", "etcd", "etcdctl") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found; run scripts/ensure-ha-tools"
    try:
        find_postgres_bindir()
    except RuntimeError as exc:
        return str(exc)
    return None


def render_template(values: dict[str, str], template: Path = TEMPLATE) -> str:
    """The template with every `${name}` replaced; a missing value is an error."""
    return string.Template(template.read_text(encoding="utf-8")).substitute(values)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env() -> dict[str, str]:
    # Patroni runs on Debian's /usr/bin/python3: keep the test venv's Python
    # settings and any PG* variables away from it.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "PYTHON", "VIRTUAL_ENV", "ETCD"))
    }
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
    return env


def _kill_tree(process: subprocess.Popen[bytes] | None, *, grace: float) -> None:
    """SIGTERM `process`'s session, wait `grace` seconds, then SIGKILL it."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@dataclasses.dataclass
class PatroniMember:
    """One member: its rendered configuration, ports and Patroni process."""

    name: str
    base_dir: Path
    restapi_port: int
    pg_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.base_dir / "patroni.yml"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "patroni.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def api(self, path: str, *, timeout: float = 3.0) -> tuple[int, Any]:
        """GET Patroni's REST API: (status, decoded JSON body or None)."""
        url = f"http://127.0.0.1:{self.restapi_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                status: int = response.status
                body = response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None


class PatroniCluster:
    """etcd plus `members` Patroni members on loopback; use `start()`/`stop()` or `with`."""

    def __init__(self, members: int = 2, *, template: Path = TEMPLATE) -> None:
        self.template = template
        self.member_count = members
        self.bindir = find_postgres_bindir()
        self.superuser_password = secrets.token_urlsafe(16)
        self.run_as: str | None = None
        self.members: list[PatroniMember] = []
        self.etcd_client_port = 0
        self.etcd_process: subprocess.Popen[bytes] | None = None
        self._root: Path | None = None

    # -- lifecycle ----------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._root is None:
            raise PatroniError("the cluster has not been started")
        return self._root

    def start(self, *, wait: float = 180.0) -> PatroniCluster:
        """Start etcd, then each member in turn until it runs (leader, then replicas)."""
        if self._root is not None:
            return self
        self._root = Path(tempfile.mkdtemp(prefix="puente-patroni-", dir="/tmp"))
        self._root.chmod(0o755)
        atexit.register(self.stop)
        try:
            if os.geteuid() == 0:
                self.run_as = _ensure_service_user()
            self._start_etcd()
            for index in range(1, self.member_count + 1):
                member = self._prepare_member(f"db{index}")
                self.start_member(member)
                expected_role = "leader" if index == 1 else None
                self.wait_until(
                    functools.partial(self._member_running, member, expected_role),
                    what=f"{member.name} running" + (" as leader" if expected_role else ""),
                    patience=wait,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL), etcd, leftovers; delete files."""
        if self._root is None:
            return
        for member in self.members:
            _kill_tree(member.process, grace=20.0)
            self._kill_postgres(member)
        _kill_tree(self.etcd_process, grace=5.0)
        shutil.rmtree(self._root, ignore_errors=True)
        self._root = None
        atexit.unregister(self.stop)

    def __enter__(self) -> PatroniCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start_member(self, member: PatroniMember) -> None:
        """Start (or restart) Patroni for `member`, its output appended to its log."""
        argv = ["patroni", str(member.config_file)]
        if self.run_as is not None:
            argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", self.run_as, "--", *argv]
        with member.log_file.open("ab") as log:
            member.process = subprocess.Popen(
                argv,
                cwd=member.base_dir,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, member: PatroniMember) -> None:
        """A host crash: SIGKILL Patroni and every process of its PostgreSQL server."""
        if member.process is not None and member.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(member.process.pid, signal.SIGKILL)
            member.process.wait(timeout=10)
        self._kill_postgres(member)

    # -- observation --------------------------------------------------------

    def member(self, name: str) -> PatroniMember:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def roles(self, via: PatroniMember | None = None) -> dict[str, str]:
        """{member name: role} from a live member's GET /cluster ('leader', 'sync_standby', ...)."""
        candidates = [via] if via is not None else [m for m in self.members if m.running]
        for member in candidates:
            with contextlib.suppress(OSError):
                status, body = member.api("/cluster")
                if status == 200 and isinstance(body, dict):
                    return {item["name"]: item["role"] for item in body.get("members", [])}
        return {}

    def leader_key(self) -> str | None:
        """The leader key's value in etcd (read with etcdctl, not through Patroni)."""
        result = subprocess.run(
            [
                "etcdctl",
                f"--endpoints=http://127.0.0.1:{self.etcd_client_port}",
                "get",
                f"{NAMESPACE}{SCOPE}/leader",
                "--print-value-only",
            ],
            env={**_clean_env(), "ETCDCTL_API": "3"},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
        value = result.stdout.strip()
        return value or None

    def dsn(self, member: PatroniMember, dbname: str = "postgres") -> str:
        return (
            f"postgresql://postgres:{self.superuser_password}@127.0.0.1:{member.pg_port}/{dbname}"
        )

    def wait_until(
        self, predicate: Callable[[], bool], *, what: str, patience: float = 120.0
    ) -> float:
        """Poll `predicate()` until true; the seconds it took. Fails with the logs' tails."""
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > patience:
                logs = "\n".join(
                    f"--- {m.name} log tail ---\n{_tail(m.log_file)}" for m in self.members
                )
                raise PatroniError(f"gave up after {patience}s waiting for {what}\n{logs}")
            time.sleep(0.2)
        return time.monotonic() - started

    async def async_wait_until(
        self, predicate: Callable[[], bool], *, what: str, patience: float = 120.0
    ) -> float:
        return await asyncio.to_thread(self.wait_until, predicate, what=what, patience=patience)

    # -- internals ----------------------------------------------------------

    def _member_running(self, member: PatroniMember, role: str | None) -> bool:
        if not member.running:
            raise PatroniError(
                f"patroni {member.name} exited ({member.process and member.process.returncode})"
                f"\n{_tail(member.log_file)}"
            )
        try:
            status, body = member.api("/patroni")
        except OSError:
            return False
        if status != 200 or not isinstance(body, dict) or body.get("state") != "running":
            return False
        return role is None or body.get("role") in (role, "master", "primary")

    def _start_etcd(self) -> None:
        etcd_dir = self.root / "etcd"
        etcd_dir.mkdir(mode=0o700)
        for _attempt in range(3):
            client, peer = _free_port(), _free_port()
            client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
            with (etcd_dir / "etcd.log").open("ab") as log:
                self.etcd_process = subprocess.Popen(
                    [
                        "etcd",
                        "--name=etcd1",
                        f"--data-dir={etcd_dir / 'data'}",
                        f"--listen-client-urls={client_url}",
                        f"--advertise-client-urls={client_url}",
                        f"--listen-peer-urls={peer_url}",
                        f"--initial-advertise-peer-urls={peer_url}",
                        f"--initial-cluster=etcd1={peer_url}",
                        "--initial-cluster-state=new",
                        f"--initial-cluster-token=puente-{secrets.token_hex(4)}",
                    ],
                    cwd=etcd_dir,
                    env=_clean_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.etcd_process.poll() is None:
                if self._etcd_healthy(client_url):
                    self.etcd_client_port = client
                    return
                time.sleep(0.1)
            _kill_tree(self.etcd_process, grace=2.0)
            shutil.rmtree(etcd_dir / "data", ignore_errors=True)
        raise PatroniError(f"etcd did not become healthy\n{_tail(etcd_dir / 'etcd.log')}")

    @staticmethod
    def _etcd_healthy(client_url: str) -> bool:
        try:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as response:
                health = json.loads(response.read()).get("health")
        except (OSError, ValueError):
            return False
        return health in ("true", True)

    def _prepare_member(self, name: str) -> PatroniMember:
        base = self.root / name
        base.mkdir(mode=0o755)
        member = PatroniMember(
            name=name, base_dir=base, restapi_port=_free_port(), pg_port=_free_port()
        )
        socket_dir = base / "socket"
        socket_dir.mkdir(mode=0o755)
        values = {
            "scope": SCOPE,
            "member_name": name,
            "member_address": "127.0.0.1",
            "restapi_listen": f"127.0.0.1:{member.restapi_port}",
            "restapi_port": str(member.restapi_port),
            "etcd_hosts": f"127.0.0.1:{self.etcd_client_port}",
            **TEST_TIMING,
            "pg_listen": f"127.0.0.1:{member.pg_port}",
            "pg_port": str(member.pg_port),
            "data_dir": str(member.data_dir),
            "bin_dir": str(self.bindir),
            "socket_dir": str(socket_dir),
            "pgpass": str(base / "pgpass"),
            "member_network": "127.0.0.1/32",
            "client_network": "127.0.0.1/32",
            "superuser_password": self.superuser_password,
            "replication_password": secrets.token_urlsafe(16),
            "rewind_password": secrets.token_urlsafe(16),
            "watchdog_mode": "off",
        }
        member.config_file.write_text(render_template(values, self.template), encoding="utf-8")
        member.config_file.chmod(0o600)
        member.log_file.touch(mode=0o644)
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            for path in (base, socket_dir, member.config_file, member.log_file):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.members.append(member)
        return member

    def _kill_postgres(self, member: PatroniMember) -> None:
        # Patroni starts the postmaster in a session of its own, so it survives
        # Patroni; find it (and its children) by working directory.
        pids = server_pids(member.data_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server_pids(member.data_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
