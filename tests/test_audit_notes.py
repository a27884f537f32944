"""C2SP signed notes, checkpoints and cosignatures, checked by Go's golang.org/x/mod/sumdb.

Go's sumdb/note is the reference implementation of C2SP signed notes and
sumdb/tlog of RFC 6962 trees; tests/support/goc2sp_go wraps them. Everything the
node signs or proves must pass there, not only in our own verifier.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.errors import VerificationError
from audit.note import (
    Checkpoint,
    VerifierKey,
    open_checkpoint,
    parse_checkpoint,
    parse_note,
    verify_cosignatures,
    verify_note,
)
from node.auditlog import tree as audit_tree
from node.trust.note_signing import cosignature_line, sign_checkpoint, verifier_key
from tests.support import goc2sp

# The example key and note of golang.org/x/mod/sumdb/note (note/example_test.go).
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ORIGIN = "puente.int/audit/MX/0a1b2c3d"


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return goc2sp.build(tmp_path_factory.mktemp("goc2sp"))


def test_our_verifier_accepts_the_go_reference_note() -> None:
    key = VerifierKey.parse(GO_VKEY)
    assert verify_note(parse_note(GO_NOTE), [key]) == [key]
    tampered = GO_NOTE.replace("problem,", "problem;")
    with pytest.raises(VerificationError) as refused:
        verify_note(parse_note(tampered), [key])
    assert refused.value.reason == "bad_signature"


def test_go_verifies_our_signed_checkpoint(go: Path, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    root = audit_tree.fold([audit_tree.leaf_hash(b"x")])
    note = sign_checkpoint(Checkpoint(ORIGIN, 1, root), key)
    (tmp_path / "vkey").write_text(verifier_key(ORIGIN, key))
    (tmp_path / "note").write_text(note)
    result = goc2sp.run(go, "note", tmp_path / "vkey", tmp_path / "note")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{ORIGIN}\n1\n{base64.b64encode(root).decode()}\n"
    (tmp_path / "note").write_text(note.replace("\n1\n", "\n2\n"))
    assert goc2sp.run(go, "note", tmp_path / "vkey", tmp_path / "note").returncode == 1
    other = Ed25519PrivateKey.generate()
    (tmp_path / "vkey").write_text(verifier_key(ORIGIN, other))
    (tmp_path / "note").write_text(note)
    assert goc2sp.run(go, "note", tmp_path / "vkey", tmp_path / "note").returncode == 1


def test_go_accepts_our_verifier_key_and_ignores_cosignatures(go: Path, tmp_path: Path) -> None:
    """A cosigned checkpoint is still a valid note for a client that knows only the log key."""
    log_key, witness_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    note = sign_checkpoint(Checkpoint(ORIGIN, 0, audit_tree.EMPTY_ROOT), log_key)
    text = parse_note(note).text
    cosigned = note + cosignature_line(text, "puente.int/witness/GT/1", witness_key, 1_700_000_000)
    (tmp_path / "vkey").write_text(verifier_key(ORIGIN, log_key))
    (tmp_path / "note").write_text(cosigned)
    result = goc2sp.run(go, "note", tmp_path / "vkey", tmp_path / "note")
    assert result.returncode == 0, result.stderr


def test_cosignature_round_trip_and_refusals() -> None:
    log_key, witness_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    name = "puente.int/witness/GT/0a1b2c3d"
    note = sign_checkpoint(Checkpoint(ORIGIN, 5, bytes(range(32))), log_key)
    text = parse_note(note).text
    line = cosignature_line(text, name, witness_key, 1_700_000_123)
    witness = VerifierKey.parse(verifier_key(name, witness_key, sig_type=0x04))
    found = verify_cosignatures(parse_note(note + line), [witness])
    assert [(c.cosigner, c.timestamp) for c in found] == [(name, 1_700_000_123)]
    # A cosignature over another checkpoint does not verify.
    other = sign_checkpoint(Checkpoint(ORIGIN, 6, bytes(range(32))), log_key)
    with pytest.raises(VerificationError) as refused:
        verify_cosignatures(parse_note(other + line), [witness])
    assert refused.value.reason == "bad_cosignature"
    # The witness key is not a checkpoint key: type 0x04 never verifies a plain note.
    with pytest.raises(VerificationError) as refused:
        verify_note(parse_note(note + line), [witness])
    assert refused.value.reason == "no_trusted_signature"
    log_vkey = VerifierKey.parse(verifier_key(ORIGIN, log_key))
    opened = open_checkpoint(note + line, log_vkey, [witness])
    assert opened.checkpoint.size == 5 and len(opened.cosignatures) == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("origin\n5\n", "malformed_checkpoint"),
        ("origin\n05\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", "malformed_checkpoint"),
        ("origin\n5\nAAAA\n", "malformed_checkpoint"),
        ("\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", "malformed_checkpoint"),
        ("origin\n5\nnot base64!\n", "bad_base64"),
    ],
)
def test_malformed_checkpoints_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(VerificationError) as refused:
        parse_checkpoint(text)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"no signatures\n", "malformed_note"),
        (b"text\n\nnot a signature line\n", "malformed_note"),
        (b"text\x01\n\n\xe2\x80\x94 name AAAAAAA=\n", "malformed_note"),
        (b"\xff\n\n", "malformed_note"),
        ("text\n\n\u2014 na+me AAAAAAA=\n".encode(), "bad_key_name"),
    ],
)
def test_malformed_notes_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(VerificationError) as refused:
        parse_note(data)
    assert refused.value.reason == reason


def test_verifier_keys_must_match_their_id() -> None:
    good = GO_VKEY
    with pytest.raises(VerificationError) as refused:
        VerifierKey.parse(good.replace("c74f20a3", "c74f20a4"))
    assert refused.value.reason == "bad_verifier_key"
    assert VerifierKey.parse(good).encode() == good


def test_go_checks_node_proofs(go: Path, tmp_path: Path) -> None:
    """Inclusion and consistency proofs from the node's stored tree pass Go's sumdb/tlog."""
    key = Ed25519PrivateKey.generate()
    entries = [json.dumps({"seq": i}).encode() for i in range(45)]
    stored: dict[audit_tree.Node, bytes] = {}
    frontier: list[bytes] = []
    notes = {}
    for size, entry in enumerate(entries):
        for level, index, h in audit_tree.append_leaf(size, frontier, audit_tree.leaf_hash(entry)):
            stored[level, index] = h
        notes[size + 1] = sign_checkpoint(
            Checkpoint(ORIGIN, size + 1, audit_tree.fold(frontier)), key
        )
    (tmp_path / "vkey").write_text(verifier_key(ORIGIN, key))

    def b64s(hashes: list[bytes]) -> list[str]:
        return [base64.b64encode(h).decode() for h in hashes]

    for index, size in ((0, 1), (3, 7), (12, 32), (44, 45), (20, 45)):
        path = audit_tree.hashes_of(audit_tree.inclusion_ranges(index, size), stored)
        doc = {
            "leaf_index": index,
            "tree_size": size,
            "inclusion_path": b64s(path),
            "entry": entries[index].decode(),
            "checkpoint": notes[size],
        }
        (tmp_path / "p.json").write_text(json.dumps(doc))
        result = goc2sp.run(go, "inclusion", tmp_path / "vkey", tmp_path / "p.json")
        assert result.returncode == 0, (index, size, result.stderr)
        doc["entry"] = entries[(index + 1) % size].decode() if size > 1 else "other"
        (tmp_path / "p.json").write_text(json.dumps(doc))
        assert goc2sp.run(go, "inclusion", tmp_path / "vkey", tmp_path / "p.json").returncode == 1
    for old, new in ((1, 2), (3, 7), (6, 8), (13, 45), (32, 45), (44, 45)):
        path = audit_tree.hashes_of(audit_tree.consistency_ranges(old, new), stored)
        doc = {
            "tree_size_1": old,
            "tree_size_2": new,
            "consistency_path": b64s(path),
            "old_checkpoint": notes[old],
            "checkpoint": notes[new],
        }
        (tmp_path / "c.json").write_text(json.dumps(doc))
        result = goc2sp.run(go, "consistency", tmp_path / "vkey", tmp_path / "c.json")
        assert result.returncode == 0, (old, new, result.stderr)
