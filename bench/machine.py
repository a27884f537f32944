"""What the benchmarks ran on: cores, CPU model, memory, Python, libraries, date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = (
    "aiohttp",
    "cryptography",
    "joserfc",
    "jsonschema",
    "jsonschema-rs",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _postgres_version(bindir: Path | None) -> str | None:
    if bindir is None:
        return None
    result = subprocess.run(  # noqa: S603 - the server binary the bench starts anyway
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None


def describe(command: str, postgres_bindir: Path | None = None) -> dict[str, Any]:
    """The facts that make a figure mean something, measured now."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "command": command,
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average_at_start": _load(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "postgresql": _postgres_version(postgres_bindir),
        "libraries": {name: metadata.version(name) for name in LIBRARIES},
    }
