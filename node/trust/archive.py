"""A node's backup archive: a tar signed by the node and encrypted to a recipient (docs/backup.md).

Format, outside in:

* an **age** file (age-encryption.org/v1) to one X25519 recipient
  (``age1…``): streamed ChaCha20-Poly1305 in 64 KiB chunks, so an archive of
  any size is written and read in constant memory, and a flipped byte
  anywhere makes it refuse to open;
* inside, a POSIX (pax) **tar** whose first member is ``manifest.jws``: a
  compact JWS (RFC 7515, ``alg`` Ed25519, ``typ`` ``puente-backup+jws``)
  signed with the node's signing key over the RFC 8785 JSON of the manifest,
  which names the node, the time, the recipient and every other member with
  its size and SHA-256;
* then the members, each exactly as listed.

Opening checks, in this order, and refuses with a reason code at the first
failure: it decrypts (``backup_undecryptable``), the first member is a
manifest (``backup_malformed``), its key is one the caller trusts for the
node the caller expects (``backup_wrong_node``, ``backup_unknown_key``), the
signature verifies (``backup_signature_invalid``), and every member is listed,
safe to extract, and has the listed size and digest (``backup_tampered``).
Nothing is extracted outside ``into``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import pyrage
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from node.core.canonical import b64url_decode, canonical_json
from node.core.errors import PuenteError

FORMAT: Final = "puente-backup/1"
MANIFEST: Final = "manifest.jws"
JWS_TYPE: Final = "puente-backup+jws"
_SIGNING = jws.JWSRegistry(algorithms=["Ed25519"])
_CHUNK = 1 << 20


class ArchiveError(PuenteError):
    """A backup archive that cannot be written, opened or trusted."""

    reason = "backup_invalid"
    http_status = 400


@dataclass(frozen=True)
class Manifest:
    """A verified manifest: who made the archive, when, and what it holds."""

    node: str
    created_at: str
    signing_kid: str
    members: Mapping[str, Mapping[str, Any]]  # name -> {"size", "sha256"}
    document: Mapping[str, Any]


# (node, kid) -> the node's public signing key, or ArchiveError naming why not.
KeyLookup = Callable[[str, str, Mapping[str, Any]], OKPKey]


def _digest(path: Path) -> tuple[int, str]:
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def _safe_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name != str(path):
        raise ArchiveError("backup_tampered", f"member {name!r} is not a plain relative path")
    return name


def recipient_of(text: str) -> pyrage.x25519.Recipient:
    """An age X25519 recipient (``age1…``), or ArchiveError ``bad_recipient``."""
    try:
        return pyrage.x25519.Recipient.from_str(text.strip())
    except pyrage.RecipientError as exc:
        raise ArchiveError(
            "bad_recipient", "the recipient is not an age X25519 public key (age1…)"
        ) from exc


def identity_of(text: str) -> pyrage.x25519.Identity:
    """An age X25519 identity from an identity file's text (``AGE-SECRET-KEY-1…``, # comments)."""
    lines = [line.strip() for line in text.splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    try:
        if len(keys) != 1:
            raise pyrage.IdentityError("one key a file")
        return pyrage.x25519.Identity.from_str(keys[0])
    except pyrage.IdentityError as exc:
        raise ArchiveError(
            "bad_identity", "the identity file holds no single age secret key (AGE-SECRET-KEY-1…)"
        ) from exc


def write_archive(
    out: Path,
    *,
    members: Sequence[tuple[str, Path]],
    manifest: Mapping[str, Any],
    signing_key: OKPKey,
    recipient: str,
    workdir: Path,
) -> dict[str, Any]:
    """Sign a manifest of ``members`` (archive name, file) and write the encrypted archive.

    ``manifest`` holds what the caller records (node, time, contents); the
    member list, the recipient and the format are added here. The plaintext tar
    exists only in ``workdir`` (the node's own protected disk) and is removed.
    Returns the manifest as signed.
    """
    age_recipient = recipient_of(recipient)
    listed = {}
    for name, path in members:
        size, sha256 = _digest(path)
        listed[_safe_name(name)] = {"size": size, "sha256": sha256}
    document = {
        **manifest,
        "format": FORMAT,
        "recipient": recipient.strip(),
        "members": listed,
    }
    header = {"alg": "Ed25519", "kid": signing_key.kid, "typ": JWS_TYPE}
    token = jws.serialize_compact(header, canonical_json(document), signing_key, registry=_SIGNING)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".backup-") as tmp:
        plain = Path(tmp) / "archive.tar"
        with tarfile.open(plain, "w", format=tarfile.PAX_FORMAT) as tar:
            data = token.encode("ascii")
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
            for name, path in members:
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
        partial = out.with_name(out.name + ".partial")
        partial.touch(mode=0o600)
        pyrage.encrypt_file(str(plain), str(partial), [age_recipient])
        os.replace(partial, out)
    return document


def open_archive(
    archive: Path, *, identity: pyrage.x25519.Identity, into: Path, key_for: KeyLookup
) -> Manifest:
    """Decrypt, verify and extract an archive into ``into``; every refusal is an ArchiveError.

    ``key_for(node, kid, manifest)`` returns the public key the caller trusts
    for that node's signature (or raises); nothing the archive says about
    itself is trusted before the signature verifies under that key.
    """
    into.mkdir(parents=True, exist_ok=True)
    plain = into / ".archive.tar"
    try:
        pyrage.decrypt_file(str(archive), str(plain), [identity])
    except (pyrage.DecryptError, OSError) as exc:
        plain.unlink(missing_ok=True)
        raise ArchiveError(
            "backup_undecryptable",
            "the archive does not open with this identity: it was encrypted to another "
            "key, or it was altered or cut short",
        ) from exc
    try:
        with tarfile.open(plain, "r:") as tar:
            manifest = _verified_manifest(tar, key_for)
            _extract(tar, manifest, into)
    except tarfile.TarError as exc:
        raise ArchiveError("backup_malformed", "the decrypted archive is not a tar file") from exc
    finally:
        plain.unlink(missing_ok=True)
    return manifest


def _verified_manifest(tar: tarfile.TarFile, key_for: KeyLookup) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > 1 << 24:
        raise ArchiveError("backup_malformed", "the archive does not start with its manifest")
    handle = tar.extractfile(first)
    assert handle is not None  # a regular file
    token = handle.read().decode("ascii", "replace")
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not a compact JWS")
        header = json.loads(b64url_decode(parts[0]))
        claimed = json.loads(b64url_decode(parts[1]))
        if not isinstance(header, dict) or header.get("typ") != JWS_TYPE:
            raise ValueError("not a backup manifest")
        if not isinstance(claimed, dict) or claimed.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        node, kid = str(claimed["node"]), str(header["kid"])
    except (ValueError, KeyError, RecursionError) as exc:
        raise ArchiveError("backup_malformed", f"the manifest is unreadable: {exc}") from exc
    key = key_for(node, kid, claimed)
    try:
        verified = jws.deserialize_compact(token, key, registry=_SIGNING)
    except (JoseError, ValueError) as exc:
        raise ArchiveError(
            "backup_signature_invalid", f"the manifest is not signed by {node}'s key {kid}"
        ) from exc
    document = json.loads(verified.payload)
    members = document.get("members")
    if not isinstance(members, dict):
        raise ArchiveError("backup_malformed", "the manifest lists no members")
    return Manifest(
        node=node,
        created_at=str(document.get("created_at", "")),
        signing_kid=kid,
        members=members,
        document=document,
    )


def _extract(tar: tarfile.TarFile, manifest: Manifest, into: Path) -> None:
    seen: set[str] = set()
    for position, member in enumerate(tar):
        if position == 0:
            continue  # the manifest, already read
        name = _safe_name(member.name)
        expected = manifest.members.get(name)
        if expected is None or name in seen or not member.isfile():
            raise ArchiveError("backup_tampered", f"member {name!r} is not in the signed manifest")
        seen.add(name)
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        source = tar.extractfile(member)
        assert source is not None
        sha, size = hashlib.sha256(), 0
        with target.open("wb") as out:
            os.chmod(target, 0o600)
            while chunk := source.read(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if (size, sha.hexdigest()) != (expected["size"], expected["sha256"]):
            raise ArchiveError("backup_tampered", f"member {name!r} differs from the manifest")
    missing = sorted(set(manifest.members) - seen)
    if missing:
        raise ArchiveError("backup_tampered", f"members missing: {', '.join(missing)}")
