"""``python -m bench`` (``make bench``): run the suites, write results.json and BENCHMARKS.md.

    python -m bench                          every suite, both backends (about 10-15 min)
    python -m bench --quick                  smaller counts, for trying it out
    python -m bench --suite floor --suite audit --backend sqlite
    python -m bench --profile bench/profiles py-spy profiles of the nodes under load

Suites run in one process run, so ratios (end to end against the floor,
replay against SHA-256) compare figures taken minutes apart on the same
machine. The end-to-end suite always measures the floor too. A partial run
updates only its own suites in results.json; the machine facts and date are
those of the latest run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from bench import audit_log, e2e, floor, report
from bench.machine import describe

SUITES = ("floor", "e2e", "audit", "idle")
BACKENDS = ("sqlite", "postgresql")
RUNS = tuple(plan.name for plan in e2e.plans(quick=False))
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
DOCUMENT = ROOT / "BENCHMARKS.md"


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", action="append", choices=SUITES, help="repeatable; default all")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="default both")
    parser.add_argument("--quick", action="store_true", help="smaller counts and sizes")
    parser.add_argument(
        "--run", action="append", choices=RUNS, help="e2e runs to make (repeatable; default all)"
    )
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of e2e runs here")
    parser.add_argument("--no-write", action="store_true", help="print, do not write files")
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    suites = args.suite or list(SUITES)
    if "e2e" in suites and "floor" not in suites:
        suites.insert(0, "floor")  # the end-to-end ratio needs the floor of the same run
    backends = args.backend or list(BACKENDS)
    command = "make bench" + (f' ARGS="{shlex.join(sys.argv[1:])}"' if sys.argv[1:] else "")
    postgres = None
    if "postgresql" in backends and set(suites) & {"e2e", "audit", "idle"}:
        from tests.support.postgres import PostgresCluster

        postgres = PostgresCluster(durable=True).start()  # fsync on: commits reach the disk
    results: dict[str, Any] = {}
    if RESULTS.exists() and not args.no_write:
        results = json.loads(RESULTS.read_text(encoding="utf-8"))
    results["machine"] = describe(command, postgres.bindir if postgres else None)
    results["quick"] = args.quick
    dates = results.setdefault("suite_dates", {})
    for suite in suites:
        dates[suite] = results["machine"]["date"]
    try:
        if "floor" in suites:
            _log("floor: seal, open, validate in one process")
            results["floor"] = floor.run(quick=args.quick)
        if "idle" in suites:
            _log("idle: RSS of freshly started nodes")
            _merge(results, "idle", e2e.run_idle(backends=backends, postgres=postgres))
        if "audit" in suites:
            _log("audit: growing the log, proofs, queries, replay")
            audit = audit_log.run(quick=args.quick, backends=backends, postgres=postgres)
            _merge(results, "audit", audit)
        if "e2e" in suites:
            _log("e2e: two serve processes over mutual TLS")
            by_backend = e2e.run(
                quick=args.quick,
                backends=backends,
                postgres=postgres,
                profile_dir=args.profile,
                only=args.run,
            )
            _merge(results, "e2e", by_backend)
            # The floor of this run, kept with the e2e figures it is compared with.
            results["e2e_floor_per_s"] = results["floor"]["return_notice"]["floor_per_s"]
    finally:
        if postgres is not None:
            postgres.stop()
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    generated = report.render(results)
    if args.no_write:
        print(generated)
        return 0
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    existing = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.exists() else ""
    DOCUMENT.write_text(report.splice(existing or _PREAMBLE, generated), encoding="utf-8")
    _log(f"wrote {RESULTS.relative_to(ROOT)} and {DOCUMENT.relative_to(ROOT)}")
    for target in report.targets(results):
        _log(f"{'met ' if target.met else 'MISSED'} {target.name}: {target.measured:,.2f} "
             f"{target.unit} (wanted {target.wanted})")  # fmt: skip
    return 0


_PREAMBLE = "# Benchmarks\n\n"


def _merge(results: dict[str, Any], suite: str, by_backend: dict[str, Any]) -> None:
    """A run of some backends replaces only their figures (``--backend sqlite`` keeps the rest)."""
    results[suite] = results.get(suite, {}) | by_backend


if __name__ == "__main__":
    raise SystemExit(main())
