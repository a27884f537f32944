"""Replay an export's entries file into RFC 9162 tree heads, in one process or several.

The Merkle tree hash of n entries (RFC 9162 section 2.1.1) is built from
*aligned* complete subtrees: 2**h leaves that start at a multiple of 2**h.
Any run of entries [a, b) is covered by at most two aligned subtrees of each
height, and the tree head of the first n entries folds the aligned subtrees
of [0, n) right to left. So the file can be hashed one run of lines at a
time — by this process in file order, or by worker processes over several
runs at once — and the runs' subtree roots combined in file order give
exactly the tree heads of a leaf-by-leaf replay (tests/test_audit_replay.py
checks that against it for many sizes and splits).

Within a run, hashing goes level by level over lists rather than leaf by
leaf through a stack: in CPython the cost of a replay is mostly the
interpreter's per-hash overhead, not SHA-256 itself, and a list
comprehension per level has the least of it.

How a run's subtrees align depends on the index of its first entry. The
parallel replay takes that index from the ``seq`` the entry states (in an
intact log, its index) so that every worker can start at once; each run's
real line count comes back with its hashes, and a run that was placed wrong
(lines deleted, inserted or rewritten) is hashed again from where it really
starts. When the ``seq`` values are not even increasing, the workers count
the lines of every run first. Either way the tree heads are those of the
lines, whatever the entries claim.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from multiprocessing.context import BaseContext
from pathlib import Path

from audit.errors import VerificationError
from audit.merkle import EMPTY_ROOT

NEWLINE = 0x0A

_LEAF_PREFIX = hashlib.sha256(b"\x00")

Piece = tuple[int, bytes]
"""(h, the root of an aligned complete subtree of 2**h leaves)."""


def leaf_level(lines: Sequence[bytes]) -> list[bytes]:
    """The leaf hashes SHA-256(0x00 || entry) of the entries, in order."""
    # Copying a hasher that has taken the 0x00 is cheaper than building
    # 0x00 || entry, a copy of the entry, for each entry.
    leaves: list[bytes] = []
    append = leaves.append
    fresh = _LEAF_PREFIX.copy
    for line in lines:
        hasher = fresh()
        hasher.update(line)
        append(hasher.digest())
    return leaves


def subtree_levels(leaves: list[bytes], first: int) -> list[list[bytes]]:
    """Every aligned complete subtree inside leaves [first, first + len(leaves)), by height.

    ``levels[h][i]`` is the root of the 2**h leaves that start at leaf
    ``(ceil(first / 2**h) + i) * 2**h``; ``levels[0]`` is ``leaves``.
    """
    sha = hashlib.sha256
    levels = [leaves]
    level, start = leaves, first
    while len(level) > 1:
        pairs = iter(level)
        if start & 1:  # the first node's sibling is outside the run
            next(pairs)
        level = [sha(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
        if not level:
            break
        levels.append(level)
        start = (start + 1) >> 1
    return levels


def cover(levels: list[list[bytes]], first: int, lo: int, hi: int) -> list[Piece]:
    """The fewest aligned subtrees that cover leaves [lo, hi), left to right.

    ``levels`` are those of :func:`subtree_levels` for a run starting at
    ``first``, with ``first <= lo <= hi <=`` the run's end.
    """
    left: list[Piece] = []
    right: list[Piece] = []
    height = 0
    while lo < hi:
        base = -(-first >> height)  # ceil(first / 2**height): the index of levels[height][0]
        if lo & 1:
            left.append((height, levels[height][lo - base]))
            lo += 1
        if hi & 1:
            right.append((height, levels[height][hi - 1 - base]))
            hi -= 1
        lo >>= 1
        hi >>= 1
        height += 1
    right.reverse()
    return left + right


def hash_run(
    lines: Sequence[bytes], first: int, ends: Iterable[int] = ()
) -> tuple[list[Piece], dict[int, list[Piece]]]:
    """Hash the entries [first, first + len(lines)).

    Returns the aligned subtrees that cover the run and, for each ``end`` in
    ``ends`` (``first < end <= first + len(lines)``), those that cover
    [first, end): what a tree head at size ``end`` needs from this run.
    """
    levels = subtree_levels(leaf_level(lines), first)
    last = first + len(lines)
    prefixes = {end: cover(levels, first, first, end) for end in ends}
    return cover(levels, first, first, last), prefixes


@dataclass
class Frontier:
    """The aligned subtrees that make up leaves [start, start + size), merged where they can be.

    From ``start`` 0 there is one per set bit of ``size``, largest first: the
    stack of RFC 9162's iterative tree hash, whose fold is the tree head.
    """

    start: int = 0
    size: int = 0
    stack: list[Piece] = field(default_factory=list)

    def push(self, pieces: Iterable[Piece]) -> None:
        """Append the subtrees that cover the next leaves, in order."""
        sha = hashlib.sha256
        stack = self.stack
        for height, node in pieces:
            at = self.start + self.size  # a multiple of the subtree's own size
            self.size += 1 << height
            # It is the right sibling of the top of the stack when both are as
            # tall and it lands at an odd multiple of its size.
            while stack and stack[-1][0] == height and (at >> height) & 1:
                node = sha(b"\x01" + stack.pop()[1] + node).digest()
                at -= 1 << height
                height += 1
            stack.append((height, node))

    def root(self) -> bytes:
        """MTH of the first ``size`` leaves (of a frontier that starts at leaf 0)."""
        if self.start:
            raise ValueError("only a frontier from leaf 0 has a tree head")
        if not self.stack:
            return EMPTY_ROOT
        sha = hashlib.sha256
        node = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            node = sha(b"\x01" + left + node).digest()
        return node

    def root_with(self, pieces: Iterable[Piece]) -> bytes:
        """MTH of these leaves followed by ``pieces``; the frontier itself is unchanged."""
        extended = Frontier(self.start, self.size, list(self.stack))
        extended.push(pieces)
        return extended.root()


@dataclass(frozen=True)
class Split:
    """How the entries file is divided up; the defaults suit logs of millions of entries."""

    # Bytes in one worker's task: about 9,000 entries of a busy node's log,
    # so a log of a million makes some 120 tasks and the workers finish
    # within a task of each other.
    run_bytes: int = 4 << 20
    # Bytes read and split at once: a block this small stays in the CPU's
    # cache and reuses the same memory (reads of 32 MB each map fresh pages
    # from the kernel, which costs more than hashing them).
    block_bytes: int = 1 << 20
    # The least share of the file worth a worker process: about 70,000
    # entries, some 80 ms of hashing, against up to 35 ms to start a worker
    # (a fork server's worker imports this module and OpenSSL afresh).
    worker_bytes: int = 32 << 20


DEFAULT_SPLIT = Split()


@dataclass(frozen=True)
class Replayed:
    """What a replay found: how many entries the file holds, tree heads, processes used."""

    count: int
    roots: dict[int, bytes]
    workers: int


@dataclass(frozen=True)
class _Run:
    """Whole lines of the file: ``length`` bytes from ``offset``.

    ``claimed`` is the ``seq`` its first entry states, if it states one: in an
    intact log, that entry's index, so where the run's subtrees align.
    """

    offset: int
    length: int
    claimed: int | None = None


def _claimed_seq(line: bytes) -> int | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    seq = entry.get("seq") if isinstance(entry, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None


def line_runs(path: Path, run_bytes: int) -> list[_Run]:
    """Split the file into runs of about ``run_bytes``, each ending just after a newline.

    Only the last run can end without one (a last line with no newline is
    still an entry, as it is to every other reader of the file).
    """
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        starts = [0]
        claims: list[int | None] = [0]
        while starts[-1] + run_bytes < size:
            handle.seek(starts[-1] + run_bytes - 1)
            handle.readline()  # to the end of the line that the cut falls in
            if handle.tell() >= size:
                break
            starts.append(handle.tell())
            claims.append(_claimed_seq(handle.readline()))
    ends = [*starts[1:], size]
    bounds = zip(starts, ends, claims, strict=True)
    return [_Run(start, end - start, claim) for start, end, claim in bounds if end > start]


def _line_blocks(path: Path, run: _Run, block_bytes: int) -> Iterator[list[bytes]]:
    """The run's lines without their newlines, a block of them at a time."""
    with path.open("rb") as handle:
        handle.seek(run.offset)
        left = run.length
        rest = b""
        while left > 0:
            chunk = handle.read(min(block_bytes, left))
            if not chunk:
                raise VerificationError("export_changed", "the entries file shrank as it was read")
            left -= len(chunk)
            lines = chunk.split(b"\n")
            lines[0] = rest + lines[0]
            rest = lines.pop()
            yield lines
        if rest:
            yield [rest]  # a last line without a newline


def _count_lines(path: Path, run: _Run, block_bytes: int) -> int:
    """The number of entries in the run, as :func:`_line_blocks` would yield them."""
    buffer = bytearray(block_bytes)
    view = memoryview(buffer)
    count = 0
    last = NEWLINE
    with path.open("rb", buffering=0) as handle:
        handle.seek(run.offset)
        left = run.length
        while left > 0:
            read = handle.readinto(view[: min(block_bytes, left)])
            if not read:
                raise VerificationError("export_changed", "the entries file shrank as it was read")
            count += buffer.count(NEWLINE, 0, read)
            last = buffer[read - 1]
            left -= read
    return count + (last != NEWLINE)


def _hash_file_run(
    path: Path, run: _Run, first: int, limit: int, ends: list[int], block_bytes: int
) -> tuple[int, list[Piece], dict[int, list[Piece]]]:
    """Hash the run's entries, the first being entry ``first``, up to entry ``limit``.

    Returns the run's entry count, the aligned subtrees that cover its hashed
    entries and, for each ``end`` in ``ends``, those that cover [first, end).
    (A worker's task; the sequential replay calls it too.)
    """
    hashed_so_far = Frontier(start=first)
    prefixes: dict[int, list[Piece]] = {}
    index = first
    for lines in _line_blocks(path, run, block_bytes):
        hashed = max(0, min(len(lines), limit - index))
        if hashed:
            block_ends = [end for end in ends if index < end <= index + hashed]
            block, block_prefixes = hash_run(
                lines if hashed == len(lines) else lines[:hashed], index, block_ends
            )
            for end, prefix in block_prefixes.items():
                prefixes[end] = [*hashed_so_far.stack, *prefix]
            hashed_so_far.push(block)
        index += len(lines)
    return index - first, hashed_so_far.stack, prefixes


class _Heads:
    """Collects the tree heads asked for as the runs are folded in, in file order."""

    def __init__(self, sizes: Iterable[int]) -> None:
        self.wanted = sorted({s for s in sizes if s >= 0})
        self.limit = max(self.wanted, default=0)  # no entry after this one needs hashing
        self.frontier = Frontier()
        self.roots: dict[int, bytes] = {0: EMPTY_ROOT} if 0 in self.wanted else {}

    def ends_in(self, first: int, count: int) -> list[int]:
        """The sizes asked for that end within entries (first, first + count]."""
        return [s for s in self.wanted if first < s <= first + count]

    def fold(self, first: int, pieces: list[Piece], prefixes: dict[int, list[Piece]]) -> None:
        """Take in the subtrees of the next run, which starts at entry ``first``."""
        if self.frontier.size != first:  # a bug, never the file's doing
            raise RuntimeError(f"runs folded out of order: at {self.frontier.size}, not {first}")
        for end, prefix in prefixes.items():
            self.roots[end] = self.frontier.root_with(prefix)
        self.frontier.push(pieces)


def _sequential(path: Path, runs: list[_Run], heads: _Heads, block_bytes: int) -> int:
    count = 0
    for run in runs:
        if count >= heads.limit:  # past every size asked for: only count
            count += _count_lines(path, run, block_bytes)
            continue
        ends = heads.ends_in(count, heads.limit - count)
        lines, pieces, prefixes = _hash_file_run(path, run, count, heads.limit, ends, block_bytes)
        heads.fold(count, pieces, prefixes)
        count += lines
    return count


def _start_method() -> BaseContext:
    # Forking is the cheapest start (a few ms) and safe in a process with one
    # thread, such as the command line; a process with threads (a node, the
    # bench) forks its workers from a clean server process instead.
    methods = multiprocessing.get_all_start_methods()
    if threading.active_count() == 1 and "fork" in methods:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _likely_firsts(runs: list[_Run]) -> list[int] | None:
    """Where each run starts by its first entry's ``seq``, if those are plausible."""
    claims = [run.claimed for run in runs]
    known = [claim for claim in claims if claim is not None]
    if len(known) < len(claims) or any(b <= a for a, b in pairwise(known)):
        return None
    return known


@dataclass(frozen=True)
class _Hashing:
    """A run being hashed by a worker, from entry ``first``, with the tree heads it ends."""

    first: int
    ends: list[int]
    result: Future[tuple[int, list[Piece], dict[int, list[Piece]]]]


def _hash_in_pool(
    pool: ProcessPoolExecutor,
    path: Path,
    run: _Run,
    first: int,
    next_first: int | None,
    heads: _Heads,
    block_bytes: int,
) -> _Hashing:
    ends = heads.ends_in(first, (heads.limit if next_first is None else next_first) - first)
    task = pool.submit(_hash_file_run, path, run, first, heads.limit, ends, block_bytes)
    return _Hashing(first, ends, task)


def _parallel(
    path: Path, runs: list[_Run], heads: _Heads, pool: ProcessPoolExecutor, block_bytes: int
) -> int:
    # A run's subtrees align by the index of its first entry. An intact log
    # states it in each entry's ``seq``; only when those are implausible are
    # the lines counted first. Either way every run's real line count comes
    # back with its hashes, and a run hashed from a wrong start is hashed again.
    firsts = _likely_firsts(runs)
    if firsts is None:
        counted = pool.map(_count_lines, [path] * len(runs), runs, [block_bytes] * len(runs))
        firsts = list(accumulate(counted, initial=0))[:-1]
    hashing = {
        index: _hash_in_pool(pool, path, run, first, next_first, heads, block_bytes)
        for index, (run, first, next_first) in enumerate(
            zip(runs, firsts, [*firsts[1:], None], strict=True)
        )
        if first < heads.limit
    }
    counting = {
        index: pool.submit(_count_lines, path, run, block_bytes)
        for index, run in enumerate(runs)
        if index not in hashing
    }
    counts = [
        hashing[index].result.result()[0] if index in hashing else counting[index].result()
        for index in range(len(runs))
    ]
    starts = list(accumulate(counts, initial=0))
    needed = [index for index in range(len(runs)) if starts[index] < heads.limit]
    for index in needed:
        task = hashing.get(index)
        ends = heads.ends_in(starts[index], counts[index])
        if task is None or task.first != starts[index] or not set(ends) <= set(task.ends):
            hashing[index] = _hash_in_pool(
                pool, path, runs[index], starts[index], starts[index + 1], heads, block_bytes
            )
    for index in needed:  # in file order
        lines, pieces, prefixes = hashing[index].result.result()
        if lines != counts[index]:
            raise VerificationError("export_changed", "the entries file changed as it was read")
        heads.fold(starts[index], pieces, prefixes)
    return starts[-1]


def replay_file(
    path: Path, sizes: Iterable[int], *, jobs: int = 1, split: Split = DEFAULT_SPLIT
) -> Replayed:
    """Replay the entries file (one entry a line): its entry count and MTH at each size.

    A size larger than the file's entry count gets no root. With ``jobs`` > 1,
    up to ``jobs`` worker processes hash runs of the file, one per
    ``split.worker_bytes`` of it; the result is the same as in one process.
    Raises OSError if the file cannot be read, VerificationError
    ``export_changed`` if it changes while it is read.
    """
    heads = _Heads(sizes)
    runs = line_runs(path, split.run_bytes)
    size = sum(run.length for run in runs)
    workers = min(jobs, len(runs), size // split.worker_bytes)
    if workers > 1:
        try:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=_start_method())
        except (OSError, NotImplementedError):
            pass  # no worker processes on this system: replay in this one
        else:
            try:
                count = _parallel(path, runs, heads, pool, split.block_bytes)
                return Replayed(count, heads.roots, workers)
            except BrokenProcessPool:
                heads = _Heads(sizes)  # a worker died (out of memory?): replay in this process
            finally:
                pool.shutdown(cancel_futures=True)
    return Replayed(_sequential(path, runs, heads, split.block_bytes), heads.roots, 1)
