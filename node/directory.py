"""The federation directory: who the members are and how to reach and trust them.

Pure functions over typed values (no I/O): parse a signed directory, check its
operator signatures against a trust root, and look members, keys and pins up.

Wire form (docs/directory.md): a JWS JSON General Serialization (RFC 7515
section 7.2.1) whose payload is the RFC 8785 canonical JSON of the directory
document and which carries one signature per federation operator. A directory
is accepted only with at least ``threshold`` valid signatures by distinct keys
of the trust root, so threshold signing and operator rotation fit this shape.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from node import schemas
from node.canonical import b64url, b64url_decode, canonical_json, sha256_hex
from node.errors import DirectoryError, KeyStoreError, SchemaError
from node.keys import ENCRYPTION_CURVE, SIGNING_CURVE, certificate_pin, import_public_jwk
from node.timeutil import parse_rfc3339

DIRECTORY_JWS_TYPE = "puente-directory+jws"
_SIGNING = jws.JWSRegistry(algorithms=["Ed25519"])


@dataclass(frozen=True)
class Authority:
    """An authority served by a node (a consulate, a reception centre, ...)."""

    id: str
    kind: str
    names: Mapping[str, str]

    def display_name(self, language: str = "en") -> str:
        return self.names.get(language) or next(iter(self.names.values()))


@dataclass(frozen=True)
class MemberNode:
    """One member state's node as the directory describes it."""

    id: str
    name: str
    endpoint: str
    tls_certificates: Mapping[str, bytes]  # pin (x5t#S256) -> DER certificate
    signing_keys: Mapping[str, OKPKey]  # kid -> public Ed25519 key
    encryption_keys: Mapping[str, OKPKey]  # kid -> public X25519 key
    authorities: Mapping[str, Authority]
    # The node's audit log: origin, verifier_key, witness_key (docs/audit-log.md); optional.
    audit_log: Mapping[str, str] | None = None

    @property
    def current_encryption_key(self) -> OKPKey:
        """The key senders seal to: the last one listed (the newest)."""
        return list(self.encryption_keys.values())[-1]


@dataclass(frozen=True)
class TrustRoot:
    """The operator keys a node trusts to sign the directory, and the threshold."""

    federation: str
    threshold: int
    keys: Mapping[str, OKPKey]

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> TrustRoot:
        try:
            schemas.validate(schemas.TRUST_ROOT, doc, reason="trust_root_invalid")
        except SchemaError as exc:
            raise DirectoryError("trust_root_invalid", exc.detail) from exc
        keys = {k["kid"]: import_public_jwk(k, curve=SIGNING_CURVE) for k in doc["keys"]}
        if doc["threshold"] > len(keys):
            raise DirectoryError("trust_root_invalid", "threshold exceeds the number of keys")
        return cls(federation=doc["federation"], threshold=doc["threshold"], keys=keys)


@dataclass(frozen=True)
class Directory:
    """A verified federation directory."""

    federation: str
    version: int
    issued_at: dt.datetime
    expires_at: dt.datetime
    nodes: Mapping[str, MemberNode]
    document: Mapping[str, Any] = field(repr=False)
    signed: Mapping[str, Any] = field(repr=False)

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical directory document, recorded in audit entries."""
        return sha256_hex(canonical_json(self.document))

    def node(self, node_id: str) -> MemberNode | None:
        return self.nodes.get(node_id)

    def node_by_pin(self, pin: str) -> MemberNode | None:
        """The member whose pinned TLS certificate has this x5t#S256."""
        for member in self.nodes.values():
            if pin in member.tls_certificates:
                return member
        return None

    def pinned_certificates(self) -> list[bytes]:
        """Every pinned certificate (DER), the trust anchors for inbound mutual TLS."""
        return [der for m in self.nodes.values() for der in m.tls_certificates.values()]

    def is_expired(self, now: dt.datetime) -> bool:
        return now >= self.expires_at


def sign_directory(document: Mapping[str, Any], operator_keys: Iterable[OKPKey]) -> dict[str, Any]:
    """Sign a directory document with one or more operator keys.

    Each operator may sign on their own machine; :func:`merge_signatures`
    joins the results.
    """
    _check_document(document)
    payload = canonical_json(document)
    signatures = []
    for key in operator_keys:
        header = {"alg": "Ed25519", "kid": key.kid, "typ": DIRECTORY_JWS_TYPE}
        compact = jws.serialize_compact(header, payload, key, registry=_SIGNING)
        protected, _, signature = compact.split(".")
        signatures.append({"protected": protected, "signature": signature})
    return {"payload": b64url(payload), "signatures": signatures}


def merge_signatures(*signed: Mapping[str, Any]) -> dict[str, Any]:
    """Join operator signatures made separately over the same payload."""
    payloads = {s["payload"] for s in signed}
    if len(payloads) != 1:
        raise DirectoryError("payload_mismatch", "signatures are over different directories")
    merged: dict[str, dict[str, str]] = {}
    for s in signed:
        for sig in s["signatures"]:
            merged[sig["signature"]] = dict(sig)
    return {"payload": payloads.pop(), "signatures": list(merged.values())}


def verify_directory(signed: Mapping[str, Any], trust: TrustRoot, *, now: dt.datetime) -> Directory:
    """Check the operator signatures and the document, and build the model.

    Refuses (with a reason code) a malformed wrapper, fewer than ``threshold``
    valid signatures by distinct trusted keys, a document for another
    federation, an invalid document, and an expired directory.
    """
    if not isinstance(signed, Mapping) or not isinstance(signed.get("payload"), str):
        raise DirectoryError("directory_malformed", "not a JWS JSON General Serialization")
    signatures = signed.get("signatures")
    if not isinstance(signatures, list):
        raise DirectoryError("directory_malformed", "no signatures array")
    payload_b64 = signed["payload"]
    valid_kids: set[str] = set()
    for sig in signatures:
        kid = _verified_signer(sig, payload_b64, trust)
        if kid is not None:
            valid_kids.add(kid)
    if len(valid_kids) < trust.threshold:
        raise DirectoryError(
            "directory_under_threshold",
            f"{len(valid_kids)} valid operator signature(s), {trust.threshold} required",
        )
    try:
        document = json.loads(b64url_decode(payload_b64))
    except ValueError as exc:
        raise DirectoryError("directory_malformed", "payload is not JSON") from exc
    directory = parse_directory(document, signed)
    if directory.federation != trust.federation:
        raise DirectoryError("wrong_federation", f"directory is for {directory.federation}")
    if directory.is_expired(now):
        raise DirectoryError("directory_expired", f"expired at {directory.expires_at}")
    return directory


def _verified_signer(sig: Any, payload_b64: str, trust: TrustRoot) -> str | None:
    """The kid of a valid signature by a trusted key, else None."""
    if not isinstance(sig, Mapping):
        return None
    protected, signature = sig.get("protected"), sig.get("signature")
    if not isinstance(protected, str) or not isinstance(signature, str):
        return None
    try:
        header = json.loads(b64url_decode(protected))
    except ValueError:
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    if header.get("alg") != "Ed25519" or header.get("typ") != DIRECTORY_JWS_TYPE:
        return None
    key = trust.keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        return None
    try:
        jws.deserialize_compact(f"{protected}.{payload_b64}.{signature}", key, registry=_SIGNING)
    except (JoseError, ValueError):
        return None
    return str(kid)


def _check_document(document: Mapping[str, Any]) -> None:
    try:
        schemas.validate(schemas.DIRECTORY, document, reason="directory_invalid")
    except SchemaError as exc:
        raise DirectoryError("directory_invalid", exc.detail) from exc


def parse_directory(document: Mapping[str, Any], signed: Mapping[str, Any]) -> Directory:
    """Build the typed directory from a schema-valid document."""
    _check_document(document)
    nodes: dict[str, MemberNode] = {}
    try:
        for entry in document["nodes"]:
            if entry["id"] in nodes:
                raise DirectoryError("directory_invalid", f"node {entry['id']} listed twice")
            nodes[entry["id"]] = _member(entry)
    except KeyStoreError as exc:
        raise DirectoryError("directory_invalid", exc.detail) from exc
    return Directory(
        federation=document["federation"],
        version=document["version"],
        issued_at=parse_rfc3339(document["issued_at"]),
        expires_at=parse_rfc3339(document["expires_at"]),
        nodes=nodes,
        document=document,
        signed=signed,
    )


def _member(entry: Mapping[str, Any]) -> MemberNode:
    certificates: dict[str, bytes] = {}
    for cert in entry["tls"]:
        der = base64.b64decode(cert["x5c"][0], validate=True)
        if certificate_pin(der) != cert["x5t#S256"]:
            raise DirectoryError(
                "directory_invalid", f"node {entry['id']}: x5t#S256 does not match its x5c"
            )
        certificates[cert["x5t#S256"]] = der
    return MemberNode(
        id=entry["id"],
        name=entry["name"],
        endpoint=entry["endpoint"].rstrip("/"),
        tls_certificates=certificates,
        signing_keys={
            k["kid"]: import_public_jwk(k, curve=SIGNING_CURVE) for k in entry["signing_keys"]
        },
        encryption_keys={
            k["kid"]: import_public_jwk(k, curve=ENCRYPTION_CURVE) for k in entry["encryption_keys"]
        },
        authorities={
            a["id"]: Authority(id=a["id"], kind=a["kind"], names=dict(a["names"]))
            for a in entry["authorities"]
        },
        audit_log=dict(entry["audit_log"]) if "audit_log" in entry else None,
    )


def tls_entry(cert_der: bytes) -> dict[str, Any]:
    """The directory's form of a pinned certificate (RFC 7517 x5c and x5t#S256)."""
    return {
        "x5c": [base64.b64encode(cert_der).decode("ascii")],
        "x5t#S256": certificate_pin(cert_der),
    }
