"""The federation directory as an auditor reads it: checked signatures, then the audit keys.

The directory (docs/directory.md) is a JWS JSON General Serialization
(RFC 7515 §7.2.1) signed with Ed25519 by the federation operators; the trust
root names their public keys (JWK, RFC 8037) and how many must sign. This
module checks that at least that many distinct operator keys signed it —
with the `cryptography` library, sharing no code with the node — and only then
reads each member's ``audit_log`` (origin, verifier key, witness key) and the
federation's ``witness_policy``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.errors import InputError, VerificationError
from audit.note import VerifierKey

DIRECTORY_TYPE = "puente-directory+jws"


@dataclass(frozen=True)
class Member:
    """One member's audit-log keys, as the signed directory publishes them."""

    node: str
    name: str
    origin: str
    verifier_key: VerifierKey
    witness_key: VerifierKey | None


@dataclass(frozen=True)
class AuditKeys:
    """What a verified directory says about the federation's audit logs."""

    federation: str
    version: int
    expires_at: str
    signers: int
    members: Sequence[Member]
    quorum: int | None  # None: every other member that publishes a witness key

    def member_for(self, origin: str) -> Member | None:
        return next((m for m in self.members if m.origin == origin), None)

    def witnesses_for(self, origin: str) -> list[Member]:
        """The other members that publish a witness key: who may witness this log."""
        return [m for m in self.members if m.origin != origin and m.witness_key is not None]

    def required_for(self, origin: str) -> int:
        """How many cosignatures the policy asks of this log's checkpoints."""
        possible = len(self.witnesses_for(origin))
        return possible if self.quorum is None else min(self.quorum, possible)

    def expired(self, now: dt.datetime) -> bool:
        return _time(self.expires_at) <= now


def _b64url(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise InputError("bad_directory", f"{what} is not base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InputError("bad_directory", f"{what} is not base64url") from exc


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _json(data: bytes | str, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InputError("bad_directory", f"{what} is not JSON") from exc


def _operator_keys(trust_root: Mapping[str, Any]) -> tuple[str, int, dict[str, Ed25519PublicKey]]:
    try:
        federation, threshold = str(trust_root["federation"]), int(trust_root["threshold"])
        keys = {}
        for jwk in trust_root["keys"]:
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise ValueError("an operator key is an Ed25519 JWK")
            raw = _b64url(jwk["x"], "an operator key")
            keys[str(jwk["kid"])] = Ed25519PublicKey.from_public_bytes(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            "bad_trust_root", f"not a trust root (federation, threshold, keys): {exc}"
        ) from exc
    if not 1 <= threshold <= len(keys):
        raise InputError("bad_trust_root", "the threshold is not between 1 and the key count")
    return federation, threshold, keys


def verify_directory(signed_text: str, trust_root_text: str) -> AuditKeys:
    """Check the operators' signatures; return the audit keys the directory publishes.

    :class:`InputError` for files that are not a directory or a trust root;
    :class:`VerificationError` ``directory_not_trusted`` when fewer than the
    threshold of the trust root's keys signed it.
    """
    federation, threshold, keys = _operator_keys(_json(trust_root_text, "the trust root"))
    signed = _json(signed_text, "the directory")
    if not isinstance(signed, dict) or not isinstance(signed.get("signatures"), list):
        raise InputError("bad_directory", "not a signed directory (JWS JSON serialization)")
    payload = signed.get("payload")
    good: set[str] = set()
    for signature in signed["signatures"]:
        if not isinstance(signature, dict):
            continue
        protected = signature.get("protected")
        header = _json(_b64url(protected, "a protected header"), "a protected header")
        kid = header.get("kid") if isinstance(header, dict) else None
        if header.get("alg") != "Ed25519" or header.get("typ") != DIRECTORY_TYPE or kid not in keys:
            continue  # not counted, as the node does (docs/directory.md §2.1)
        try:
            keys[kid].verify(
                _b64url(signature.get("signature"), "a signature"),
                f"{protected}.{payload}".encode("ascii"),
            )
        except (InvalidSignature, UnicodeEncodeError):
            continue
        good.add(kid)
    if len(good) < threshold:
        raise VerificationError(
            "directory_not_trusted",
            f"{len(good)} valid operator signature(s); the trust root asks for {threshold}",
        )
    document = _json(_b64url(payload, "the payload"), "the directory document")
    if document.get("federation") != federation:
        raise VerificationError("directory_not_trusted", "the directory is of another federation")
    return _audit_keys(document, len(good))


def _audit_keys(document: Mapping[str, Any], signers: int) -> AuditKeys:
    members = []
    try:
        for node in document["nodes"]:
            log = node.get("audit_log")
            if not log:
                continue
            witness = log.get("witness_key")
            members.append(
                Member(
                    node=str(node["id"]),
                    name=str(node.get("name", "")),
                    origin=str(log["origin"]),
                    verifier_key=VerifierKey.parse(str(log["verifier_key"])),
                    witness_key=VerifierKey.parse(str(witness)) if witness else None,
                )
            )
        policy = document.get("witness_policy")
        quorum = int(policy["quorum"]) if policy else None
        return AuditKeys(
            federation=str(document["federation"]),
            version=int(document["version"]),
            expires_at=str(document["expires_at"]),
            signers=signers,
            members=members,
            quorum=quorum,
        )
    except (KeyError, TypeError, ValueError, VerificationError) as exc:
        raise InputError("bad_directory", f"the directory document is malformed: {exc}") from exc
