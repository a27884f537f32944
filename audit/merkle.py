"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proof checks.

Section 2.1.1: the hash of an empty tree is SHA-256 of the empty string, a leaf
is SHA-256(0x00 || entry) and an interior node is SHA-256(0x01 || left ||
right), where the left subtree holds the largest power of two of leaves
smaller than the tree. Sections 2.1.3.2 and 2.1.4.2 give the algorithms that
check an inclusion and a consistency proof; they are followed step by step.

Written from the RFC alone, apart from the node's own code, so that a bug in
one is not silently shared by the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from audit.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry)."""
    return hashlib.sha256(_LEAF + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE + left + right).digest()


class TreeBuilder:
    """Builds the tree head leaf by leaf, in O(log n) memory.

    ``_stack`` holds the roots of the complete subtrees that make up the tree
    so far, largest first (one per set bit of the size).
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[bytes] = []
        self.size = 0

    def add_leaf_hash(self, leaf: bytes) -> None:
        """Append a leaf given by its hash."""
        stack = self._stack
        h = leaf
        n = self.size
        while n & 1:
            h = hashlib.sha256(_NODE + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self.size += 1

    def add_entry(self, entry: bytes) -> bytes:
        """Append an entry; returns its leaf hash."""
        leaf = hashlib.sha256(_LEAF + entry).digest()
        self.add_leaf_hash(leaf)
        return leaf

    def root(self) -> bytes:
        """MTH of the leaves added so far."""
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            h = hashlib.sha256(_NODE + left + h).digest()
        return h


def replay(entries: Iterable[bytes], sizes: Iterable[int] = ()) -> tuple[int, dict[int, bytes]]:
    """Hash every entry into the tree: (count, {size: MTH at that size} for the given sizes).

    The hot loop of the verifier, written flat (local names, no method calls per
    leaf) so that replaying a log costs little more than hashing its bytes.
    """
    sha = hashlib.sha256
    targets = sorted(set(sizes), reverse=True)
    roots: dict[int, bytes] = {}
    if targets and targets[-1] == 0:
        roots[targets.pop()] = EMPTY_ROOT
    target = targets.pop() if targets else -1
    stack: list[bytes] = []
    pop, push = stack.pop, stack.append
    n = 0
    for entry in entries:
        h = sha(b"\x00" + entry).digest()
        k = n
        while k & 1:
            h = sha(b"\x01" + pop() + h).digest()
            k >>= 1
        push(h)
        n += 1
        if n == target:
            root = stack[-1]
            for left in reversed(stack[:-1]):
                root = sha(b"\x01" + left + root).digest()
            roots[n] = root
            target = targets.pop() if targets else -1
    return n, roots


def root_of_leaf_hashes(leaves: Iterable[bytes]) -> bytes:
    """MTH of a sequence of leaf hashes."""
    builder = TreeBuilder()
    for leaf in leaves:
        builder.add_leaf_hash(leaf)
    return builder.root()


def root_of_entries(entries: Iterable[bytes]) -> bytes:
    """MTH(D[n]) of a sequence of entries."""
    builder = TreeBuilder()
    for entry in entries:
        builder.add_entry(entry)
    return builder.root()


def _check_hashes(proof: Sequence[bytes], *hashes: bytes) -> None:
    for h in (*proof, *hashes):
        if len(h) != HASH_SIZE:
            raise VerificationError("bad_hash_length", "every hash must be 32 bytes")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 section 2.1.3.2, steps 1-5)."""
    if not 0 <= index < size:
        raise VerificationError("index_out_of_range", f"leaf {index} is not in a tree of {size}")
    _check_hashes(proof, leaf)
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("proof_too_long", "the inclusion proof has extra hashes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("proof_too_short", "the inclusion proof is missing hashes")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise unless ``proof`` shows ``leaf`` at ``index`` in the tree of ``size`` with ``root``."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise VerificationError("inclusion_proof_mismatch", f"leaf {index} is not in that tree")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise unless ``proof`` shows the tree of ``size1`` is a prefix of the one of ``size2``.

    RFC 9162 section 2.1.4.2; the trivial cases (an empty first tree, equal
    sizes) are those of section 2.1.4.1, where the proof must be empty.
    """
    _check_hashes(proof, root1, root2)
    if not 0 <= size1 <= size2:
        raise VerificationError("sizes_out_of_order", f"{size1} is larger than {size2}")
    if size1 == size2:
        if proof:
            raise VerificationError("proof_too_long", "equal sizes need an empty proof")
        if root1 != root2:
            raise VerificationError("consistency_proof_mismatch", "same size, different roots")
        return
    if size1 == 0:
        if proof:
            raise VerificationError("proof_too_long", "an empty tree needs an empty proof")
        return
    if not proof:
        raise VerificationError("proof_too_short", "the consistency proof is empty")
    path = list(proof)
    # Step 1: if size1 is a power of two, prepend first_hash (root1) to the path.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # Step 2-3.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 4.
    fr = sr = path[0]
    # Step 5.
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("proof_too_long", "the consistency proof has extra hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 6.
    if sn != 0:
        raise VerificationError("proof_too_short", "the consistency proof is missing hashes")
    if fr != root1 or sr != root2:
        raise VerificationError(
            "consistency_proof_mismatch", f"the tree of {size1} is not a prefix of that of {size2}"
        )
