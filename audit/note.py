"""C2SP signed notes, checkpoints and cosignatures: parsing and verification.

- signed-note (c2sp.org/signed-note): a text ending in a newline, a blank line,
  then lines ``— <key name> base64(key ID || signature)``; verifier keys are
  written ``<name>+<8 hex key ID>+base64(type || public key)``.
- tlog-checkpoint (c2sp.org/tlog-checkpoint): the note text is the origin line,
  the tree size in decimal and the base64 root hash, then optional extension lines.
- tlog-cosignature v1 (c2sp.org/tlog-cosignature): signature type 0x04, an
  Ed25519 signature over ``cosignature/v1\\ntime <t>\\n`` followed by the
  checkpoint's note text, carried as key ID || uint64 timestamp || signature.

Only verification lives here: the verifier must never need a private key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.errors import VerificationError

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16
_DECIMAL = re.compile(r"^(0|[1-9][0-9]{0,19})$")


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("bad_base64", f"{what} is not standard base64") from exc


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise VerificationError("bad_key_name", "a key name is non-empty, without spaces or +")


@dataclass(frozen=True)
class VerifierKey:
    """A public key as C2SP writes it: name, key ID, signature type, key bytes."""

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Parse ``name+hexid+base64(type||key)``, checking the ID matches the key."""
        parts = vkey.strip().split("+", 2)  # base64 may itself hold "+"
        if len(parts) != 3:
            raise VerificationError("bad_verifier_key", "expected name+keyid+key")
        name, hex_id, b64 = parts
        _check_name(name)
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise VerificationError("bad_verifier_key", "the key ID is 8 lower-case hex digits")
        raw = _b64decode(b64, "the key")
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise VerificationError(
                "unsupported_key_type", "only Ed25519 (0x01) and cosignature/v1 (0x04) keys"
            )
        sig_type, public_key = raw[0], raw[1:]
        if key_id(name, sig_type, public_key).hex() != hex_id:
            raise VerificationError("bad_verifier_key", "the key ID does not match the key")
        return cls(name, bytes.fromhex(hex_id), sig_type, public_key)

    def encode(self) -> str:
        raw = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    def _verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key name and the decoded key ID || signature bytes."""

    name: str
    key_id: bytes
    signature: bytes
    line: str


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) signed note."""

    text: str
    signatures: tuple[NoteSignature, ...]


def parse_note(data: bytes | str) -> Note:
    """Split a signed note into its text and signature lines (no verification)."""
    try:
        raw = data if isinstance(data, str) else data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("malformed_note", "a note is UTF-8") from exc
    if any(ord(c) < 0x20 and c != "\n" for c in raw):
        raise VerificationError("malformed_note", "a note has no control characters but newline")
    split = raw.rfind("\n\n")
    if split < 0 or not raw.endswith("\n"):
        raise VerificationError("malformed_note", "no blank line before the signatures")
    text, block = raw[: split + 1], raw[split + 2 :]
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError("too_many_signatures", f"more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise VerificationError("malformed_note", "a signature line starts with an em dash")
        name, space, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        _check_name(name)
        if not space or " " in b64:
            raise VerificationError("malformed_note", "a signature line is name and signature")
        blob = _b64decode(b64, "a signature")
        if len(blob) < 5:
            raise VerificationError("malformed_note", "a signature is too short")
        signatures.append(NoteSignature(name, blob[:4], blob[4:], line + "\n"))
    return Note(text, tuple(signatures))


def _matches(sig: NoteSignature, key: VerifierKey) -> bool:
    return sig.name == key.name and sig.key_id == key.key_id


def verify_note(note: Note, keys: Iterable[VerifierKey]) -> list[VerifierKey]:
    """The Ed25519 (0x01) keys that validly signed the note; at least one, or raise.

    Signatures by unknown keys are ignored; a signature by a known key that
    does not verify rejects the whole note, as the spec recommends.
    """
    known = [k for k in keys if k.sig_type == ED25519]
    verified: list[VerifierKey] = []
    message = note.text.encode()
    for sig in note.signatures:
        for key in known:
            if _matches(sig, key):
                if not key._verify(message, sig.signature):
                    raise VerificationError("bad_signature", f"the signature by {key.name} fails")
                if key not in verified:
                    verified.append(key)
    if not verified:
        raise VerificationError("no_trusted_signature", "no signature by a trusted key")
    return verified


@dataclass(frozen=True)
class Cosignature:
    """A verified tlog-cosignature/v1: who cosigned, and when (POSIX seconds)."""

    cosigner: str
    timestamp: int
    line: str


def cosigned_message(note_text: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosigner signs for a checkpoint."""
    return f"cosignature/v1\ntime {timestamp}\n{note_text}".encode()


def verify_cosignatures(note: Note, witnesses: Iterable[VerifierKey]) -> list[Cosignature]:
    """The valid cosignatures on ``note`` by the given witness keys (type 0x04).

    A cosignature line from a known witness that does not verify rejects the
    note; lines from unknown keys are ignored.
    """
    known = [k for k in witnesses if k.sig_type == COSIGNATURE_V1]
    found: list[Cosignature] = []
    for sig in note.signatures:
        for key in known:
            if not _matches(sig, key):
                continue
            if len(sig.signature) != 8 + 64:
                raise VerificationError("bad_cosignature", f"{key.name}: wrong length")
            (timestamp,) = struct.unpack(">Q", sig.signature[:8])
            if timestamp >= 2**63:
                raise VerificationError("bad_cosignature", f"{key.name}: timestamp out of range")
            if not key._verify(cosigned_message(note.text, timestamp), sig.signature[8:]):
                raise VerificationError("bad_cosignature", f"the cosignature by {key.name} fails")
            found.append(Cosignature(key.name, timestamp, sig.line))
    return found


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text exactly as signed."""
        root = base64.b64encode(self.root).decode()
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text (the part before the blank line)."""
    if not text.endswith("\n"):
        raise VerificationError("malformed_checkpoint", "the text ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError("malformed_checkpoint", "origin, size and root hash are required")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise VerificationError("malformed_checkpoint", "the origin line is empty")
    if not _DECIMAL.match(size_text) or int(size_text) >= 2**63:
        raise VerificationError("malformed_checkpoint", "the size is a decimal without leading 0")
    root = _b64decode(root_text, "the root hash")
    if len(root) != 32:
        raise VerificationError("malformed_checkpoint", "the root hash is 32 bytes")
    if any(not line for line in extensions):
        raise VerificationError("malformed_checkpoint", "extension lines are not empty")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


@dataclass(frozen=True)
class VerifiedCheckpoint:
    checkpoint: Checkpoint
    note: Note
    cosignatures: tuple[Cosignature, ...]


def open_checkpoint(
    data: bytes | str, log_key: VerifierKey, witnesses: Sequence[VerifierKey] = ()
) -> VerifiedCheckpoint:
    """Verify a signed checkpoint by the log's key and collect its valid cosignatures.

    The origin must be the log key's name (the log signs as its origin).
    """
    note = parse_note(data)
    verify_note(note, [log_key])
    checkpoint = parse_checkpoint(note.text)
    if checkpoint.origin != log_key.name:
        raise VerificationError(
            "wrong_origin", f"checkpoint for {checkpoint.origin}, key for {log_key.name}"
        )
    return VerifiedCheckpoint(checkpoint, note, tuple(verify_cosignatures(note, witnesses)))
