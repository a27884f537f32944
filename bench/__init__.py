"""Benchmarks (``make bench``): how fast, how far from the limit, how cost grows.

Not part of ``make test``. Each suite returns plain figures; ``python -m bench``
runs them in one process run (so ratios compare like with like on a shared,
noisy machine) and writes ``bench/results.json`` and the tables of
``BENCHMARKS.md``.
"""
