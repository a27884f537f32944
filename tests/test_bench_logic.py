"""The logic of the benchmark harness (bench/): statistics, /proc parsing, targets, splicing.

No timing is asserted here: the benchmarks themselves are ``make bench``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import procstat, report
from bench.profile import summarise
from bench.stats import percentile, summary_ms


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError, match="fraction"):
        percentile(values, 0)


def test_summary_is_in_milliseconds() -> None:
    figures = summary_ms([0.001, 0.002, 0.003, 0.004])
    assert figures["p50_ms"] == pytest.approx(2.0)
    assert figures["max_ms"] == pytest.approx(4.0)
    assert figures["count"] == 4


def test_proc_stat_with_a_command_name_holding_spaces_and_parentheses() -> None:
    ticks = procstat.CLOCK_TICKS
    fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0"]
    stat = f"42 (python -m (x) y) {' '.join(fields)} {3 * ticks} {ticks} 0 0 20 0"
    assert procstat.parse_stat_cpu(stat) == pytest.approx(4.0)


def test_proc_status_figures_are_megabytes() -> None:
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert procstat.parse_status_kb(status, "VmRSS") == 100
    assert procstat.parse_status_kb(status, "VmHWM") == 200
    with pytest.raises(KeyError):
        procstat.parse_status_kb(status, "VmSwap")


def _results(throughput: float, p99: float, floor: float) -> dict[str, Any]:
    run = {
        "throughput_per_s": throughput,
        "latency": {"p99_ms": p99},
    }
    return {
        "floor": {"return_notice": {"floor_per_s": floor}},
        "e2e": {"sqlite": {"runs": {"closed": run, "open_50": run}}},
        "idle": {"sqlite": {"MX": {"rss_mb": 149.0, "peak_rss_mb": 150.0}}},
    }


def test_targets_are_judged_against_the_issue() -> None:
    met = {t.name: t.met for t in report.targets(_results(450, 40, 1000))}
    assert met == {
        "e2e throughput, sqlite": True,
        "e2e / floor, sqlite": True,
        "p99 at 50/s offered, sqlite": True,
        "idle RSS MX, sqlite": True,
    }
    missed = {t.name: t.met for t in report.targets(_results(399, 50, 1200))}
    assert missed["idle RSS MX, sqlite"] is True
    assert missed["e2e throughput, sqlite"] is False
    assert missed["e2e / floor, sqlite"] is False  # 399 / 1200 < 35 %
    assert missed["p99 at 50/s offered, sqlite"] is False  # 50 ms is not under 50 ms


def test_splice_replaces_only_the_generated_section() -> None:
    document = (
        f"# Benchmarks\n\nnotes before\n\n{report.BEGIN}\nold tables\n{report.END}\n\nnotes after\n"
    )
    spliced = report.splice(document, f"{report.BEGIN}\nnew tables\n{report.END}\n")
    assert "old tables" not in spliced and "new tables" in spliced
    assert spliced.startswith("# Benchmarks\n\nnotes before\n\n")
    assert spliced.rstrip().endswith("notes after")
    fresh = report.splice("# Benchmarks\n", f"{report.BEGIN}\nx\n{report.END}\n")
    assert fresh.count(report.BEGIN) == 1


def test_profile_summary_counts_own_and_inclusive_samples() -> None:
    raw = "\n".join(
        [
            "main (node/cli.py:1);handle (node/api/app.py:2);validate (node/schemas.py:3) 30",
            "main (node/cli.py:1);handle (node/api/app.py:2) 10",
            "main (node/cli.py:1);select (selectors.py:451) 60",
        ]
    )
    text = summarise(raw)
    assert text.startswith("100 samples")
    own = text.split("inclusive time:")[0]
    assert "60.0%  (idle: waiting in the event loop)" in own
    assert "30.0%  validate (node/schemas.py)" in own
    inclusive = text.split("inclusive time:")[1]
    assert "100.0%  main (node/cli.py)" in inclusive
    assert "40.0%  handle (api/app.py)" in inclusive
