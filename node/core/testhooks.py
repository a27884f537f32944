"""Test-only hooks for fault tests of real node processes: a movable clock and crash points.

NOT for production. Both hooks are off unless ``PUENTE_TEST_MODE=1`` is set
as well; a node asked for a hook without it refuses to start
(``test_hooks_refused``), so a stray variable cannot change a real node.

- ``PUENTE_TEST_CLOCK_FILE=<path>``: the node's clock is the real time plus
  the number of seconds written in that file (a float; a missing or empty file
  means 0). Tests move a node through hours of outage without waiting.
- ``PUENTE_TEST_CRASH_AT=<point>:<n>[,<point>:<n>...]``: the process kills
  itself with SIGKILL (as ``kill -9`` would: nothing is flushed or cleaned up)
  the n-th time it reaches the named point. The points are listed in
  ``CRASH_POINTS``; the code calls :meth:`CrashPoints.reached` at each.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from node.core.clock import Clock, utcnow
from node.core.errors import ConfigError

TEST_MODE_ENV = "PUENTE_TEST_MODE"
CLOCK_FILE_ENV = "PUENTE_TEST_CLOCK_FILE"
CRASH_AT_ENV = "PUENTE_TEST_CRASH_AT"

CRASH_POINTS = frozenset(
    {
        # sender (node.delivery.peer_queue)
        "sender.before_post",  # a disclosure is marked sending, its request is about to go
        "sender.receipt_verified",  # a receipt is verified, not yet stored
        "sender.outcome_uncommitted",  # outcomes written inside the open transaction
        # recipient (node.intake.receive)
        "recipient.store_uncommitted",  # envelope and audit entry written, not committed
        "recipient.stored",  # committed, the receipt not yet answered
    }
)


@dataclass
class CrashPoints:
    """Where a test asked this process to die. Empty (the default) does nothing."""

    plan: Mapping[str, int] = field(default_factory=dict)
    _hits: Counter[str] = field(default_factory=Counter)

    def reached(self, point: str) -> None:
        """Count one pass through ``point``; SIGKILL this process on the planned pass."""
        if not self.plan:
            return
        self._hits[point] += 1
        if self._hits[point] == self.plan.get(point):
            os.kill(os.getpid(), signal.SIGKILL)


class FileClock:
    """Real time plus an offset in seconds read from a file (re-read when it changes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._stamp = stamp
            self._offset = dt.timedelta(seconds=_read_offset(self.path))
        return utcnow() + self._offset


def _read_offset(path: Path) -> float:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0.0
    try:
        return float(text) if text else 0.0
    except ValueError as exc:
        raise ConfigError("bad_test_clock", f"{path}: not a number of seconds") from exc


def parse_crash_plan(text: str) -> dict[str, int]:
    """``point:n,point:n`` → {point: n}; refuses unknown points and bad counts."""
    plan: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, _, count = item.rpartition(":")
        if point not in CRASH_POINTS or not count.isdigit() or int(count) < 1:
            raise ConfigError("bad_crash_point", f"{item!r}: use POINT:N with a known point")
        plan[point] = int(count)
    return plan


def from_environment(env: Mapping[str, str]) -> tuple[Clock, CrashPoints]:
    """The clock and crash points a node process should use; production gets the defaults."""
    clock_file = env.get(CLOCK_FILE_ENV)
    crash_at = env.get(CRASH_AT_ENV)
    if not clock_file and not crash_at:
        return utcnow, CrashPoints()
    if env.get(TEST_MODE_ENV) != "1":
        raise ConfigError(
            "test_hooks_refused",
            f"{CLOCK_FILE_ENV} and {CRASH_AT_ENV} are for tests; set {TEST_MODE_ENV}=1 to use them",
        )
    clock: Clock = FileClock(Path(clock_file)) if clock_file else utcnow
    return clock, CrashPoints(parse_crash_plan(crash_at or ""))
