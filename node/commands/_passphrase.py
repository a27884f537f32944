"""The passphrase options every key-touching command shares (node.trust.at_rest)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from node.core.errors import KeyStoreError
from node.trust.at_rest import PASSPHRASE_ENV, Unlocker, check_new_passphrase, passphrase_source

UNPROTECTED_WARNING = (
    "WARNING: the private keys are NOT encrypted at rest. Anyone who can read "
    "the data directory can impersonate this node. Protect them with "
    f"--passphrase-file or {PASSPHRASE_ENV} (see keys/README.md)."
)


def add_passphrase_argument(parser: Any) -> None:
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        help=f"file holding the key passphrase (else {PASSPHRASE_ENV}, else a prompt on a TTY)",
    )


def unlocker(args: argparse.Namespace) -> Unlocker:
    """Opens existing encrypted keys: from the file, the environment or a prompt."""
    return Unlocker(passphrase_source(getattr(args, "passphrase_file", None)))


def new_passphrase(args: argparse.Namespace) -> bytes | None:
    """A passphrase to encrypt new keys with, or None (the caller warns).

    On a terminal without a file or environment variable, asks twice; an empty
    answer means no protection.
    """
    source = getattr(args, "passphrase_file", None)
    if source is None and not os.environ.get(PASSPHRASE_ENV) and sys.stdin.isatty():
        first = getpass.getpass("New passphrase for the private keys (empty: none): ")
        if not first:
            return None
        if getpass.getpass("Repeat it: ") != first:
            raise KeyStoreError("passphrase_mismatch", "the two passphrases differ")
        passphrase: bytes | None = first.encode("utf-8")
    else:
        passphrase = Unlocker(passphrase_source(source, interactive=False)).passphrase()
    if passphrase is not None:
        check_new_passphrase(passphrase)
    return passphrase
