"""The envelope: a signed message (JWS, Ed25519) sealed to one recipient (JWE).

Pure functions, no I/O. Wire form (docs/envelope.md): a JWE in compact
serialization, ``alg`` ECDH-ES over X25519 (RFC 8037), ``enc`` A256GCM, whose
plaintext is a compact JWS, ``alg`` Ed25519 (RFC 9864), over the canonical JSON
claims of ``schemas/message``: a nested JWT (RFC 7519 section 5.2).

The signed claims name both ends, a message id, the document type and schema,
issue and expiry times. So a captured envelope cannot be opened by anyone but
the recipient, a recipient cannot re-seal it to a third node without that node
seeing it was addressed to someone else, and a replay is recognisable by its
(sender, message id). Replay detection itself needs memory and lives with the
store; everything here is decidable from the bytes, the keys and the clock.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwe, jws
from joserfc.jwk import OKPKey

from node.core import schemas
from node.core.canonical import b64url_decode, canonical_json, sha256_hex
from node.core.errors import EnvelopeError, SchemaError
from node.core.limits import MAX_ENVELOPE_BYTES
from node.trust.directory import Directory, MemberNode

MESSAGE_JWT_TYPE = "puente-msg+jwt"
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
MAX_LIFETIME = dt.timedelta(days=30)

_SIGNING = jws.JWSRegistry(algorithms=["Ed25519"])
_ENCRYPTION = jwe.JWERegistry(algorithms=["ECDH-ES", "A256GCM"])
_COMPACT_JWE = re.compile(
    r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
)
_KNOWN_JWE_HEADERS = frozenset({"alg", "enc", "kid", "epk", "cty", "typ"})
_KNOWN_JWS_HEADERS = frozenset({"alg", "kid", "typ"})


class DirectoryExpired(EnvelopeError):
    """This node's directory has expired: it takes no traffic until it holds a fresh one.

    503, so the sender keeps the envelope and retries (docs/directory.md, "Expiry").
    """

    reason = "directory_expired"
    http_status = 503


@dataclass(frozen=True)
class Party:
    """One end of a message: a node and one of its authorities."""

    node: str
    authority: str

    def as_json(self) -> dict[str, str]:
        return {"node": self.node, "authority": self.authority}


@dataclass(frozen=True)
class Message:
    """The signed content of an envelope."""

    message_id: str
    sender: Party
    recipient: Party
    doc_type: str
    schema: str
    issued_at: int
    expires_at: int
    body: Mapping[str, Any]
    # The disclosure terms (schemas/disclosure-terms) a case summary travels under:
    # signed with the body so that purpose, policy and handling rules go with the data.
    terms: Mapping[str, Any] | None = None

    def claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.sender.node,
            "aud": self.recipient.node,
            "jti": self.message_id,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "sender": self.sender.as_json(),
            "recipient": self.recipient.as_json(),
            "doc": {"type": self.doc_type, "schema": self.schema},
            "body": dict(self.body),
        }
        if self.terms is not None:
            claims["terms"] = dict(self.terms)
        return claims

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Message:
        return cls(
            message_id=claims["jti"],
            sender=Party(**claims["sender"]),
            recipient=Party(**claims["recipient"]),
            doc_type=claims["doc"]["type"],
            schema=claims["doc"]["schema"],
            issued_at=claims["iat"],
            expires_at=claims["exp"],
            body=claims["body"],
            terms=claims.get("terms"),
        )


@dataclass(frozen=True)
class OpenedEnvelope:
    """A verified envelope: who sent what to whom, under which keys."""

    message: Message
    signing_kid: str
    encryption_kid: str
    envelope_sha256: str
    signed_jws: str


def seal(message: Message, *, signing_key: OKPKey, recipient_key: OKPKey) -> str:
    """Sign the message claims, then encrypt the JWS to the recipient's key."""
    signed = jws.serialize_compact(
        {"alg": "Ed25519", "kid": signing_key.kid, "typ": MESSAGE_JWT_TYPE},
        canonical_json(message.claims()),
        signing_key,
        registry=_SIGNING,
    )
    return jwe.encrypt_compact(
        {"alg": "ECDH-ES", "enc": "A256GCM", "kid": recipient_key.kid, "cty": "JWT"},
        signed.encode("ascii"),
        recipient_key,
        registry=_ENCRYPTION,
    )


def open_envelope(
    envelope: bytes,
    *,
    own_node: str,
    own_encryption_keys: Mapping[str, OKPKey],
    directory: Directory,
    now: dt.datetime,
    peer_node: str | None = None,
) -> OpenedEnvelope:
    """Decrypt, verify and check an envelope addressed to ``own_node``.

    ``peer_node`` is the node authenticated by mutual TLS, when there is one:
    the message must be signed by that node. Every refusal raises
    :class:`EnvelopeError` with a reason code.
    """
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("envelope_too_large", f"more than {MAX_ENVELOPE_BYTES} bytes")
    if directory.is_expired(now):
        raise DirectoryExpired(detail="this node's federation directory has expired")
    try:
        text = envelope.decode("ascii")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("malformed_envelope", "not ASCII") from exc
    if not _COMPACT_JWE.fullmatch(text):  # fullmatch: "$" alone would let a final "\n" through
        raise EnvelopeError("malformed_envelope", "not a JWE compact serialization")
    protected_b64, encrypted_key, _iv, _ciphertext, _tag = text.split(".")
    header = _json_header(protected_b64, "malformed_envelope")
    _check_jwe_header(header)
    if encrypted_key:
        # ECDH-ES in direct key agreement mode has an empty JWE Encrypted Key.
        raise EnvelopeError("malformed_envelope", "JWE encrypted key must be empty for ECDH-ES")
    key = own_encryption_keys.get(header["kid"])
    if key is None:
        raise EnvelopeError("unknown_recipient_key", "sealed to a key this node does not hold")
    try:
        plaintext = jwe.decrypt_compact(text, key, registry=_ENCRYPTION).plaintext
    except Exception as exc:
        # Everything here is unauthenticated input to the JOSE library, which raises
        # more than JoseError on hostile headers (KeyError for an unexpected epk curve):
        # any failure to decrypt is a refusal, never an internal error.
        raise EnvelopeError("decryption_failed", "the envelope does not decrypt") from exc
    if plaintext is None:
        raise EnvelopeError("decryption_failed", "empty plaintext")
    signed = _ascii(plaintext)
    sender, signing_key, jws_header = _find_signer(signed, directory, peer_node)
    try:
        payload = jws.deserialize_compact(signed, signing_key, registry=_SIGNING).payload
    except Exception as exc:  # anyone holding our public key can seal any inner bytes
        raise EnvelopeError("bad_signature", "the inner signature does not verify") from exc
    claims = _claims(payload)
    message = Message.from_claims(claims)
    _check_parties(message, claims, sender, own_node, directory)
    _check_times(message, now)
    _check_signing_key(sender, jws_header["kid"], message, now)
    _check_document(message)
    return OpenedEnvelope(
        message=message,
        signing_kid=jws_header["kid"],
        encryption_kid=header["kid"],
        envelope_sha256=sha256_hex(envelope),
        signed_jws=signed,
    )


def _json_header(segment: str, reason: str) -> dict[str, Any]:
    try:
        header = json.loads(b64url_decode(segment))
    except (ValueError, RecursionError) as exc:  # deeply nested JSON raises RecursionError
        raise EnvelopeError(reason, "protected header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise EnvelopeError(reason, "protected header is not a JSON object")
    return header


def _check_jwe_header(header: Mapping[str, Any]) -> None:
    if header.get("alg") != "ECDH-ES" or header.get("enc") != "A256GCM":
        raise EnvelopeError("unsupported_algorithm", "only ECDH-ES with A256GCM is accepted")
    unknown = set(header) - _KNOWN_JWE_HEADERS
    if unknown:
        # "zip" or "crit" would change how the bytes are read; refuse rather than guess.
        raise EnvelopeError("unsupported_header", f"unexpected JWE header(s): {sorted(unknown)}")
    if not isinstance(header.get("kid"), str):
        raise EnvelopeError("unknown_recipient_key", "JWE header has no kid")
    epk = header.get("epk")
    if not (
        isinstance(epk, dict)
        and epk.get("kty") == "OKP"
        and epk.get("crv") == "X25519"
        and isinstance(epk.get("x"), str)
    ):
        raise EnvelopeError("malformed_envelope", "epk must be an X25519 public JWK")


def _ascii(plaintext: bytes) -> str:
    try:
        return plaintext.decode("ascii")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("malformed_message", "inner JWS is not ASCII") from exc


def _find_signer(
    signed: str, directory: Directory, peer_node: str | None
) -> tuple[MemberNode, OKPKey, dict[str, Any]]:
    parts = signed.split(".")
    if len(parts) != 3:
        raise EnvelopeError("malformed_message", "inner content is not a compact JWS")
    header = _json_header(parts[0], "malformed_message")
    if header.get("alg") != "Ed25519":
        raise EnvelopeError("unsupported_algorithm", "inner signature must be Ed25519")
    if header.get("typ") != MESSAGE_JWT_TYPE or set(header) - _KNOWN_JWS_HEADERS:
        raise EnvelopeError("malformed_message", "inner JWS header is not a Puente message")
    kid = header.get("kid")
    for member in directory.nodes.values():
        if isinstance(kid, str) and kid in member.signing_keys:
            if peer_node is not None and member.id != peer_node:
                raise EnvelopeError("sender_mismatch", "signed by a node other than the TLS peer")
            return member, member.signing_keys[kid], header
    raise EnvelopeError("unknown_sender_key", "signing key is not in the federation directory")


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError("malformed_message", "signed payload is not JSON") from exc
    try:
        schemas.validate(schemas.MESSAGE, claims, reason="malformed_message")
    except SchemaError as exc:
        raise EnvelopeError("malformed_message", exc.detail) from exc
    return dict(claims)


def _check_parties(
    message: Message,
    claims: Mapping[str, Any],
    signer: MemberNode,
    own_node: str,
    directory: Directory,
) -> None:
    # "iss" and "aud" are checked as signed: Message keeps only sender/recipient,
    # and a JWT library on the other side may route or check by iss/aud alone.
    if claims["iss"] != signer.id or message.sender.node != signer.id:
        raise EnvelopeError("sender_mismatch", "claims name a sender other than the signer")
    if message.sender.authority not in signer.authorities:
        raise EnvelopeError("unknown_authority", "sending authority is not in the directory")
    if claims["aud"] != own_node or message.recipient.node != own_node:
        raise EnvelopeError("wrong_recipient", "addressed to another node")
    own = directory.node(own_node)
    if own is None or message.recipient.authority not in own.authorities:
        raise EnvelopeError("unknown_authority", "receiving authority is not in the directory")


def _check_times(message: Message, now: dt.datetime) -> None:
    try:
        issued = dt.datetime.fromtimestamp(message.issued_at, dt.UTC)
        expires = dt.datetime.fromtimestamp(message.expires_at, dt.UTC)
    except (OverflowError, ValueError, OSError) as exc:
        # The schema bounds iat/exp below only; 1e300 is a schema-valid "integer".
        raise EnvelopeError("malformed_message", "iat or exp is out of range") from exc
    if issued > now + MAX_CLOCK_SKEW:
        raise EnvelopeError("not_yet_valid", "issued in the future")
    if expires <= now:
        raise EnvelopeError("expired", "the message has expired")
    if expires - issued > MAX_LIFETIME:
        raise EnvelopeError("lifetime_too_long", f"lifetime exceeds {MAX_LIFETIME}")


def _check_signing_key(signer: MemberNode, kid: str, message: Message, now: dt.datetime) -> None:
    """The key must be valid when the message says it was signed (node.trust.validity).

    So a rotated-out key still verifies what it signed in its time, a new key
    nothing from before its ``nbf``, and a revoked key nothing from its
    revocation on (for ``keyCompromise``: nothing that arrives after it).
    """
    signed_at = dt.datetime.fromtimestamp(message.issued_at, dt.UTC)
    refusal = signer.key_validity(kid).refusal(
        signed_at=signed_at, seen_at=now, skew=MAX_CLOCK_SKEW
    )
    if refusal is not None:
        raise EnvelopeError(
            f"signing_key_{refusal}", f"the signing key is {refusal.replace('_', ' ')} for this"
        )


def _check_document(message: Message) -> None:
    expected = schemas.DOCUMENT_SCHEMAS.get(message.doc_type)
    if expected is None or expected != message.schema:
        raise EnvelopeError("unsupported_document", "unknown document type or schema version")
    try:
        schemas.validate(expected, message.body, reason="schema_invalid")
    except SchemaError as exc:
        raise EnvelopeError("schema_invalid", exc.detail) from exc
