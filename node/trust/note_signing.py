"""Making C2SP signed notes, checkpoints and cosignatures (the signing half).

The formats are those of c2sp.org/signed-note, c2sp.org/tlog-checkpoint and
c2sp.org/tlog-cosignature (see docs/audit-log.md). Verification is the
independent verifier's job (audit/note.py); the node uses it for what it
receives, and signs here what it issues.
"""

from __future__ import annotations

import base64
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.note import COSIGNATURE_V1, ED25519, Checkpoint, cosigned_message, key_id

SIGNATURE_PREFIX = "\u2014 "  # em dash, space


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def verifier_key(name: str, key: Ed25519PrivateKey, *, sig_type: int = ED25519) -> str:
    """``name+<hex key ID>+base64(type || public key)``, as the directory publishes it."""
    public = public_bytes(key)
    raw = base64.b64encode(bytes([sig_type]) + public).decode()
    return f"{name}+{key_id(name, sig_type, public).hex()}+{raw}"


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise ValueError("a key name is non-empty, without spaces or +")


def signature_line(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """An Ed25519 (type 0x01) note signature line over ``text``."""
    _check_name(name)
    blob = key_id(name, ED25519, public_bytes(key)) + key.sign(text.encode("utf-8"))
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode()}\n"


def sign_checkpoint(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> str:
    """The signed note of a checkpoint, signed by the log key named as its origin."""
    text = checkpoint.text()
    return f"{text}\n{signature_line(text, checkpoint.origin, key)}"


def cosignature_line(note_text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> str:
    """A tlog-cosignature/v1 (type 0x04) line: key ID || uint64 time || Ed25519 signature."""
    _check_name(name)
    if not 0 <= timestamp < 2**63:
        raise ValueError("a cosignature timestamp is a POSIX time below 2^63")
    signature = key.sign(cosigned_message(note_text, timestamp))
    kid = key_id(name, COSIGNATURE_V1, public_bytes(key))
    blob = kid + struct.pack(">Q", timestamp) + signature
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode()}\n"
