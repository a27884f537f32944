"""The federation directory: who the members are and how to reach and trust them.

Pure functions over typed values (no I/O): parse a signed directory, check its
operator signatures against a trust root, and look members, keys and pins up.

Wire form (docs/directory.md): a JWS JSON General Serialization (RFC 7515
section 7.2.1) whose payload is the RFC 8785 canonical JSON of the directory
document and which carries one signature per federation operator. A directory
is accepted only with at least ``threshold`` valid signatures by distinct keys
of the trust root, so threshold signing and operator rotation fit this shape.
The rules for accepting a directory (threshold of the old and the new operator
set, version, expiry) live in one place, node.trust.acceptance; this module is the model.
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

from node.core import schemas
from node.core.canonical import b64url, b64url_decode, canonical_json, sha256_hex
from node.core.clock import parse_rfc3339
from node.core.errors import DirectoryError, KeyStoreError, SchemaError
from node.trust.keys import ENCRYPTION_CURVE, SIGNING_CURVE, certificate_pin, import_public_jwk
from node.trust.validity import ALWAYS_VALID, KeyValidity, newest_in_force

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
    # kid or certificate pin -> published validity (node.trust.validity); absent: always valid
    validity: Mapping[str, KeyValidity] = field(default_factory=dict)
    # The node's audit log: origin, verifier_key, witness_key (docs/audit-log.md); optional.
    audit_log: Mapping[str, str] | None = None

    @property
    def current_encryption_key(self) -> OKPKey:
        """The last encryption key listed; senders use :meth:`encryption_key_at`."""
        return list(self.encryption_keys.values())[-1]

    def key_validity(self, kid_or_pin: str) -> KeyValidity:
        """The published validity of one of this node's keys or certificates."""
        return self.validity.get(kid_or_pin, ALWAYS_VALID)

    def encryption_key_at(self, now: dt.datetime) -> OKPKey:
        """The key to seal to at ``now``: the newest one in force (node.trust.validity).

        During a rotation the new key is published with a later ``nbf``; senders
        switch to it at that moment, while the node still holds the old one.
        """
        kid = newest_in_force([(k, self.key_validity(k)) for k in self.encryption_keys], now)
        if kid is None:
            raise DirectoryError(
                "no_encryption_key_in_force", f"node {self.id} has no encryption key in force"
            )
        return self.encryption_keys[kid]

    def trusted_pins(self, now: dt.datetime) -> list[str]:
        """The pins of this node's certificates a peer may accept now (not expired or revoked)."""
        return [pin for pin in self.tls_certificates if self.key_validity(pin).trusted(now)]


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
    # The operator set this directory names for itself and its successor; None: the trust root.
    operators: TrustRoot | None = None

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical directory document, recorded in audit entries."""
        return sha256_hex(canonical_json(self.document))

    def node(self, node_id: str) -> MemberNode | None:
        return self.nodes.get(node_id)

    def node_by_pin(self, pin: str, at: dt.datetime | None = None) -> MemberNode | None:
        """The member whose pinned TLS certificate has this x5t#S256.

        With ``at``, a pin that is expired or revoked at that time names nobody.
        """
        for member in self.nodes.values():
            if pin in member.tls_certificates:
                if at is not None and not member.key_validity(pin).trusted(at):
                    return None
                return member
        return None

    def pinned_certificates(self, at: dt.datetime | None = None) -> list[bytes]:
        """Every pinned certificate (DER), the trust anchors for inbound mutual TLS.

        With ``at``, only the certificates a peer may trust at that time.
        """
        return [
            der
            for m in self.nodes.values()
            for pin, der in m.tls_certificates.items()
            if at is None or m.key_validity(pin).trusted(at)
        ]

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


def valid_signers(signed: Mapping[str, Any], operators: TrustRoot) -> set[str]:
    """The kids of ``operators`` that validly signed this directory (distinct keys).

    Refuses a wrapper that is not a JWS JSON General Serialization; a signature
    that is malformed, by another key or of another type is not counted.
    """
    if not isinstance(signed, Mapping) or not isinstance(signed.get("payload"), str):
        raise DirectoryError("directory_malformed", "not a JWS JSON General Serialization")
    signatures = signed.get("signatures")
    if not isinstance(signatures, list):
        raise DirectoryError("directory_malformed", "no signatures array")
    valid_kids: set[str] = set()
    for sig in signatures:
        kid = _verified_signer(sig, signed["payload"], operators)
        if kid is not None:
            valid_kids.add(kid)
    return valid_kids


def decode_payload(signed: Mapping[str, Any]) -> Any:
    """The JSON document a signed directory carries (not yet checked)."""
    try:
        return json.loads(b64url_decode(signed["payload"]))
    except (ValueError, RecursionError) as exc:
        raise DirectoryError("directory_malformed", "payload is not JSON") from exc


def _verified_signer(sig: Any, payload_b64: str, trust: TrustRoot) -> str | None:
    """The kid of a valid signature by a trusted key, else None."""
    if not isinstance(sig, Mapping):
        return None
    protected, signature = sig.get("protected"), sig.get("signature")
    if not isinstance(protected, str) or not isinstance(signature, str):
        return None
    try:
        header = json.loads(b64url_decode(protected))
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict):  # e.g. "[]": unsigned input, ignored like a bad signature
        return None
    kid = header.get("kid")
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
    try:
        issued_at = parse_rfc3339(document["issued_at"])
        expires_at = parse_rfc3339(document["expires_at"])
    except ValueError as exc:  # schema-valid RFC 3339 that fromisoformat cannot read
        raise DirectoryError("directory_invalid", "issued_at or expires_at unreadable") from exc
    operators = None
    if "operators" in document:
        try:
            operators = TrustRoot.from_document(
                {"federation": document["federation"], **document["operators"]}
            )
        except DirectoryError as exc:
            raise DirectoryError("directory_invalid", f"operators: {exc.detail}") from exc
    return Directory(
        federation=document["federation"],
        version=document["version"],
        issued_at=issued_at,
        expires_at=expires_at,
        nodes=nodes,
        document=document,
        signed=signed,
        operators=operators,
    )


def _member(entry: Mapping[str, Any]) -> MemberNode:
    certificates: dict[str, bytes] = {}
    for cert in entry["tls"]:
        try:
            der = base64.b64decode(cert["x5c"][0], validate=True)
        except ValueError as exc:  # the schema pattern does not check the length
            raise DirectoryError(
                "directory_invalid", f"node {entry['id']}: x5c is not base64"
            ) from exc
        if certificate_pin(der) != cert["x5t#S256"]:
            raise DirectoryError(
                "directory_invalid", f"node {entry['id']}: x5t#S256 does not match its x5c"
            )
        certificates[cert["x5t#S256"]] = der
    keys = [*entry["signing_keys"], *entry["encryption_keys"]]
    for jwk in keys:
        if import_public_jwk(jwk, curve=jwk["crv"]).thumbprint() != jwk["kid"]:
            # Key ids name keys across the federation (signer lookup, rotation,
            # revocation): one kid must never stand for two keys.
            raise DirectoryError(
                "directory_invalid", f"node {entry['id']}: kid is not the RFC 7638 thumbprint"
            )
    validity: dict[str, KeyValidity] = {}
    for member in [*keys, *entry["tls"]]:
        try:
            validity[member.get("kid") or member["x5t#S256"]] = KeyValidity.from_member(member)
        except ValueError as exc:
            raise DirectoryError("directory_invalid", f"node {entry['id']}: {exc}") from exc
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
        validity=validity,
        audit_log=dict(entry["audit_log"]) if "audit_log" in entry else None,
    )


def tls_entry(cert_der: bytes) -> dict[str, Any]:
    """The directory's form of a pinned certificate (RFC 7517 x5c and x5t#S256)."""
    return {
        "x5c": [base64.b64encode(cert_der).decode("ascii")],
        "x5t#S256": certificate_pin(cert_der),
    }
