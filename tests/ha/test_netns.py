"""The multi-host test bed: hosts in network namespaces, and nothing left behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.netns import (
    REGISTRY,
    NetnsBed,
    leftovers,
    netns_unavailable,
    sweep_stale,
)

_UNAVAILABLE = netns_unavailable()
pytestmark = [
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"netns test bed: {_UNAVAILABLE}"),
    pytest.mark.timeout(120),
]

# A one-connection echo server that prints "ready" once listening; argv[2] is a
# marker (the bed's prefix) so leftovers can be searched for by command line.
ECHO_SERVER = """
import socket, sys
port = int(sys.argv[1])
with socket.create_server(("0.0.0.0", port)) as server:
    print("ready", flush=True)
    while True:
        conn, peer = server.accept()
        with conn:
            data = conn.recv(1024)
            conn.sendall(data.upper() + b" from " + peer[0].encode())
"""

# Connects, sends a word, prints the answer.
CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as conn:
    conn.sendall(b"hola")
    print(conn.recv(1024).decode())
"""

PORT = 7070


def _start_echo(bed: NetnsBed, host: str, *extra: str) -> subprocess.Popen[str]:
    process = bed.popen(
        host,
        [sys.executable, "-c", ECHO_SERVER, str(PORT), bed.prefix, *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def _processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _processes_in(inodes: list[int]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino not in inodes:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


def _assert_gone(prefix: str, inodes: list[int]) -> None:
    assert leftovers(prefix) == {"namespaces": [], "links": [], "registry": []}
    assert _processes_mentioning(prefix) == []
    assert _processes_in(inodes) == []


def test_two_hosts_talk_over_tcp_and_teardown_leaves_nothing() -> None:
    with NetnsBed(["h1", "h2"]) as bed:
        prefix, inodes = bed.prefix, bed.namespace_inodes
        h1, h2 = bed.host("h1"), bed.host("h2")
        assert len(inodes) == 2 and h1.address != h2.address
        assert sorted(leftovers(prefix)["namespaces"]) == sorted([h1.netns, h2.netns])
        assert set(leftovers(prefix)["links"]) == {bed.bridge, h1.veth, h2.veth}
        # Each host has its own network stack: only lo and eth0, with its address.
        links = bed.run("h1", ["ip", "-o", "link", "show"]).stdout
        assert [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()] == [
            "lo",
            "eth0",
        ]
        assert f"inet {h1.address}/24" in bed.run("h1", ["ip", "-4", "addr", "show", "eth0"]).stdout

        _start_echo(bed, "h1")
        # h2 reaches h1 over the bridge; h1 sees h2's own address as the peer.
        answer = bed.run("h2", [sys.executable, "-c", CLIENT, h1.address, str(PORT)]).stdout
        assert answer.strip() == f"HOLA from {h2.address}"
        # The test process reaches it too, through the bridge's address...
        with socket.create_connection((h1.address, PORT), timeout=10) as conn:
            conn.sendall(b"hi")
            assert conn.recv(1024) == f"HI from {bed.gateway}".encode()
        # ...but the server is not on the root namespace's loopback, nor on h2's.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", PORT), timeout=5).close()
        refused = bed.run("h2", [sys.executable, "-c", CLIENT, "127.0.0.1", str(PORT)], check=False)
        assert refused.returncode != 0 and "ConnectionRefusedError" in refused.stderr
    _assert_gone(prefix, inodes)


class _TestFailedError(RuntimeError):
    """Raised inside the bed, as a failing assertion would be."""


def _start_processes_then_fail(bed: NetnsBed, started: list[subprocess.Popen[str]]) -> None:
    with bed:
        # Ignores SIGTERM: teardown must escalate to SIGKILL.
        stubborn = bed.popen(
            "a",
            [
                sys.executable,
                "-c",
                "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                " print('ready', flush=True); time.sleep(600)",
                bed.prefix,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(stubborn)
        assert stubborn.stdout is not None and stubborn.stdout.readline().strip() == "ready"
        # A daemon that escaped the bed's bookkeeping (its parent exited at once).
        daemon = f"{sys.executable} -c 'import time; time.sleep(600)' {bed.prefix}-daemon"
        bed.run("b", ["sh", "-c", f"setsid {daemon} >/dev/null 2>&1 &"])
        deadline = time.monotonic() + 10
        while not _processes_mentioning(f"{bed.prefix}-daemon"):
            assert time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.05)
        assert len(_processes_in(bed.namespace_inodes)) >= 2
        raise _TestFailedError("the test failed")


def test_teardown_after_a_failure_kills_stubborn_and_untracked_processes() -> None:
    bed = NetnsBed(["a", "b"])
    started: list[subprocess.Popen[str]] = []
    with pytest.raises(_TestFailedError):
        _start_processes_then_fail(bed, started)
    assert len(started) == 1 and started[0].poll() is not None
    _assert_gone(bed.prefix, bed.namespace_inodes)
    bed.teardown()  # idempotent


def test_a_crashed_runs_bed_is_swept_by_the_next_one() -> None:
    bed = NetnsBed(["x"]).setup()
    prefix, inodes = bed.prefix, bed.namespace_inodes
    try:
        _start_echo(bed, "x")
        # Pretend the owner died without tearing down: point the registry entry at
        # a process that has exited.
        dead = subprocess.Popen(["true"])
        dead.wait()
        (REGISTRY / f"{prefix}.json").write_text(json.dumps({"pid": dead.pid}))
        assert prefix in sweep_stale()
        _assert_gone(prefix, inodes)
    finally:
        bed.teardown()
    _assert_gone(prefix, inodes)


def test_host_names_must_fit_interface_names() -> None:
    with pytest.raises(ValueError, match="1-6"):
        NetnsBed(["toolongname"])
    with pytest.raises(ValueError, match="duplicate"):
        NetnsBed(["h1", "h1"])
