"""Operator work on the federation directory: keys, trust roots, building, signing.

File I/O at the edge; the signing itself is node.directory's.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from node.keys import SIGNING_CURVE, generate_signing_key, load_jwk, public_jwk, save_jwk
from node.timeutil import rfc3339

DEFAULT_VALIDITY = dt.timedelta(days=30)


def create_operator_key(directory: Path) -> tuple[OKPKey, Path]:
    """A new federation operator signing key, saved as ``<dir>/<kid>.jwk`` (0600)."""
    key = generate_signing_key()
    return key, save_jwk(directory, key)


def load_operator_key(path: Path) -> OKPKey:
    return load_jwk(path, curve=SIGNING_CURVE)


def trust_root_document(
    federation: str, operator_keys: Iterable[OKPKey], threshold: int
) -> dict[str, Any]:
    """The trust root a node is installed with: operator public keys and threshold."""
    return {
        "federation": federation,
        "threshold": threshold,
        "keys": [public_jwk(k) for k in operator_keys],
    }


def directory_document(
    federation: str,
    node_entries: Iterable[Mapping[str, Any]],
    *,
    version: int,
    now: dt.datetime,
    validity: dt.timedelta = DEFAULT_VALIDITY,
) -> dict[str, Any]:
    """An unsigned directory document listing the given node entries."""
    return {
        "federation": federation,
        "version": version,
        "issued_at": rfc3339(now),
        "expires_at": rfc3339(now + validity),
        "nodes": sorted((dict(e) for e in node_entries), key=lambda e: str(e["id"])),
    }


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def publish(
    node_dirs: Iterable[Path], signed_directory: Mapping[str, Any], trust_root: Mapping[str, Any]
) -> None:
    """Install a signed directory and trust root into node data directories."""
    for data_dir in node_dirs:
        write_json(data_dir / "trust-root.json", trust_root)
        write_json(data_dir / "directory.json", signed_directory)
