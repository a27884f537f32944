"""CPU time and memory of a process from /proc (Linux): no extra dependency."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    cpu_s: float  # user + system CPU seconds since the process started
    rss_mb: float  # resident set size now
    peak_rss_mb: float  # the high-water mark of the resident set (VmHWM)


def parse_stat_cpu(stat: str) -> float:
    """User + system seconds from the text of /proc/<pid>/stat."""
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def parse_status_kb(status: str, name: str) -> float:
    """A ``kB`` figure (VmRSS, VmHWM) from the text of /proc/<pid>/status, in MB."""
    for line in status.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(name)


def sample(pid: int) -> Sample:
    proc = Path("/proc") / str(pid)
    status = (proc / "status").read_text()
    return Sample(
        cpu_s=parse_stat_cpu((proc / "stat").read_text()),
        rss_mb=parse_status_kb(status, "VmRSS"),
        peak_rss_mb=parse_status_kb(status, "VmHWM"),
    )


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (PostgreSQL's backends, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live children, plus what its reaped children used.

    /proc/<pid>/stat fields 16-17 (cutime, cstime) hold the CPU of children
    already waited for, so short-lived PostgreSQL backends are counted too.
    """
    stat = (Path("/proc") / str(pid) / "stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    total = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    for child in children(pid):
        try:
            total += sample(child).cpu_s
        except (OSError, KeyError):
            continue  # it ended meanwhile; its time is now in our cutime
    return total
