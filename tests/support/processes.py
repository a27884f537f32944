"""Real ``puente serve`` processes for fault tests: start, kill -9, restart.

Each node runs as ``python -m node.commands serve --dir D`` in its own session, its
output appended to ``D/serve.log``. The test-only hooks (node.core.testhooks) are
passed through the environment: a clock file shared by the nodes, and crash
points that make a process SIGKILL itself at a chosen moment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from node.core.config import load_config
from node.core.testhooks import CLOCK_FILE_ENV, CRASH_AT_ENV, TEST_MODE_ENV
from node.demo.run import wait_for_port


async def puente(*args: str) -> tuple[int, str, str]:
    """Run the ``puente`` CLI as a user would, without blocking the nodes' event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.commands",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return int(process.returncode or 0), out.decode(), err.decode()


def tune_delivery(data_dir: Path, **overrides: Any) -> None:
    """Rewrite a node's ``[delivery]`` settings (faster retries for tests, say)."""
    config = load_config(data_dir)
    delivery = dataclasses.replace(config.delivery, **overrides)
    dataclasses.replace(config, delivery=delivery).save()


def tune_server_limits(data_dir: Path, **overrides: Any) -> None:
    """Rewrite a node's ``[server.limits]`` (the federation port's timeouts, say)."""
    config = load_config(data_dir)
    limits = dataclasses.replace(config.server_limits, **overrides)
    dataclasses.replace(config, server_limits=limits).save()


class NodeProcess:
    """One node as a child process the test can kill and restart."""

    def __init__(self, data_dir: Path, *, clock_file: Path | None = None) -> None:
        self.data_dir = data_dir
        self.clock_file = clock_file
        self.port = load_config(data_dir).port
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *, crash_at: str | None = None, wait: bool = True) -> None:
        """Start the node (optionally planned to SIGKILL itself at a crash point)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        env: dict[str, str] = dict(os.environ)
        env[TEST_MODE_ENV] = "1"
        env.pop(CRASH_AT_ENV, None)
        if crash_at:
            env[CRASH_AT_ENV] = crash_at
        if self.clock_file is not None:
            env[CLOCK_FILE_ENV] = str(self.clock_file)
        log = (self.data_dir / "serve.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.commands", "serve", "--dir", str(self.data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        if wait:
            wait_for_port(self.port, self.process, timeout=60)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """``kill -9``: no shutdown, no flush, no cleanup."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself (a planned crash); its return code."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """A clean stop (SIGTERM), falling back to SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        path = self.data_dir / "serve.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def eventually(
    predicate: Callable[[], Awaitable[bool]], *, what: str, patience: float = 120.0
) -> None:
    """Poll ``predicate`` until it holds; fail (not hang) if it never does.

    ``patience`` only turns a hang into a failure; no test asserts how fast.
    """
    deadline = time.monotonic() + patience
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        await asyncio.sleep(0.1)


def set_clock(clock_file: Path, offset_seconds: float) -> None:
    """Move every node reading ``clock_file`` to real time + ``offset_seconds``."""
    tmp = clock_file.with_suffix(".tmp")
    tmp.write_text(f"{offset_seconds}\n", encoding="ascii")
    tmp.replace(clock_file)
