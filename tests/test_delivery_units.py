"""The pure parts of delivery: backoff, Retry-After, token buckets, test-hook parsing."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core.clock import utcnow
from node.core.config import DeliveryConfig
from node.core.errors import ConfigError
from node.core.ratelimit import TokenBucket
from node.core.testhooks import (
    CLOCK_FILE_ENV,
    CRASH_AT_ENV,
    TEST_MODE_ENV,
    FileClock,
    from_environment,
    parse_crash_plan,
)
from node.delivery.backoff import parse_retry_after, retry_delay

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@given(failures=st.integers(min_value=0, max_value=10_000), seed=st.integers())
def test_backoff_is_jittered_within_half_to_full_and_capped(failures: int, seed: int) -> None:
    delay = retry_delay(failures, base=1.0, ceiling=300.0, rng=random.Random(seed))
    top = min(300.0, 2.0 ** min(max(failures, 1) - 1, 62))
    assert top / 2 <= delay <= top
    assert delay <= 300.0


def test_backoff_grows_until_the_ceiling() -> None:
    tops = [retry_delay(n, base=1.0, ceiling=60.0, rng=random.Random(0)) for n in range(1, 12)]
    assert tops[0] <= 1.0 < tops[3]
    assert all(d <= 60.0 for d in tops) and tops[-1] >= 30.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Mon, 23 Nov 2026 12:00:30 GMT", 30.0),
        ("Mon, 23 Nov 2026 11:00:00 GMT", 0.0),  # in the past: go now
        ("soon", None),
        ("-3", None),
        ("1.5", None),  # RFC 9110 delta-seconds are whole numbers
    ],
)
def test_retry_after_accepts_delta_seconds_and_http_dates(
    header: str | None, expected: float | None
) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket.full(rate=10.0, burst=3, now=0.0)
    assert [bucket.try_take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take(0.0) == pytest.approx(0.1)
    assert bucket.try_take(0.1) == 0.0  # one token came back
    assert bucket.try_take(0.1) > 0.0


def test_token_bucket_reserve_paces_requests_at_the_rate() -> None:
    bucket = TokenBucket.full(rate=100.0, burst=1, now=0.0)
    waits = [bucket.reserve(0.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])


def test_token_bucket_never_saves_more_than_the_burst() -> None:
    bucket = TokenBucket.full(rate=1000.0, burst=2, now=0.0)
    bucket.try_take(0.0)
    bucket.try_take(0.0)
    assert [bucket.try_take(3600.0) for _ in range(3)][-1] > 0.0


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_in_flight": 0},
        {"batch_size": 0},
        {"inbound_max_concurrent_per_peer": 0},
        {"send_rate_per_peer": 0.0},
        {"retry_base": -1.0},
    ],
)
def test_delivery_config_refuses_limits_that_would_stall(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        DeliveryConfig(**overrides)  # type: ignore[arg-type]


def test_crash_plan_is_parsed_and_checked() -> None:
    assert parse_crash_plan("sender.before_post:3, recipient.stored:1") == {
        "sender.before_post": 3,
        "recipient.stored": 1,
    }
    for bad in ("nowhere:1", "sender.before_post", "sender.before_post:0", "recipient.stored:x"):
        with pytest.raises(ConfigError) as refused:
            parse_crash_plan(bad)
        assert refused.value.reason == "bad_crash_point"


def test_test_hooks_are_refused_outside_test_mode(tmp_path: Path) -> None:
    for env in ({CRASH_AT_ENV: "recipient.stored:1"}, {CLOCK_FILE_ENV: str(tmp_path / "c")}):
        with pytest.raises(ConfigError) as refused:
            from_environment(env)
        assert refused.value.reason == "test_hooks_refused"
    clock, crash_points = from_environment({})
    assert clock is utcnow and not crash_points.plan


def test_file_clock_follows_the_offset_file(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    clock, crash_points = from_environment({TEST_MODE_ENV: "1", CLOCK_FILE_ENV: str(path)})
    assert isinstance(clock, FileClock) and not crash_points.plan
    assert abs((clock() - utcnow()).total_seconds()) < 60  # no file yet: real time
    path.write_text("36000")
    assert 35_900 < (clock() - utcnow()).total_seconds() < 36_100
    path.write_text("not a number")
    with pytest.raises(ConfigError) as refused:
        clock()
    assert refused.value.reason == "bad_test_clock"


def test_serve_refuses_test_hooks_without_test_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != TEST_MODE_ENV}
    env[CRASH_AT_ENV] = "recipient.stored:1"
    result = subprocess.run(
        [sys.executable, "-m", "node.commands", "serve", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "puente: test_hooks_refused:" in result.stderr and "Traceback" not in result.stderr
