"""Several "hosts" on one machine: Linux network namespaces on a private bridge.

`NetnsBed(["db1", "db2", "app"])` creates, for one test:

- a bridge `<prefix>-br` in the root namespace holding `<subnet>.1/24`, so the
  test process itself can reach every host;
- per host a namespace `<prefix>-<host>` with its loopback up and an `eth0` (one
  end of a veth pair whose other end, `<prefix>-<host>`, sits on the bridge)
  holding `<subnet>.N/24`.

`<prefix>` is `pn` and six random hex digits, unique per run; the /24 is a
10.x.y.0 network no route of the machine uses. `bed.popen(host, argv)` and
`bed.run(host, argv)` run a program inside a host (`ip netns exec`).

`teardown()` (also run by `with`, at exit, and when a later bed finds the
leftovers of a run whose process died) kills every process started through the
bed and every other process still inside one of its namespaces, then deletes
the namespaces, the veth pairs and the bridge. It is idempotent and keeps going
past individual failures, so a failing test still leaves nothing behind.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip` from iproute2;
`netns_unavailable()` says why not, for a clean skip.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_PREFIX",
    "NetnsBed",
    "NetnsError",
    "NetnsHost",
    "leftovers",
    "netns_unavailable",
]

BASE_PREFIX = "pn"
"""Every bed's prefix starts with this; the rest is random hex."""

REGISTRY = Path("/run/puente-netns")
"""One file per live bed, `<prefix>.json`, holding its owner's pid (for the stale sweep)."""

_HOST_NAME = re.compile(r"[a-z][a-z0-9]{0,5}")  # prefix (8) + "-" + 6 fits IFNAMSIZ (15)
_PREFIX = re.compile(rf"{BASE_PREFIX}[0-9a-f]{{6}}")


class NetnsError(RuntimeError):
    """A namespace, interface or process of the test bed could not be set up."""


@dataclasses.dataclass(frozen=True)
class NetnsHost:
    """One host of the bed: its namespace, its address, its interface on the bridge."""

    name: str
    netns: str
    address: str
    veth: str


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def netns_unavailable() -> str | None:
    """Why this machine cannot build a bed (None when it can): not root, no `ip`, or the kernel."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); run the suite as root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) not found; run scripts/ensure-ha-tools"
    probe = f"{BASE_PREFIX}probe{os.getpid() % 100000}"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"the kernel refused a network namespace: {result.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that overlaps no address or route of the root namespace."""
    used: list[ipaddress.IPv4Network] = []
    for line in _ip("-4", "-o", "addr", "show").stdout.splitlines():
        match = re.search(r"inet (\S+)", line)
        if match:
            used.append(ipaddress.IPv4Interface(match.group(1)).network)
    for line in _ip("-4", "route", "show").stdout.splitlines():
        target = line.split()[0] if line.split() else ""
        if target and target != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(target, strict=False))
    for _ in range(200):
        candidate = ipaddress.IPv4Network(
            f"10.{secrets.randbelow(54) + 200}.{secrets.randbelow(256)}.0/24"
        )
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise NetnsError("no free 10.x.y.0/24 for the test bed")


def _namespaces() -> list[str]:
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _links() -> list[str]:
    result = _ip("-o", "link", "show", check=False)
    names = []
    for line in result.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _netns_pids(netns: str) -> list[int]:
    result = _ip("netns", "pids", netns, check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def _netns_inode(netns: str) -> int | None:
    with contextlib.suppress(OSError):
        return os.stat(f"/run/netns/{netns}").st_ino
    return None


def _pids_in_net_namespaces(inodes: Iterable[int]) -> list[int]:
    """Live (non-zombie) processes whose network namespace is one of `inodes`."""
    wanted = set(inodes)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            inode = os.stat(entry / "ns" / "net").st_ino
            if inode not in wanted:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


def leftovers(prefix: str) -> dict[str, list[str]]:
    """What still exists with `prefix`: namespaces, links, registry entries."""
    return {
        "namespaces": [name for name in _namespaces() if name.startswith(prefix)],
        "links": [name for name in _links() if name.startswith(prefix)],
        "registry": [path.name for path in REGISTRY.glob(f"{prefix}*")],
    }


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill_all(pids: Iterable[int], *, grace: float) -> None:
    """SIGTERM `pids`, wait up to `grace` seconds, SIGKILL what is left."""
    pids = [pid for pid in pids if pid != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _remove(prefix: str, netns_names: Iterable[str], links: Iterable[str]) -> list[str]:
    """Kill processes inside, delete namespaces and links; returns what could not be removed."""
    problems = []
    netns_names = list(netns_names)
    inodes = [inode for name in netns_names if (inode := _netns_inode(name)) is not None]
    pids = set(_pids_in_net_namespaces(inodes))
    for name in netns_names:
        pids.update(_netns_pids(name))
    _kill_all(pids, grace=3.0)
    deadline = time.monotonic() + 5.0
    while _pids_in_net_namespaces(inodes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for name in netns_names:
        result = _ip("netns", "delete", name, check=False)
        if result.returncode != 0 and name in _namespaces():
            problems.append(f"netns {name}: {result.stderr.strip()}")
    for link in links:
        if link in _links():
            result = _ip("link", "delete", link, check=False)
            if result.returncode != 0 and link in _links():
                problems.append(f"link {link}: {result.stderr.strip()}")
    with contextlib.suppress(OSError):
        (REGISTRY / f"{prefix}.json").unlink()
    return problems


def sweep_stale() -> list[str]:
    """Tear down the beds of runs whose owning process is gone (a crashed pytest, say)."""
    swept = []
    for entry in sorted(REGISTRY.glob(f"{BASE_PREFIX}*.json")):
        prefix = entry.name.removesuffix(".json")
        try:
            owner = int(json.loads(entry.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            owner = 0
        if owner and _pid_alive(owner):
            continue
        if not _PREFIX.fullmatch(prefix):
            continue
        remains = leftovers(prefix)
        _remove(prefix, remains["namespaces"], remains["links"])
        swept.append(prefix)
    return swept


class NetnsBed:
    """Hosts in network namespaces on one bridge; use as a context manager."""

    def __init__(self, hosts: Sequence[str] = ("h1", "h2")) -> None:
        for name in hosts:
            if not _HOST_NAME.fullmatch(name):
                raise ValueError(f"host name {name!r}: 1-6 lower-case letters/digits, letter first")
        if len(set(hosts)) != len(hosts):
            raise ValueError(f"duplicate host names in {list(hosts)}")
        if len(hosts) > 250:
            raise ValueError("at most 250 hosts on one /24")
        self.prefix = f"{BASE_PREFIX}{secrets.token_hex(3)}"
        self.bridge = f"{self.prefix}-br"
        self._names = list(hosts)
        self.subnet: ipaddress.IPv4Network | None = None
        self.gateway = ""
        self.hosts: dict[str, NetnsHost] = {}
        self._processes: list[subprocess.Popen[Any]] = []
        self._inodes: list[int] = []
        self._up = False

    # -- lifecycle ----------------------------------------------------------

    def setup(self) -> NetnsBed:
        """Create the bridge, the namespaces and their veth pairs; returns self."""
        if self._up:
            return self
        reason = netns_unavailable()
        if reason is not None:
            raise NetnsError(reason)
        sweep_stale()
        REGISTRY.mkdir(mode=0o755, exist_ok=True)
        (REGISTRY / f"{self.prefix}.json").write_text(
            json.dumps({"pid": os.getpid(), "hosts": self._names}), encoding="utf-8"
        )
        self._up = True
        atexit.register(self.teardown)
        try:
            self.subnet = _free_subnet()
            addresses = list(self.subnet.hosts())
            self.gateway = str(addresses[0])
            plen = self.subnet.prefixlen
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/{plen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for index, name in enumerate(self._names, start=1):
                host = NetnsHost(
                    name=name,
                    netns=f"{self.prefix}-{name}",
                    address=str(addresses[index]),
                    veth=f"{self.prefix}-{name}",
                )
                self.hosts[name] = host
                peer = f"{self.prefix}-{name}p"[:15]
                _ip("netns", "add", host.netns)
                inode = _netns_inode(host.netns)
                if inode is not None:
                    self._inodes.append(inode)
                _ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
                _ip("link", "set", host.veth, "master", self.bridge)
                _ip("link", "set", host.veth, "up")
                _ip("link", "set", peer, "netns", host.netns)
                _ip("-n", host.netns, "link", "set", peer, "name", "eth0")
                _ip("-n", host.netns, "addr", "add", f"{host.address}/{plen}", "dev", "eth0")
                _ip("-n", host.netns, "link", "set", "eth0", "up")
                _ip("-n", host.netns, "link", "set", "lo", "up")
                _ip("-n", host.netns, "route", "add", "default", "via", self.gateway)
        except BaseException:
            self.teardown()
            raise
        return self

    def teardown(self) -> None:
        """Kill every process of the bed, delete namespaces, veths and bridge. Idempotent."""
        if not self._up:
            return
        self._up = False
        for process in self._processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for process in self._processes:
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=remaining)
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
        remains = leftovers(self.prefix)
        netns_names = {host.netns for host in self.hosts.values()} | set(remains["namespaces"])
        links = [host.veth for host in self.hosts.values()] + [self.bridge, *remains["links"]]
        problems = _remove(self.prefix, sorted(netns_names), dict.fromkeys(links))
        atexit.unregister(self.teardown)
        if problems:
            raise NetnsError("test bed teardown left: " + "; ".join(problems))

    def __enter__(self) -> NetnsBed:
        return self.setup()

    def __exit__(self, *exc_info: object) -> None:
        self.teardown()

    # -- use ----------------------------------------------------------------

    @property
    def namespace_inodes(self) -> list[int]:
        """Inode numbers of the bed's namespaces (to look for processes left inside)."""
        return list(self._inodes)

    def host(self, name: str) -> NetnsHost:
        return self.hosts[name]

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.hosts[host].netns, *argv]

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside `host`, in its own session; the bed kills it on teardown."""
        if not self._up:
            raise NetnsError("the bed is not set up")
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process: subprocess.Popen[Any] = subprocess.Popen(
            self.command(host, argv), start_new_session=True, **kwargs
        )
        self._processes.append(process)
        return process

    def run(
        self, host: str, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside `host` to completion, capturing its output."""
        result = subprocess.run(
            self.command(host, argv),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise NetnsError(
                f"{' '.join(argv)} in {host} failed ({result.returncode}): {result.stderr}"
            )
        return result
