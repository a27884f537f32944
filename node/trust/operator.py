"""Operator work on the federation directory: keys, trust roots, building, signing.

File I/O at the edge; the signing itself is node.trust.directory's.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from node.core.canonical import b64url_decode
from node.core.clock import rfc3339
from node.trust.at_rest import Unlocker
from node.trust.keys import (
    SIGNING_CURVE,
    generate_signing_key,
    import_public_jwk,
    load_jwk,
    public_jwk,
    save_jwk,
)

DEFAULT_VALIDITY = dt.timedelta(days=30)


def create_operator_key(directory: Path, *, passphrase: bytes | None = None) -> tuple[OKPKey, Path]:
    """A new operator signing key: ``<dir>/<kid>.jwk`` (0600, encrypted under a passphrase)
    and its public half ``<dir>/<kid>.public.json`` to hand to the other operators."""
    key = generate_signing_key()
    path = save_jwk(directory, key, passphrase=passphrase)
    write_json(public_key_path(path), public_jwk(key))
    return key, path


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.stem + ".public.json")


def load_operator_key(path: Path, unlocker: Unlocker | None = None) -> OKPKey:
    """An operator's private signing key (for signing a directory)."""
    return load_jwk(path, curve=SIGNING_CURVE, unlocker=unlocker)


def load_operator_public_key(path: Path) -> dict[str, Any]:
    """An operator's public JWK, from a ``.public.json`` file (or, locally, a private key file)."""
    data = read_json(path) if path.name.endswith(".json") else None
    if isinstance(data, dict):
        return public_jwk(import_public_jwk(data, curve=SIGNING_CURVE))
    return public_jwk(load_jwk(path, curve=SIGNING_CURVE, unlocker=Unlocker()))


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
    operators: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An unsigned directory document listing the given node entries.

    ``operators`` (``{"threshold": m, "keys": [JWK, ...]}``) names who signs this
    directory and its successor; without it, the trust root's operators do.
    """
    document: dict[str, Any] = {
        "federation": federation,
        "version": version,
        "issued_at": rfc3339(now),
        "expires_at": rfc3339(now + validity),
        "nodes": sorted((copy.deepcopy(dict(e)) for e in node_entries), key=lambda e: str(e["id"])),
    }
    if operators is not None:
        document["operators"] = {
            "threshold": operators["threshold"],
            "keys": [dict(k) for k in operators["keys"]],
        }
    return document


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def publish_for_sources(out_dir: Path, signed_directory: Mapping[str, Any]) -> list[Path]:
    """Write ``directory.json`` and ``<version>.directory.json`` for URL or file sources."""
    document = json.loads(b64url_decode(signed_directory["payload"]))
    newest = out_dir / "directory.json"
    versioned = out_dir / f"{int(document['version'])}.directory.json"
    write_json(versioned, signed_directory)
    write_json(newest, signed_directory)
    return [newest, versioned]


def publish(
    node_dirs: Iterable[Path], signed_directory: Mapping[str, Any], trust_root: Mapping[str, Any]
) -> None:
    """Install a signed directory and trust root into node data directories."""
    for data_dir in node_dirs:
        write_json(data_dir / "trust-root.json", trust_root)
        write_json(data_dir / "directory.json", signed_directory)
