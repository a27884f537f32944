"""Signed receipts: the recipient's proof of what it received and when.

Wire form (docs/envelope.md): a compact JWS, ``alg`` Ed25519, ``typ``
``puente-receipt+jwt``, signed by the recipient node, over the canonical JSON of
``schemas/receipt``: the message id, both parties, the SHA-256 of the envelope
exactly as received and the time of receipt. Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from node.core import schemas
from node.core.canonical import b64url_decode, canonical_json
from node.core.clock import parse_rfc3339, rfc3339
from node.core.errors import ReceiptError, SchemaError
from node.trust.directory import Directory
from node.wire.envelope import Message, Party

RECEIPT_JWT_TYPE = "puente-receipt+jwt"
RECEIPT_CLOCK_SKEW = dt.timedelta(minutes=5)  # as for envelopes (node.wire.envelope.MAX_CLOCK_SKEW)
_SIGNING = jws.JWSRegistry(algorithms=["Ed25519"])


@dataclass(frozen=True)
class Receipt:
    """A verified receipt."""

    message_id: str
    sender: Party
    recipient: Party
    envelope_sha256: str
    received_at: dt.datetime
    signing_kid: str
    token: str


def issue_receipt(
    message: Message, *, envelope_sha256: str, received_at: dt.datetime, signing_key: OKPKey
) -> str:
    """Sign a receipt for a message this node accepted."""
    claims = {
        "typ": "puente-receipt",
        "iss": message.recipient.node,
        "jti": message.message_id,
        "sender": message.sender.as_json(),
        "recipient": message.recipient.as_json(),
        "envelope_sha256": envelope_sha256,
        "received_at": rfc3339(received_at),
    }
    header = {"alg": "Ed25519", "kid": signing_key.kid, "typ": RECEIPT_JWT_TYPE}
    return jws.serialize_compact(header, canonical_json(claims), signing_key, registry=_SIGNING)


def verify_receipt(
    token: str,
    *,
    directory: Directory,
    expected_message_id: str,
    expected_recipient: str,
    expected_envelope_sha256: str,
    seen_at: dt.datetime | None = None,
) -> Receipt:
    """Check a receipt's signature and that it acknowledges exactly our envelope.

    The recipient's key must have been valid at the receipt's ``received_at``
    (node.trust.validity); ``seen_at`` is when this node got the receipt (now, or
    when it was stored), which is what counts for a key revoked as compromised.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ReceiptError("receipt_malformed", "not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
    except (ValueError, RecursionError) as exc:  # deeply nested JSON raises RecursionError
        raise ReceiptError("receipt_malformed", "header is not base64url JSON") from exc
    if not isinstance(header, dict) or header.get("typ") != RECEIPT_JWT_TYPE:
        raise ReceiptError("receipt_malformed", "not a Puente receipt")
    recipient = directory.node(expected_recipient)
    kid = header.get("kid")
    if recipient is None or not isinstance(kid, str) or kid not in recipient.signing_keys:
        raise ReceiptError("receipt_unknown_key", "not signed by a key of the recipient node")
    try:
        payload = jws.deserialize_compact(token, recipient.signing_keys[kid], registry=_SIGNING)
        claims: dict[str, Any] = json.loads(payload.payload)
        schemas.validate(schemas.RECEIPT, claims, reason="receipt_malformed")
    except (JoseError, ValueError, TypeError) as exc:
        raise ReceiptError("receipt_bad_signature", "receipt signature does not verify") from exc
    except SchemaError as exc:
        raise ReceiptError("receipt_malformed", exc.detail) from exc
    if claims["iss"] != expected_recipient or claims["recipient"]["node"] != expected_recipient:
        raise ReceiptError("receipt_mismatch", "receipt issued by another node")
    if claims["jti"] != expected_message_id:
        raise ReceiptError("receipt_mismatch", "receipt is for another message")
    if claims["envelope_sha256"] != expected_envelope_sha256:
        raise ReceiptError("receipt_mismatch", "receipt is for other envelope bytes")
    try:
        received_at = parse_rfc3339(claims["received_at"])
    except ValueError as exc:
        # The schema's date-time format admits RFC 3339 forms fromisoformat does not
        # read (a lower-case "t" or "z"): refuse, never raise ValueError to the caller.
        raise ReceiptError("receipt_malformed", "received_at is not readable") from exc
    refusal = recipient.key_validity(kid).refusal(
        signed_at=received_at, seen_at=seen_at or received_at, skew=RECEIPT_CLOCK_SKEW
    )
    if refusal is not None:
        raise ReceiptError(f"receipt_key_{refusal}", f"the receipt's key is {refusal} for it")
    return Receipt(
        message_id=claims["jti"],
        sender=Party(**claims["sender"]),
        recipient=Party(**claims["recipient"]),
        envelope_sha256=claims["envelope_sha256"],
        received_at=received_at,
        signing_kid=kid,
        token=token,
    )
