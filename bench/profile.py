"""Sampling profiles of the node processes under load (py-spy), summarised as text.

``python -m bench --profile DIR`` records each node process during each
end-to-end run with py-spy (raw collapsed stacks, no pause of the process)
and writes the functions that take the most samples, by own time and by
inclusive time, beside the raw files. That is what BENCHMARKS.md cites when
it says what limits a figure.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

TOP = 25


class Recorder:
    """py-spy recording one process until stopped."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.process = subprocess.Popen(  # noqa: S603 - the dev dependency py-spy
            [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
             "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.out.exists():
            self.out.with_suffix(".top.txt").write_text(summarise(self.out.read_text()))


def _frame_name(frame: str) -> str:
    # py-spy raw frames read "function (path/to/file.py:line)"; keep function and file.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})"


def summarise(raw: str, top: int = TOP) -> str:
    """Own-time and inclusive-time tables from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        idle = any(
            marker in frames[-1] for marker in ("select (selectors", "epoll", "poll (selectors")
        )
        own["(idle: waiting in the event loop)" if idle else frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
