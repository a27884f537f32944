"""HAProxy (Debian's) from deploy/haproxy/haproxy.cfg, in front of test backends.

`HAProxy(backends).start()` renders the repository's template with free ports
and paths in a temporary directory, checks it with `haproxy -c`, and runs
`haproxy -db` (foreground) as a child process. When the tests run as root the
rendered file keeps the template's privilege drop (chroot into an empty
temporary directory, run as the `haproxy` account the Debian package creates);
otherwise those three lines are commented out, as an unprivileged process
cannot change its user.

`server_states()` reads the runtime API (`show stat` on the stats socket), so a
test waits for HAProxy's own verdict (UP/DOWN) instead of sleeping.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import dataclasses
import io
import os
import pwd
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "API_BACKEND",
    "FEDERATION_BACKEND",
    "TEMPLATE",
    "Backend",
    "HAProxy",
    "HAProxyError",
    "haproxy_unavailable",
    "render_config",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
FEDERATION_BACKEND = "puente_federation"
API_BACKEND = "puente_api"
RUN_USER = "haproxy"


class HAProxyError(RuntimeError):
    """HAProxy could not be configured or started."""


def haproxy_unavailable() -> str | None:
    """Why HAProxy cannot run here (None when it can)."""
    if shutil.which("haproxy") is None:
        return "haproxy not found; run scripts/ensure-ha-tools"
    return None


@dataclasses.dataclass(frozen=True)
class Backend:
    """One worker behind HAProxy: its federation (mTLS) port and its local API port."""

    name: str
    federation_port: int
    api_port: int
    host: str = "127.0.0.1"


def render_config(
    *,
    federation_bind: str,
    api_bind: str,
    backends: Sequence[Backend],
    runtime_socket: Path,
    chroot_dir: Path | None,
    run_user: str = RUN_USER,
    check_inter: str = "2s",
    template: Path = TEMPLATE,
) -> str:
    """The template filled in.

    `chroot_dir=None` comments out chroot/user/group: for a process that already
    runs unprivileged (a non-root test run, the official container image).
    """
    federation_servers = "\n".join(
        f"    server {b.name} {b.host}:{b.federation_port} check port {b.api_port}"
        for b in backends
    )
    api_servers = "\n".join(f"    server {b.name} {b.host}:{b.api_port} check" for b in backends)
    rendered = string.Template(template.read_text(encoding="utf-8")).substitute(
        federation_bind=federation_bind,
        api_bind=api_bind,
        federation_servers=federation_servers,
        api_servers=api_servers,
        runtime_socket=str(runtime_socket),
        chroot_dir=str(chroot_dir) if chroot_dir is not None else "/var/lib/haproxy",
        run_user=run_user,
        run_group=run_user,
        check_inter=check_inter,
    )
    if chroot_dir is None:
        lines = []
        for line in rendered.splitlines():
            if line.strip().split(" ", 1)[0] in ("chroot", "user", "group"):
                line = "    # (already unprivileged, no drop) " + line.strip()
            lines.append(line)
        rendered = "\n".join(lines) + "\n"
    return rendered


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class HAProxy:
    """One HAProxy process for one test; `with` or `start()`/`stop()`."""

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        host: str = "127.0.0.1",
        check_inter: str = "300ms",
        template: Path = TEMPLATE,
    ) -> None:
        self.backends = list(backends)
        self.host = host
        self.check_inter = check_inter
        self.template = template
        self.federation_port = 0
        self.api_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise HAProxyError("HAProxy has not been started")
        return self._dir

    @property
    def config_file(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def runtime_socket(self) -> Path:
        return self.directory / "admin.sock"

    @property
    def log_file(self) -> Path:
        return self.directory / "haproxy.log"

    def start(self) -> HAProxy:
        if self._dir is not None:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="puente-haproxy-", dir="/tmp"))
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        chroot_dir: Path | None = None
        run_user = RUN_USER
        if os.geteuid() == 0:
            chroot_dir = self.directory / "chroot"
            chroot_dir.mkdir(mode=0o755)
            try:
                pwd.getpwnam(RUN_USER)
            except KeyError:
                run_user = "nobody"
        for _attempt in range(3):
            self.federation_port = _free_port(self.host)
            self.api_port = _free_port(self.host)
            self.config_file.write_text(
                render_config(
                    federation_bind=f"{self.host}:{self.federation_port}",
                    api_bind=f"{self.host}:{self.api_port}",
                    backends=self.backends,
                    runtime_socket=self.runtime_socket,
                    chroot_dir=chroot_dir,
                    run_user=run_user,
                    check_inter=self.check_inter,
                    template=self.template,
                ),
                encoding="utf-8",
            )
            check = subprocess.run(
                ["haproxy", "-c", "-f", str(self.config_file)],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=30,
                check=False,
            )
            if check.returncode != 0:
                raise HAProxyError(
                    f"haproxy -c rejected the rendered template:\n{check.stdout}{check.stderr}"
                )
            with self.log_file.open("ab") as log:
                self.process = subprocess.Popen(
                    ["haproxy", "-db", "-f", str(self.config_file)],
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_listening(patience=15.0):
                return
            self._terminate()
            if "cannot bind" not in self.log_tail():
                break
        raise HAProxyError(f"HAProxy did not start\n{self.log_tail()}")

    def _wait_listening(self, *, patience: float) -> bool:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if self.runtime_socket.exists():
                with contextlib.suppress(OSError):
                    socket.create_connection((self.host, self.federation_port), timeout=1).close()
                    return True
            time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        """Stop HAProxy and delete its directory. Idempotent."""
        if self._dir is None:
            return
        self._terminate()
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        atexit.unregister(self.stop)

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no HAProxy log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- runtime API --------------------------------------------------------

    def runtime(self, command: str) -> str:
        """Send one command to the runtime API (stats socket) and return its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.runtime_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self, backend: str = FEDERATION_BACKEND) -> dict[str, str]:
        """{server name: status} of `backend`, e.g. {'w1': 'UP', 'w2': 'DOWN'}."""
        text = self.runtime("show stat").lstrip("# ")
        states = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND"):
                states[row["svname"]] = row["status"].split()[0]
        return states

    def wait_for_states(
        self, expected: dict[str, str], backend: str = FEDERATION_BACKEND, patience: float = 30.0
    ) -> None:
        """Wait until HAProxy reports exactly `expected` for `backend`."""
        deadline = time.monotonic() + patience
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.server_states(backend)
            if states == expected:
                return
            time.sleep(0.05)
        raise HAProxyError(
            f"{backend}: wanted {expected}, HAProxy says {states}\n{self.log_tail()}"
        )
