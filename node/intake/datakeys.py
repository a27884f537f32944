"""Per-record data keys for crypto-shredding, and AES-256-GCM with them.

Each received case summary (body and evidence envelope) is encrypted under
its own random 256-bit key, and so is each of the origin's own cases
(node.casework.at_rest, in a store of its own, ``keys/cases``). Erasing a
record is destroying its key: every copy of the ciphertext — in the database,
its replicas, its backups, its write-ahead log archive — becomes unreadable
at once.

That only holds if the keys are not in those same copies, so the keys are NOT
in the database: each is a file ``<data dir>/keys/<store>/<key id>.key``
(mode 0600 in a 0700 directory, like the node's other private keys). Operators
back up the database but not these directories (docs/consent-and-policy.md):
losing a key store loses its records, which is the point. The database keeps
only the bookkeeping (for summaries the table ``summary_keys``: when each key
was made and destroyed, and why; for cases the row's own columns).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.core.errors import PuenteError
from node.trust.keys import write_private_file

KEY_BYTES = 32
NONCE_BYTES = 12
# A key file the database never recorded is one whose record never committed (a
# crash, or a refused duplicate, between writing the key and committing): swept
# once it is this old, so that a commit in progress is never robbed of its key.
ORPHAN_KEY_AGE = dt.timedelta(minutes=10)
DataKey = tuple[str, bytes]  # (key id, 256-bit key)
_KEY_ID = re.compile(r"^[0-9a-f-]{36}$")


def is_data_key_file(path: Path) -> bool:
    """Whether a file is a data key as a :class:`DataKeyStore` names it (``<key id>.key``).

    Backups single them out by this name, wherever under ``keys/`` a store keeps them.
    """
    return path.suffix == ".key" and bool(_KEY_ID.fullmatch(path.stem))


class DataKeyError(PuenteError):
    """A data key is missing (destroyed) or the ciphertext does not open with it."""

    reason = "data_key_destroyed"
    http_status = 410


class DataKeyStore:
    """The directory of per-summary data keys."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key_id: str) -> Path:
        if not _KEY_ID.fullmatch(key_id):
            raise DataKeyError("data_key_invalid", "not a data key id")
        return self.root / f"{key_id}.key"

    def create(self) -> DataKey:
        """A fresh key, durably written before any ciphertext under it is committed."""
        (made,) = self.create_many(1)
        return made

    def create_many(self, count: int) -> list[DataKey]:
        """``count`` fresh keys, durably written: each file, then the directory, synced.

        Blocking (one fsync a file): a busy receiver calls it in a worker
        thread for a whole batch (asyncio.to_thread), off the event loop.
        """
        made = []
        for _ in range(count):
            key_id = str(uuid.uuid4())
            key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
            write_private_file(self._path(key_id), key)
            made.append((key_id, key))
        if made:
            self._sync_directory()  # the new names, not only the contents, survive a crash
        return made

    def get(self, key_id: str) -> bytes:
        """The key, or :class:`DataKeyError` ``data_key_destroyed``."""
        try:
            key = self._path(key_id).read_bytes()
        except FileNotFoundError as exc:
            raise DataKeyError("data_key_destroyed", f"data key {key_id} no longer exists") from exc
        if len(key) != KEY_BYTES:
            raise DataKeyError("data_key_destroyed", f"data key {key_id} is not a key")
        return key

    def exists(self, key_id: str) -> bool:
        return self._path(key_id).exists()

    def destroy(self, key_id: str) -> bool:
        """Overwrite and remove the key file. Returns False if it was already gone.

        Overwriting first is best effort (a journaling file system or an SSD may
        keep old blocks); what makes erasure hold is that no backup ever held the key.
        """
        path = self._path(key_id)
        try:
            with path.open("r+b") as handle:
                handle.write(b"\0" * KEY_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sync_directory()
        return True

    def key_ids(self) -> list[str]:
        """Every key id present (for sweeping keys whose summary was never committed)."""
        return sorted(p.stem for p in self.root.glob("*.key"))

    def sweep(self, *, live: set[str], recorded: set[str], older_than: dt.datetime) -> int:
        """Destroy every key no live record needs. Returns how many.

        A key the database ``recorded`` but that is not ``live`` (its record was
        erased) goes at once; a key the database never recorded goes once it is
        older than ``older_than`` — its record never committed (a crash, or a
        refused duplicate, between writing the key and committing).
        """
        removed = 0
        for key_id in self.key_ids():
            if key_id in live:
                continue
            if key_id not in recorded:
                created = self.created_at(key_id)
                if created is None or created > older_than:
                    continue
            if self.destroy(key_id):
                removed += 1
        return removed

    def created_at(self, key_id: str) -> dt.datetime | None:
        try:
            return dt.datetime.fromtimestamp(self._path(key_id).stat().st_mtime, dt.UTC)
        except FileNotFoundError:
            return None

    def _sync_directory(self) -> None:
        # The unlink itself must reach the disk, or a crash could bring the key back.
        with contextlib.suppress(OSError):
            fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def encrypt(key: bytes, plaintext: bytes, *, context: str) -> bytes:
    """AES-256-GCM: ``nonce || ciphertext+tag``; ``context`` is bound as associated data."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context.encode("utf-8"))


def decrypt(key: bytes, sealed: bytes, *, context: str) -> bytes:
    """Open what :func:`encrypt` sealed under the same key and context."""
    try:
        return AESGCM(key).decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode("utf-8")
        )
    except (InvalidTag, ValueError) as exc:
        raise DataKeyError(
            "data_key_mismatch", "the ciphertext does not open with this key"
        ) from exc
