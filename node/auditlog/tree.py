"""The audit log's RFC 9162 Merkle tree, stored as the hashes of complete subtrees.

A node (level, index) is the hash of leaves [index·2^level, (index+1)·2^level).
Every complete subtree is stored once, when its last leaf is appended, and
never changes. Any range of leaves the RFC's algorithms ask for decomposes into
at most ~2·log2(n) complete subtrees, so the root at any size and every
inclusion or consistency proof is a *plan* (which nodes, computed purely from
the sizes), one database query for those nodes, and a fold — never a
recomputation over all leaves.

The pure part (plans, folds, appending to the right edge) is separate from
the two small database functions at the bottom.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
Node = tuple[int, int]  # (level, index)
Range = tuple[int, int]  # leaves [start, end)


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split_point(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def decompose(start: int, end: int) -> list[Node]:
    """The complete subtrees covering [start, end), left to right.

    Valid for the ranges RFC 9162's recursion produces, whose start is aligned
    to a power of two at least as large as the range's left part.
    """
    nodes: list[Node] = []
    while start < end:
        size = end - start
        level = size.bit_length() - 1
        # The largest power of two that fits in the range and to which start is aligned.
        while start & ((1 << level) - 1):
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its complete subtrees (the right fold RFC 9162 implies)."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes form PATH(index, D[0:size]), in proof order (2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    ranges: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split_point(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The ranges whose hashes form PROOF(old_size, D[0:new_size]) (2.1.4.1)."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    ranges: list[Range] = []
    start, end, m, complete = 0, new_size, old_size, True
    while True:
        if m == end - start:
            if not complete:
                ranges.append((start, end))
            break
        k = _split_point(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, complete = start + k, m - k, False
    ranges.reverse()
    return ranges


def nodes_for(ranges: Iterable[Range]) -> set[Node]:
    return {node for start, end in ranges for node in decompose(start, end)}


def hashes_of(ranges: Iterable[Range], stored: Mapping[Node, bytes]) -> list[bytes]:
    """Each range's MTH from stored complete-subtree hashes."""
    return [fold([stored[node] for node in decompose(start, end)]) for start, end in ranges]


def append_leaf(size: int, frontier: list[bytes], leaf: bytes) -> list[tuple[int, int, bytes]]:
    """Append leaf number ``size``; updates ``frontier`` in place.

    Returns the new complete subtrees (level, index, hash) to store: the leaf
    and every subtree it completes. ``frontier`` holds the hashes of the
    complete subtrees of the tree, largest first (one per set bit of size).
    """
    new = [(0, size, leaf)]
    h, level, index, n = leaf, 0, size, size
    while n & 1:
        h = node_hash(frontier.pop(), h)
        level, index, n = level + 1, index >> 1, n >> 1
        new.append((level, index, h))
    frontier.append(h)
    return new


def pack(frontier: Sequence[bytes]) -> bytes:
    return b"".join(frontier)


def unpack(packed: bytes) -> list[bytes]:
    return [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]


async def fetch_nodes(session: AsyncSession, nodes: Iterable[Node]) -> dict[Node, bytes]:
    """The stored hashes of the given complete subtrees, in one query."""
    wanted = sorted(set(nodes))
    if not wanted:
        return {}
    # (level = ? AND idx = ?) OR ...: both SQLite and PostgreSQL answer it with
    # primary-key lookups (SQLite scans the table for a row-value IN). Plain SQL
    # text: its shape depends only on the number of nodes, so the statement is
    # prepared once per shape, and building it costs nothing next to the lookups.
    terms = " OR ".join(f"(level = :l{i} AND idx = :x{i})" for i in range(len(wanted)))
    params: dict[str, int] = {}
    for i, (level, index) in enumerate(wanted):
        params[f"l{i}"], params[f"x{i}"] = level, index
    rows = await session.execute(
        text(f"SELECT level, idx, hash FROM audit_tree WHERE {terms}"),  # noqa: S608 - no input
        params,
    )
    found = {(level, index): bytes(h) for level, index, h in rows}
    missing = [n for n in wanted if n not in found]
    if missing:
        raise LookupError(f"the audit tree lacks nodes {missing[:3]}")
    return found


async def root_at(session: AsyncSession, size: int) -> bytes:
    """MTH(D[0:size]) from the stored tree."""
    stored = await fetch_nodes(session, decompose(0, size))
    return hashes_of([(0, size)], stored)[0] if size else EMPTY_ROOT


async def inclusion_proof(session: AsyncSession, index: int, size: int) -> list[bytes]:
    """RFC 9162 inclusion path for leaf ``index`` in the tree of ``size``."""
    ranges = inclusion_ranges(index, size)
    return hashes_of(ranges, await fetch_nodes(session, nodes_for(ranges)))


async def consistency_proof(session: AsyncSession, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 consistency path from the tree of ``old_size`` to that of ``new_size``."""
    ranges = consistency_ranges(old_size, new_size)
    return hashes_of(ranges, await fetch_nodes(session, nodes_for(ranges)))
