"""RFC 9162 tree hashing and proofs: published vectors, pymerkle, Go's sumdb/tlog, both backends.

The node builds the tree and its proofs (node.auditlog.tree, from stored
subtree hashes); the independent verifier (audit.merkle) checks them. Each is
held against published test vectors and against implementations nobody here
wrote, so a mistake shared by both would still be caught.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from audit.errors import VerificationError
from audit.merkle import (
    EMPTY_ROOT,
    TreeBuilder,
    replay,
    root_of_entries,
    verify_consistency,
    verify_inclusion,
)
from node.auditlog import entries as audit
from node.auditlog import tree as audit_tree
from node.core.canonical import canonical_json
from node.storage.engine import create_engine, session_factory
from node.storage.migrate import upgrade_to_head

# RFC 6962 / certificate-transparency test data, as published with
# transparency-dev/merkle (proof/verify_test.go) and the original CT code.
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, path)
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
# (old size, new size, path)
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip


def in_memory_tree(entries: list[bytes]) -> tuple[dict[audit_tree.Node, bytes], list[bytes]]:
    """The node's tree for ``entries``: stored subtree hashes and the root at every size."""
    stored: dict[audit_tree.Node, bytes] = {}
    frontier: list[bytes] = []
    roots = [audit_tree.EMPTY_ROOT]
    for size, entry in enumerate(entries):
        for level, index, h in audit_tree.append_leaf(size, frontier, audit_tree.leaf_hash(entry)):
            stored[level, index] = h
        roots.append(audit_tree.fold(frontier))
    return stored, roots


def test_published_roots_and_empty_tree() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    _, node_roots = in_memory_tree(LEAVES)
    for n, expected in enumerate(ROOTS, start=1):
        assert root_of_entries(LEAVES[:n]).hex() == expected
        assert node_roots[n].hex() == expected


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    stored, roots = in_memory_tree(LEAVES)
    produced = audit_tree.hashes_of(audit_tree.inclusion_ranges(index, size), stored)
    assert [h.hex() for h in produced] == path
    leaf = audit_tree.leaf_hash(LEAVES[index])
    verify_inclusion(index, size, leaf, [bytes.fromhex(h) for h in path], roots[size])
    with pytest.raises(VerificationError):
        verify_inclusion(
            (index + 1) % size, size, leaf, [bytes.fromhex(h) for h in path], roots[size]
        )


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_published_consistency_proofs(old: int, new: int, path: list[str]) -> None:
    stored, roots = in_memory_tree(LEAVES)
    produced = audit_tree.hashes_of(audit_tree.consistency_ranges(old, new), stored)
    assert [h.hex() for h in produced] == path
    proof = [bytes.fromhex(h) for h in path]
    verify_consistency(old, new, proof, roots[old], roots[new])
    with pytest.raises(VerificationError):
        verify_consistency(old, new, proof, roots[new], roots[old])
    with pytest.raises(VerificationError):
        verify_consistency(old, new, proof[:-1], roots[old], roots[new])


def test_roots_agree_with_pymerkle_on_many_sizes() -> None:
    rng = random.Random(9162)
    entries = [rng.randbytes(rng.randrange(0, 300)) for _ in range(1100)]
    reference = InmemoryTree(algorithm="sha256")
    _, node_roots = in_memory_tree(entries)
    builder = TreeBuilder()
    for size, entry in enumerate(entries, start=1):
        reference.append_entry(entry)
        builder.add_entry(entry)
        expected = reference.get_root()
        assert node_roots[size] == expected, size
        assert builder.root() == expected, size
    sizes = [0, 1, 2, 3, 64, 65, 511, 1000, 1100]
    count, roots = replay(entries, sizes)
    assert count == 1100 and roots == {s: node_roots[s] for s in sizes}


def test_every_proof_verifies_and_any_change_fails_up_to_40_leaves() -> None:
    entries = [f"entry-{i}".encode() for i in range(40)]
    stored, roots = in_memory_tree(entries)
    leaves = [audit_tree.leaf_hash(e) for e in entries]
    for size in range(1, 41):
        for index in range(size):
            proof = audit_tree.hashes_of(audit_tree.inclusion_ranges(index, size), stored)
            verify_inclusion(index, size, leaves[index], proof, roots[size])
            for bad in _corrupted(proof):
                with pytest.raises(VerificationError):
                    verify_inclusion(index, size, leaves[index], bad, roots[size])
        for old in range(size + 1):
            proof = audit_tree.hashes_of(audit_tree.consistency_ranges(old, size), stored)
            verify_consistency(old, size, proof, roots[old], roots[size])
            if 0 < old < size:
                for bad in _corrupted(proof):
                    with pytest.raises(VerificationError):
                        verify_consistency(old, size, bad, roots[old], roots[size])


def _corrupted(proof: list[bytes]) -> list[list[bytes]]:
    variants = [[*proof, bytes(32)], [bytes(32), *proof]]
    if proof:
        variants.append(proof[:-1])
        for i in range(len(proof)):
            flipped = bytearray(proof[i])
            flipped[0] ^= 1
            variants.append([*proof[:i], bytes(flipped), *proof[i + 1 :]])
    return variants


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 5000), data=st.data())
def test_proofs_at_random_sizes(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(0, size))
    entries = [i.to_bytes(4, "big") for i in range(size)]
    stored, roots = in_memory_tree(entries)
    proof = audit_tree.hashes_of(audit_tree.inclusion_ranges(index, size), stored)
    verify_inclusion(index, size, audit_tree.leaf_hash(entries[index]), proof, roots[size])
    cproof = audit_tree.hashes_of(audit_tree.consistency_ranges(old, size), stored)
    verify_consistency(old, size, cproof, roots[old], roots[size])
    assert len(audit_tree.nodes_for(audit_tree.inclusion_ranges(index, size))) <= 2 * 13 + 2


async def test_stored_tree_gives_the_same_roots_and_proofs(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        await upgrade_to_head(engine)
        now = dt.datetime.now(dt.UTC)
        async with sessions.begin() as session:
            seqs = await audit.append_many(
                session,
                node="MX",
                events=[
                    audit.AuditEvent(event="test.event", at=now, details={"n": i})
                    for i in range(37)
                ],
            )
        assert seqs == list(range(37))
        async with sessions() as session:
            entries = [r.entry.encode() for r in await audit.entries(session)]
        _, roots = in_memory_tree(entries)
        async with sessions() as session:
            for size in (1, 2, 5, 16, 17, 31, 37):
                assert await audit_tree.root_at(session, size) == roots[size]
                for index in (0, size // 2, size - 1):
                    proof = await audit_tree.inclusion_proof(session, index, size)
                    verify_inclusion(
                        index, size, audit_tree.leaf_hash(entries[index]), proof, roots[size]
                    )
                for old in (0, 1, size // 3, size):
                    proof = await audit_tree.consistency_proof(session, old, size)
                    verify_consistency(old, size, proof, roots[old], roots[size])
            assert await audit.first_damaged_entry(session) is None
    finally:
        await engine.dispose()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.text(), _JSON, max_size=8))
def test_entry_json_is_rfc8785(body: dict[str, object]) -> None:
    """The fast path for entries gives the rfc8785 library's bytes, or defers to it."""
    try:
        expected = canonical_json(body).decode("utf-8")
    except Exception:  # values RFC 8785 cannot represent (lone surrogates)
        return
    assert audit.entry_json(body) == expected
