"""Which federation directory a node trusts, and when it may replace it.

Every rule for accepting a directory is here, in one pure function
(:func:`check_directory`), after python-tuf's ``TrustedMetadataSet``; the
:class:`TrustedDirectory` state machine applies it to what a node holds. No
I/O: the refresher, the CLI and ``open_node`` fetch and store.

The rules (docs/directory.md, "Rules"):

1. A directory names its operator set (``operators``: keys and threshold);
   without one, its operator set is the node's installed trust root.
2. It must carry at least ``threshold`` valid signatures by distinct keys of
   the operator set the node trusts now (the held directory's, or the trust
   root's for a first install) AND of its own operator set, so a change of
   operators needs both the old and the new threshold.
3. It must be for the node's federation, schema-valid, and not expired.
4. Its version must be higher than the held one's (rollback is refused); the
   same version is accepted only as the very same document.
5. A held directory that has since expired may still be replaced by a newer
   valid one (that is how a node recovers); it is never used for traffic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from node.core.errors import DirectoryError
from node.trust.directory import (
    Directory,
    TrustRoot,
    decode_payload,
    parse_directory,
    valid_signers,
)


def effective_operators(directory: Directory, trust_root: TrustRoot) -> TrustRoot:
    """The operator set that signs ``directory`` and must sign its successor."""
    return directory.operators if directory.operators is not None else trust_root


def check_directory(
    signed: Mapping[str, Any],
    *,
    trust_root: TrustRoot,
    previous: Directory | None,
    now: dt.datetime,
    allow_expired: bool = False,
    check_version: bool = True,
) -> Directory:
    """Apply every acceptance rule to ``signed`` and return the verified directory.

    ``previous`` is the directory the node trusts now (None for a first
    install: the trust root is then the trusted operator set). Raises
    :class:`DirectoryError` with one of the reasons ``directory_malformed``,
    ``directory_under_threshold``, ``directory_invalid``, ``wrong_federation``,
    ``directory_rollback``, ``directory_version_conflict``, ``directory_expired``.
    """
    trusted = effective_operators(previous, trust_root) if previous else trust_root
    if previous is not None and check_version:
        claimed = _claimed_version(signed)
        if claimed is not None and claimed < previous.version:
            # Refused before the signatures are checked (a refusal needs no trust): an old
            # directory, likely signed by operators since rotated out, is named for what it is.
            raise DirectoryError(
                "directory_rollback", f"version {claimed} is older than the held {previous.version}"
            )
    _require_threshold(signed, trusted, "the operators the node trusts")
    directory = parse_directory(_document(signed), signed)
    if directory.federation != trust_root.federation:
        raise DirectoryError("wrong_federation", f"directory is for {directory.federation}")
    # Always both: when the sets are the same this costs one more verification.
    _require_threshold(
        signed, effective_operators(directory, trust_root), "the operators the directory names"
    )
    if previous is not None and check_version:
        if directory.version < previous.version:
            raise DirectoryError(
                "directory_rollback",
                f"version {directory.version} is older than the held {previous.version}",
            )
        if directory.version == previous.version and directory.digest != previous.digest:
            raise DirectoryError(
                "directory_version_conflict",
                f"another directory with the held version {previous.version}",
            )
    if not allow_expired and directory.is_expired(now):
        raise DirectoryError("directory_expired", f"expired at {directory.expires_at.isoformat()}")
    return directory


def verify_initial(
    signed: Mapping[str, Any], trust_root: TrustRoot, *, now: dt.datetime
) -> Directory:
    """A first directory, trusted through the installed trust root."""
    return check_directory(signed, trust_root=trust_root, previous=None, now=now)


def verify_directory(signed: Mapping[str, Any], trust: TrustRoot, *, now: dt.datetime) -> Directory:
    """Verify a first directory against the installed trust root.

    Refuses (with a reason code) a malformed wrapper, fewer than ``threshold``
    valid signatures by distinct trusted keys (of the trust root, and of the
    operator set the directory names, when it names one), a document for
    another federation, an invalid document, and an expired directory.
    """
    return verify_initial(signed, trust, now=now)


def verify_held(signed: Mapping[str, Any], trust_root: TrustRoot, *, now: dt.datetime) -> Directory:
    """The directory a node stored after verifying it, read back at start.

    Like a TUF client's local root it is checked against its own operator set
    (which may have rotated away from the trust root's). Expiry is not checked
    here: an expired directory is held, reported and replaced, never used.
    """
    directory = parse_directory(_document(signed), signed)
    if directory.federation != trust_root.federation:
        raise DirectoryError("wrong_federation", f"directory is for {directory.federation}")
    _require_threshold(signed, effective_operators(directory, trust_root), "its own operators")
    return directory


@dataclass(frozen=True)
class Refusal:
    """A candidate directory that was not accepted, and why."""

    version: int | None
    reason: str
    detail: str


class TrustedDirectory:
    """The directory a node holds, replaced only through :func:`check_directory`."""

    def __init__(self, trust_root: TrustRoot, held: Directory) -> None:
        self.trust_root = trust_root
        self.current = held

    def update(self, signed: Mapping[str, Any], *, now: dt.datetime) -> Directory | None:
        """Accept a newer directory; None when ``signed`` is the one already held.

        Raises :class:`DirectoryError` when the candidate breaks a rule.
        """
        directory = check_directory(
            signed, trust_root=self.trust_root, previous=self.current, now=now
        )
        if directory.version == self.current.version:
            return None
        self.current = directory
        return directory

    def update_from(
        self, candidates: Iterable[Mapping[str, Any]], *, now: dt.datetime
    ) -> tuple[list[Directory], list[Refusal]]:
        """Walk candidates oldest first, so a chain across an operator rotation verifies.

        A node that skipped versions may need the intermediate directory that
        both the old and the new operators signed; sources offer it and this
        applies each in turn. Returns what was accepted and what was refused.
        """
        accepted: list[Directory] = []
        refused: list[Refusal] = []
        for version, signed in sorted(_by_version(candidates), key=lambda vs: vs[0]):
            if 0 < version < self.current.version:
                # Sources serve old versions too (for chains); not worth verifying.
                refused.append(Refusal(version, "directory_rollback", "older than the held one"))
                continue
            try:
                directory = self.update(signed, now=now)
            except DirectoryError as exc:
                refused.append(Refusal(version if version > 0 else None, exc.reason, exc.detail))
                continue
            if directory is not None:
                accepted.append(directory)
        return accepted, refused


def _by_version(candidates: Iterable[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """Candidates with the version their payload claims (-1 when unreadable: refused later)."""
    return [(_claimed_version(signed) or -1, signed) for signed in candidates]


def _claimed_version(signed: Mapping[str, Any]) -> int | None:
    """The version a payload claims, before any check (only ever used to refuse or order)."""
    try:
        document = decode_payload(signed)
    except (DirectoryError, KeyError, TypeError, AttributeError):
        return None
    version = document.get("version") if isinstance(document, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _document(signed: Mapping[str, Any]) -> Any:
    return decode_payload(signed)


def _require_threshold(signed: Mapping[str, Any], operators: TrustRoot, whose: str) -> None:
    signers = valid_signers(signed, operators)
    if len(signers) < operators.threshold:
        raise DirectoryError(
            "directory_under_threshold",
            f"{len(signers)} valid signature(s) by {whose}, {operators.threshold} required",
        )
