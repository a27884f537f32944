"""The envelope (JWE around a JWS) and receipts: pure tests, no network, no database.

Every refusal is asserted by its reason code, because the code is what crosses
the wire (RFC 9457 ``reason``), lands in the audit log and drives the sender's
retry-or-give-up decision. Several checks run in sequence in open_envelope, so
each test names the *first* check its input fails and why that one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from joserfc import jwe as rfc_jwe
from joserfc import jws as rfc_jws
from joserfc.jwk import OKPKey
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jws as jwc_jws

from node.core.canonical import b64url, b64url_decode, canonical_json
from node.core.errors import EnvelopeError, ReceiptError
from node.core.limits import MAX_ENVELOPE_BYTES
from node.trust.keys import generate_encryption_key, generate_signing_key, public_jwk
from node.wire.envelope import (
    MAX_CLOCK_SKEW,
    MAX_LIFETIME,
    MESSAGE_JWT_TYPE,
    Message,
    Party,
    seal,
)
from node.wire.receipts import RECEIPT_JWT_TYPE, issue_receipt, verify_receipt
from tests.support.pki import TestFederation, build_federation, sample_return_notice

NOW = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
NODES = [
    ("MX", "mx-inm-test", "migration_authority"),
    ("GT", "gt-reception-test", "reception_centre"),
    ("HN", "hn-reception-test", "reception_centre"),
]
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ED25519 = rfc_jws.JWSRegistry(algorithms=["Ed25519"])
ECDH_ES = rfc_jwe.JWERegistry(algorithms=["ECDH-ES", "A256GCM", "A128GCM"])


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> TestFederation:
    return build_federation(NODES, now=NOW, tls_dir=tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def message(fed: TestFederation) -> Message:
    return fed.message("MX", "GT")


@pytest.fixture(scope="module")
def envelope(fed: TestFederation, message: Message) -> bytes:
    return fed.seal(message)


# --- helpers -----------------------------------------------------------------------------


def refusal(fed: TestFederation, envelope: bytes, as_node: str = "GT", **kwargs: Any) -> str:
    """The reason code open_envelope refuses with (fails the test if it accepts)."""
    with pytest.raises(EnvelopeError) as info:
        fed.open(envelope, as_node, **kwargs)
    return info.value.reason


def segments(envelope: bytes) -> list[str]:
    return envelope.decode("ascii").split(".")


def joined(parts: list[str]) -> bytes:
    return ".".join(parts).encode("ascii")


def flip_bit(segment: str, byte_index: int, mask: int = 0x01) -> str:
    """Decode a base64url segment, flip one bit, re-encode: still valid base64url."""
    data = bytearray(b64url_decode(segment))
    data[byte_index] ^= mask
    return b64url(bytes(data))


def flip_in_header_value(segment: str, member: str) -> str:
    """Flip one bit of the first letter of a header member's string value (case swap).

    The header stays valid JSON and the value stays in the same alphabet, so the
    only thing that changes is the value itself.
    """
    raw = bytearray(b64url_decode(segment))
    found = re.search(rb'"' + member.encode() + rb'"\s*:\s*"', raw)
    assert found is not None, member
    index = found.end()
    while not chr(raw[index]).isalpha():
        index += 1
    raw[index] ^= 0x20
    return b64url(bytes(raw))


def sign_claims(
    claims: Mapping[str, Any] | bytes,
    key: OKPKey,
    *,
    header: Mapping[str, Any] | None = None,
) -> str:
    """A compact Ed25519 JWS over (canonical) claims, with any header, signed directly.

    Signed with the primitive rather than a JOSE library, so that tests can
    produce headers a library would refuse to sign (a deprecated ``alg``, ``crit``).
    """
    protected = dict(header or {"alg": "Ed25519", "kid": key.kid, "typ": MESSAGE_JWT_TYPE})
    payload = claims if isinstance(claims, bytes) else canonical_json(claims)
    signing_input = f"{b64url(json.dumps(protected).encode())}.{b64url(payload)}"
    secret = b64url_decode(str(key.as_dict(private=True)["d"]))
    private = Ed25519PrivateKey.from_private_bytes(secret)
    return f"{signing_input}.{b64url(private.sign(signing_input.encode('ascii')))}"


def seal_plaintext(
    plaintext: bytes, recipient_public: OKPKey, *, header: Mapping[str, Any] | None = None
) -> bytes:
    """Encrypt arbitrary bytes to a recipient's *public* key, as anyone could."""
    protected = dict(
        header or {"alg": "ECDH-ES", "enc": "A256GCM", "kid": recipient_public.kid, "cty": "JWT"}
    )
    return rfc_jwe.encrypt_compact(protected, plaintext, recipient_public, registry=ECDH_ES).encode(
        "ascii"
    )


def published_encryption_key(fed: TestFederation, node_id: str) -> OKPKey:
    """The recipient's public key as the directory publishes it (no private part)."""
    member = fed.directory.node(node_id)
    assert member is not None
    key = member.current_encryption_key
    assert not key.is_private
    return key


def reseal_to(fed: TestFederation, signed_jws: str, node_id: str) -> bytes:
    return seal_plaintext(signed_jws.encode("ascii"), published_encryption_key(fed, node_id))


def with_claims(fed: TestFederation, message: Message, **changes: Any) -> bytes:
    """The message's claims with changes, signed by its sender and sealed to its recipient."""
    claims = {**message.claims(), **changes}
    signed = sign_claims(claims, fed.node(message.sender.node).signing_key)
    return reseal_to(fed, signed, message.recipient.node)


def header_of(segment: str) -> dict[str, Any]:
    value = json.loads(b64url_decode(segment))
    assert isinstance(value, dict)
    return value


# --- round trip ----------------------------------------------------------------------------


def test_round_trip(fed: TestFederation, message: Message, envelope: bytes) -> None:
    opened = fed.open(envelope, "GT", peer_node="MX")

    assert opened.message == message
    assert opened.message.claims() == message.claims()
    assert opened.message.body == sample_return_notice()
    assert opened.message.sender == Party("MX", "mx-inm-test")
    assert opened.message.recipient == Party("GT", "gt-reception-test")
    assert opened.signing_kid == fed.node("MX").signing_key.kid
    assert opened.encryption_kid == fed.node("GT").encryption_key.kid
    assert opened.envelope_sha256 == hashlib.sha256(envelope).hexdigest()
    # The inner JWS signs the RFC 8785 bytes of the claims, nothing else.
    header_b64, payload_b64, _signature = opened.signed_jws.split(".")
    assert b64url_decode(payload_b64) == canonical_json(message.claims())
    assert header_of(header_b64) == {
        "alg": "Ed25519",
        "kid": fed.node("MX").signing_key.kid,
        "typ": "puente-msg+jwt",
    }


def test_wire_headers(fed: TestFederation, envelope: bytes) -> None:
    protected, encrypted_key, iv, _ciphertext, tag = segments(envelope)
    header = header_of(protected)
    assert {k: v for k, v in header.items() if k != "epk"} == {
        "alg": "ECDH-ES",
        "enc": "A256GCM",
        "kid": fed.node("GT").encryption_key.kid,
        "cty": "JWT",
    }
    assert set(header["epk"]) == {"kty", "crv", "x"}  # a public key only
    assert (header["epk"]["kty"], header["epk"]["crv"]) == ("OKP", "X25519")
    assert encrypted_key == ""  # ECDH-ES direct key agreement
    assert len(b64url_decode(iv)) == 12
    assert len(b64url_decode(tag)) == 16
    # The kid is the RFC 7638 thumbprint of the recipient's key.
    assert header["kid"] == fed.node("GT").encryption_key.thumbprint()


def test_sealing_twice_gives_different_envelopes(fed: TestFederation, message: Message) -> None:
    first, second = fed.seal(message), fed.seal(message)
    assert first != second  # a fresh ephemeral key and IV every time
    assert fed.open(first, "GT").message == fed.open(second, "GT").message


# --- tampering with the JWE ----------------------------------------------------------------

PROTECTED, ENCRYPTED_KEY, IV, CIPHERTEXT, TAG = range(5)
Tamper = Callable[[list[str]], None]


def _at(index: int, change: Callable[[str], str]) -> Tamper:
    def tamper(parts: list[str]) -> None:
        parts[index] = change(parts[index])

    return tamper


OUTER_TAMPERING: list[tuple[str, Tamper, str]] = [
    # '{' (0x7b) becomes 'z': the header is no longer JSON, refused before any crypto.
    ("protected-structure", _at(PROTECTED, lambda s: flip_bit(s, 0)), "malformed_envelope"),
    # "ECDH-ES" becomes "eCDH-ES": refused by the algorithm allow-list before decrypting.
    (
        "protected-alg",
        _at(PROTECTED, lambda s: flip_in_header_value(s, "alg")),
        "unsupported_algorithm",
    ),
    (
        "protected-enc",
        _at(PROTECTED, lambda s: flip_in_header_value(s, "enc")),
        "unsupported_algorithm",
    ),
    # The kid names a key this node does not hold: nothing to decrypt with.
    (
        "protected-kid",
        _at(PROTECTED, lambda s: flip_in_header_value(s, "kid")),
        "unknown_recipient_key",
    ),
    # "JWT" becomes "jWT": nothing reads cty, but the protected header is the GCM
    # additional authenticated data, so the tag no longer verifies.
    (
        "protected-cty",
        _at(PROTECTED, lambda s: flip_in_header_value(s, "cty")),
        "decryption_failed",
    ),
    # Another ephemeral public key: another shared secret, another CEK.
    (
        "protected-epk-x",
        _at(PROTECTED, lambda s: flip_in_header_value(s, "x")),
        "decryption_failed",
    ),
    # ECDH-ES in direct key agreement mode has an empty encrypted key; bytes there
    # mean another key management mode (or a confused sender) and are refused.
    ("encrypted-key", _at(ENCRYPTED_KEY, lambda _: b64url(bytes(32))), "malformed_envelope"),
    # AES-GCM authenticates IV, ciphertext and tag together: one bit anywhere and
    # the tag check fails; nothing is decrypted.
    ("iv", _at(IV, lambda s: flip_bit(s, 0)), "decryption_failed"),
    ("iv-last-bit", _at(IV, lambda s: flip_bit(s, 11, 0x80)), "decryption_failed"),
    ("ciphertext-first", _at(CIPHERTEXT, lambda s: flip_bit(s, 0)), "decryption_failed"),
    ("ciphertext-last", _at(CIPHERTEXT, lambda s: flip_bit(s, -1, 0x80)), "decryption_failed"),
    ("tag-first", _at(TAG, lambda s: flip_bit(s, 0)), "decryption_failed"),
    ("tag-last", _at(TAG, lambda s: flip_bit(s, 15, 0x80)), "decryption_failed"),
]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [pytest.param(t, r, id=name) for name, t, r in OUTER_TAMPERING],
)
def test_tampered_jwe_is_refused(
    fed: TestFederation, envelope: bytes, tamper: Tamper, reason: str
) -> None:
    parts = segments(envelope)
    tamper(parts)
    tampered = joined(parts)
    assert tampered != envelope
    assert refusal(fed, tampered) == reason


# --- tampering with the inner JWS (re-encrypted, as a holder of the public key could) -----


def _flip_signature(signed: str) -> str:
    header, payload, signature = signed.split(".")
    return f"{header}.{payload}.{flip_bit(signature, 0)}"


def _with_payload(change: Callable[[dict[str, Any]], None]) -> Callable[[str], str]:
    """Keep header and signature, replace the payload with changed claims."""

    def tamper(signed: str) -> str:
        header, payload, signature = signed.split(".")
        claims = json.loads(b64url_decode(payload))
        change(claims)
        return f"{header}.{b64url(canonical_json(claims))}.{signature}"

    return tamper


def _set_recipient_authority(claims: dict[str, Any]) -> None:
    claims["recipient"]["authority"] = "gt-other-test"


def _set_case_ref(claims: dict[str, Any]) -> None:
    claims["body"]["case_ref"] = "TEST-2025-999999"


def _extend_expiry(claims: dict[str, Any]) -> None:
    claims["exp"] += 3600


def _reformat_payload(signed: str) -> str:
    # Same claims, different bytes (not canonical JSON): the signature is over bytes.
    header, payload, signature = signed.split(".")
    claims = json.loads(b64url_decode(payload))
    return f"{header}.{b64url(json.dumps(claims, indent=1).encode())}.{signature}"


INNER_TAMPERING: list[tuple[str, Callable[[str], str]]] = [
    ("signature-bit", _flip_signature),
    ("recipient-authority", _with_payload(_set_recipient_authority)),
    ("body-field", _with_payload(_set_case_ref)),
    ("expiry", _with_payload(_extend_expiry)),
    ("same-claims-other-bytes", _reformat_payload),
]


@pytest.mark.parametrize("tamper", [pytest.param(t, id=name) for name, t in INNER_TAMPERING])
def test_tampered_inner_jws_is_bad_signature(
    fed: TestFederation, envelope: bytes, tamper: Callable[[str], str]
) -> None:
    signed = fed.open(envelope, "GT").signed_jws
    forged = reseal_to(fed, tamper(signed), "GT")
    assert refusal(fed, forged) == "bad_signature"


def test_inner_header_is_checked_before_the_signature(
    fed: TestFederation, message: Message
) -> None:
    mx = fed.node("MX").signing_key
    claims = message.claims()

    def sealed(header: dict[str, Any]) -> bytes:
        return reseal_to(fed, sign_claims(claims, mx, header=header), "GT")

    good = {"alg": "Ed25519", "kid": mx.kid, "typ": MESSAGE_JWT_TYPE}
    assert fed.open(sealed(good), "GT").message == message
    # RFC 8037's "EdDSA" names the same signature; RFC 9864 deprecates it for "Ed25519".
    assert refusal(fed, sealed({**good, "alg": "EdDSA"})) == "unsupported_algorithm"
    assert refusal(fed, sealed({**good, "typ": "JWT"})) == "malformed_message"
    assert refusal(fed, sealed({**good, "crit": ["exp"]})) == "malformed_message"
    assert refusal(fed, seal_plaintext(b"not a jws", published_encryption_key(fed, "GT"))) == (
        "malformed_message"
    )
    assert refusal(fed, seal_plaintext("é".encode(), published_encryption_key(fed, "GT"))) == (
        "malformed_message"
    )


# --- addressing ------------------------------------------------------------------------------


def test_sealed_to_another_node_is_wrong_recipient(fed: TestFederation) -> None:
    to_gt = fed.message("MX", "GT")
    # HN can decrypt (sealed to its key) and the signature is MX's, but MX
    # addressed it to GT.
    assert refusal(fed, fed.seal(to_gt, to="HN"), "HN") == "wrong_recipient"


def test_recipient_cannot_forward_to_a_third_node(fed: TestFederation) -> None:
    envelope = fed.seal(fed.message("MX", "GT"))
    signed = fed.open(envelope, "GT").signed_jws
    forwarded = reseal_to(fed, signed, "HN")  # GT re-seals MX's signed message to HN
    assert refusal(fed, forwarded, "HN") == "wrong_recipient"
    assert refusal(fed, forwarded, "HN", peer_node="GT") == "sender_mismatch"


def test_iss_and_aud_are_checked_as_signed(fed: TestFederation, message: Message) -> None:
    # sender/recipient say MX -> GT, but the signed JWT claims disagree: a JWT
    # library on the other side would read iss/aud, so they must agree.
    assert refusal(fed, with_claims(fed, message, aud="HN")) == "wrong_recipient"
    assert refusal(fed, with_claims(fed, message, iss="HN")) == "sender_mismatch"


def test_unknown_authorities(fed: TestFederation, message: Message) -> None:
    claims = message.claims()
    sender = {**claims["sender"], "authority": "mx-unknown-test"}
    recipient = {**claims["recipient"], "authority": "gt-unknown-test"}
    assert refusal(fed, with_claims(fed, message, sender=sender)) == "unknown_authority"
    assert refusal(fed, with_claims(fed, message, recipient=recipient)) == "unknown_authority"
    # HN's authority is real, but not GT's.
    hn_authority = {"node": "GT", "authority": "hn-reception-test"}
    assert refusal(fed, with_claims(fed, message, recipient=hn_authority)) == "unknown_authority"


# --- time ------------------------------------------------------------------------------------


def test_expired(fed: TestFederation) -> None:
    message = fed.message("MX", "GT", now=NOW - dt.timedelta(hours=2))
    assert refusal(fed, fed.seal(message)) == "expired"
    # exp is exclusive: a message expiring exactly now is expired.
    at_edge = fed.message("MX", "GT", now=NOW - dt.timedelta(hours=1))
    assert refusal(fed, fed.seal(at_edge)) == "expired"
    fed.open(fed.seal(at_edge), "GT", now=NOW - dt.timedelta(seconds=1))


def test_issued_in_the_future(fed: TestFederation) -> None:
    ahead = fed.message("MX", "GT", now=NOW + MAX_CLOCK_SKEW + dt.timedelta(seconds=1))
    assert refusal(fed, fed.seal(ahead)) == "not_yet_valid"
    # Within the allowed clock skew it is accepted.
    fed.open(fed.seal(fed.message("MX", "GT", now=NOW + MAX_CLOCK_SKEW)), "GT")


def test_lifetime_too_long(fed: TestFederation) -> None:
    too_long = fed.message("MX", "GT", lifetime=MAX_LIFETIME + dt.timedelta(seconds=1))
    assert refusal(fed, fed.seal(too_long)) == "lifetime_too_long"
    fed.open(fed.seal(fed.message("MX", "GT", lifetime=MAX_LIFETIME)), "GT")


def test_times_out_of_range_are_refused_not_crashed(fed: TestFederation, message: Message) -> None:
    # 1e300 is an "integer" to JSON Schema (no fractional part) but no datetime.
    assert refusal(fed, with_claims(fed, message, exp=1e300)) == "malformed_message"
    assert refusal(fed, with_claims(fed, message, iat=1e300)) == "malformed_message"


# --- keys --------------------------------------------------------------------------------------


def test_unknown_sender_key(fed: TestFederation, message: Message) -> None:
    impostor = generate_signing_key()  # claims to be MX, key not in the directory
    forged = reseal_to(fed, sign_claims(message.claims(), impostor), "GT")
    assert refusal(fed, forged) == "unknown_sender_key"


def test_signer_must_be_the_tls_peer(fed: TestFederation, envelope: bytes) -> None:
    assert refusal(fed, envelope, peer_node="HN") == "sender_mismatch"
    assert fed.open(envelope, "GT", peer_node="MX").message.sender.node == "MX"


def test_signed_by_one_member_claiming_to_be_another(fed: TestFederation) -> None:
    # HN signs, with its own directory key, claims that say they come from MX.
    claims = fed.message("MX", "GT").claims()
    forged = reseal_to(fed, sign_claims(claims, fed.node("HN").signing_key), "GT")
    assert refusal(fed, forged) == "sender_mismatch"


def test_unknown_recipient_key(fed: TestFederation, message: Message) -> None:
    stranger = generate_encryption_key()
    sealed = seal(message, signing_key=fed.node("MX").signing_key, recipient_key=stranger)
    assert refusal(fed, sealed.encode("ascii")) == "unknown_recipient_key"


def test_recipient_kid_on_another_key_does_not_decrypt(
    fed: TestFederation, message: Message
) -> None:
    # The header names GT's key, but the ephemeral agreement was with another key.
    other = OKPKey.import_key(
        {
            **generate_encryption_key().as_dict(private=False),
            "kid": str(fed.node("GT").encryption_key.kid),
        }
    )
    sealed = seal(message, signing_key=fed.node("MX").signing_key, recipient_key=other)
    assert refusal(fed, sealed.encode("ascii")) == "decryption_failed"


# --- documents -----------------------------------------------------------------------------


def test_body_violating_the_schema(fed: TestFederation) -> None:
    body = {**sample_return_notice(), "favourite_colour": "blue"}
    assert refusal(fed, fed.seal(fed.message("MX", "GT", body=body))) == "schema_invalid"
    missing = {k: v for k, v in sample_return_notice().items() if k != "arrival"}
    assert refusal(fed, fed.seal(fed.message("MX", "GT", body=missing))) == "schema_invalid"


def test_schema_refusal_does_not_echo_case_content(fed: TestFederation) -> None:
    body = sample_return_notice()
    body["person"] = {**body["person"], "nationality": "Secret-Value-Test"}
    with pytest.raises(EnvelopeError) as info:
        fed.open(fed.seal(fed.message("MX", "GT", body=body)), "GT")
    assert info.value.reason == "schema_invalid"
    assert "Secret-Value-Test" not in str(info.value)


def test_unsupported_document(fed: TestFederation) -> None:
    unknown_type = fed.message("MX", "GT", doc_type="asylum_file")
    assert refusal(fed, fed.seal(unknown_type)) == "unsupported_document"
    other_version = fed.message("MX", "GT", schema="https://puente.int/schemas/return-notice/2.0")
    assert refusal(fed, fed.seal(other_version)) == "unsupported_document"
    wrong_schema = fed.message(
        "MX", "GT", schema="https://puente.int/schemas/receipt/1.0", doc_type="return_notice"
    )
    assert refusal(fed, fed.seal(wrong_schema)) == "unsupported_document"


def test_claims_violating_the_message_schema(fed: TestFederation, message: Message) -> None:
    assert refusal(fed, with_claims(fed, message, jti="not-a-uuid")) == "malformed_message"
    assert refusal(fed, with_claims(fed, message, extra=True)) == "malformed_message"
    signed = sign_claims(b"[1, 2, 3", fed.node("MX").signing_key)
    assert refusal(fed, reseal_to(fed, signed, "GT")) == "malformed_message"


# --- malformed input ------------------------------------------------------------------------


def _header_variant(envelope: bytes, **changes: Any) -> bytes:
    parts = segments(envelope)
    header = header_of(parts[PROTECTED])
    header.update(changes)
    parts[PROTECTED] = b64url(
        json.dumps({k: v for k, v in header.items() if v is not None}).encode()
    )
    return joined(parts)


def _without_kid(envelope: bytes) -> bytes:
    parts = segments(envelope)
    header = header_of(parts[PROTECTED])
    del header["kid"]
    parts[PROTECTED] = b64url(json.dumps(header).encode())
    return joined(parts)


MALFORMED: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("empty", lambda _: b"", "malformed_envelope"),
    ("non-ascii", lambda e: e[:10] + "é".encode() + e[10:], "malformed_envelope"),
    ("latin-1-byte", lambda e: e + b"\xff", "malformed_envelope"),
    ("four-parts", lambda e: e.rsplit(b".", 1)[0], "malformed_envelope"),
    ("six-parts", lambda e: e + b".AAAA", "malformed_envelope"),
    ("garbage-base64", lambda _: b"!!!!.!!.!!!!.!!!!.!!!!", "malformed_envelope"),
    ("not-base64-length", lambda _: b"a.b.c.d.e", "malformed_envelope"),
    ("padding", lambda e: e.replace(b".", b"==.", 1), "malformed_envelope"),
    ("standard-base64", lambda e: b"+" + e, "malformed_envelope"),
    ("whitespace", lambda e: e.replace(b".", b". ", 1), "malformed_envelope"),
    ("trailing-newline", lambda e: e + b"\n", "malformed_envelope"),
    (
        "header-not-json",
        lambda e: b64url(b"not json").encode() + e[e.index(b".") :],
        "malformed_envelope",
    ),
    ("header-array", lambda e: b64url(b"[]").encode() + e[e.index(b".") :], "malformed_envelope"),
    (
        "header-deeply-nested",
        lambda e: b64url(b"[" * 100_000).encode() + e[e.index(b".") :],
        "malformed_envelope",
    ),
    ("header-rsa", lambda e: _header_variant(e, alg="RSA-OAEP-256"), "unsupported_algorithm"),
    ("header-a128gcm", lambda e: _header_variant(e, enc="A128GCM"), "unsupported_algorithm"),
    ("header-dir", lambda e: _header_variant(e, alg="dir"), "unsupported_algorithm"),
    ("header-zip", lambda e: _header_variant(e, zip="DEF"), "unsupported_header"),
    ("header-crit", lambda e: _header_variant(e, crit=["exp"]), "unsupported_header"),
    ("header-no-kid", _without_kid, "unknown_recipient_key"),
    ("header-kid-number", lambda e: _header_variant(e, kid=7), "unknown_recipient_key"),
    (
        "header-epk-p256",
        lambda e: _header_variant(e, epk={"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
        "malformed_envelope",
    ),
    ("header-epk-string", lambda e: _header_variant(e, epk="x"), "malformed_envelope"),
    ("header-epk-missing", lambda e: _header_variant(e, epk=None), "malformed_envelope"),
    (
        "header-epk-all-zero",  # a low-order point: no shared secret, no decryption
        lambda e: _header_variant(e, epk={"kty": "OKP", "crv": "X25519", "x": b64url(bytes(32))}),
        "decryption_failed",
    ),
    ("oversized", lambda _: b"A" * (MAX_ENVELOPE_BYTES + 1), "envelope_too_large"),
    ("at-size-limit", lambda _: b"A" * MAX_ENVELOPE_BYTES, "malformed_envelope"),
]


@pytest.mark.parametrize(
    ("make", "reason"), [pytest.param(m, r, id=name) for name, m, r in MALFORMED]
)
def test_malformed_input(
    fed: TestFederation, envelope: bytes, make: Callable[[bytes], bytes], reason: str
) -> None:
    assert refusal(fed, make(envelope)) == reason


# --- fuzzing ----------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes_only_refused(fed: TestFederation, data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        fed.open(data, "GT")


_EPK = st.fixed_dictionaries(
    {
        "kty": st.sampled_from(["OKP", "EC", "RSA", "oct"]),
        "crv": st.sampled_from(["X25519", "X448", "Ed25519", "P-256", "secp256k1"]),
        "x": st.one_of(st.binary(max_size=64).map(b64url), st.text(max_size=10), st.integers()),
    },
    optional={"y": st.binary(max_size=40).map(b64url), "d": st.binary(max_size=40).map(b64url)},
)
_HEADER_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.sampled_from(["ECDH-ES", "A256GCM", "JWT", "dir", "A128KW", "DEF"]),
    st.lists(st.text(max_size=5), max_size=2),
    _EPK,
)


@FUZZ
@given(
    overrides=st.dictionaries(
        st.sampled_from(["alg", "enc", "kid", "epk", "cty", "typ", "zip", "crit"]), _HEADER_VALUE
    ),
    epk=st.one_of(st.none(), _EPK),
    drop=st.sets(st.sampled_from(["alg", "enc", "kid", "epk", "cty"])),
    replaced=st.dictionaries(
        st.integers(min_value=1, max_value=4), st.text(alphabet=B64URL_ALPHABET, max_size=64)
    ),
)
def test_fuzz_jwe_shaped_input_only_refused(
    fed: TestFederation,
    envelope: bytes,
    overrides: dict[str, Any],
    epk: dict[str, Any] | None,
    drop: set[str],
    replaced: dict[int, str],
) -> None:
    # Start from a real envelope (right kid, right algorithms) so that the hostile
    # header reaches the JOSE library's decryption, not only our own checks.
    parts = segments(envelope)
    header = {k: v for k, v in header_of(parts[PROTECTED]).items() if k not in drop}
    header.update(overrides)
    if epk is not None:
        header["epk"] = epk
    parts[PROTECTED] = b64url(json.dumps(header).encode())
    for index, text in replaced.items():
        parts[index] = text
    assume(joined(parts) != envelope)
    with pytest.raises(EnvelopeError):
        fed.open(joined(parts), "GT")


_mutation = st.one_of(
    st.tuples(st.just("replace"), st.integers(min_value=0), st.sampled_from(B64URL_ALPHABET + ".")),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.sampled_from(B64URL_ALPHABET + ".")),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.just("")),
    st.tuples(
        st.just("byte"), st.integers(min_value=0), st.sampled_from([chr(b) for b in range(256)])
    ),
)


def _mutate(text: str, mutations: list[tuple[str, int, str]]) -> bytes:
    chars = list(text)
    for kind, position, char in mutations:
        index = position % (len(chars) + 1)
        if kind == "insert" or (kind in ("replace", "byte") and index == len(chars)):
            chars.insert(index, char)
        elif kind in ("replace", "byte"):
            chars[index] = char
        elif chars:
            del chars[index % len(chars)]
    return "".join(chars).encode("latin-1")


@FUZZ
@given(mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_fuzz_mutated_envelope_never_opens(
    fed: TestFederation, envelope: bytes, mutations: list[tuple[str, int, str]]
) -> None:
    mutated = _mutate(envelope.decode("ascii"), mutations)
    assume(mutated != envelope)
    # Not even with the same claims: the header is GCM AAD and joserfc decodes
    # base64url strictly (no ignored trailing bits), so every other byte string
    # is either refused or a different ciphertext that fails authentication.
    with pytest.raises(EnvelopeError):
        fed.open(mutated, "GT")


@FUZZ
@given(
    segment=st.integers(min_value=0, max_value=4),
    position=st.integers(min_value=0),
    bit=st.integers(0, 7),
)
def test_fuzz_bit_flip_in_any_segment_never_opens(
    fed: TestFederation, envelope: bytes, segment: int, position: int, bit: int
) -> None:
    parts = segments(envelope)
    raw = bytearray(b64url_decode(parts[segment]))
    if raw:
        raw[position % len(raw)] ^= 1 << bit
    else:  # the empty encrypted key: any byte there
        raw.append(1 << bit)
    parts[segment] = b64url(bytes(raw))
    with pytest.raises(EnvelopeError):
        fed.open(joined(parts), "GT")


@FUZZ
@given(plaintext=st.binary(max_size=512))
def test_fuzz_arbitrary_plaintext_sealed_to_recipient_only_refused(
    fed: TestFederation, plaintext: bytes
) -> None:
    # Anyone with the directory can encrypt anything to GT: the inner layer is
    # as hostile as the outer one until the signature verifies.
    with pytest.raises(EnvelopeError):
        fed.open(seal_plaintext(plaintext, published_encryption_key(fed, "GT")), "GT")


@FUZZ
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=20), st.just("Ed25519")),
    ),
    payload=st.binary(max_size=256),
    signature=st.text(alphabet=B64URL_ALPHABET + "+/=!", max_size=100),
    use_real_kid=st.booleans(),
)
def test_fuzz_jws_shaped_plaintext_only_refused(
    fed: TestFederation,
    header: dict[str, Any],
    payload: bytes,
    signature: str,
    use_real_kid: bool,
) -> None:
    if use_real_kid:
        header.update(alg="Ed25519", typ=MESSAGE_JWT_TYPE, kid=fed.node("MX").signing_key.kid)
    signed = f"{b64url(json.dumps(header).encode())}.{b64url(payload)}.{signature}"
    with pytest.raises(EnvelopeError):
        fed.open(reseal_to(fed, signed, "GT"), "GT")


# --- interoperability with jwcrypto ----------------------------------------------------------


def _jwcrypto_key(key: OKPKey, *, private: bool) -> Any:
    return jwc_jwk.JWK(**key.as_dict(private=private))


def test_jwcrypto_opens_what_seal_makes(
    fed: TestFederation, message: Message, envelope: bytes
) -> None:
    recipient_private = _jwcrypto_key(fed.node("GT").encryption_key, private=True)
    member = fed.directory.node("MX")
    assert member is not None
    sender_kid = str(fed.node("MX").signing_key.kid)
    sender_public = jwc_jwk.JWK(**public_jwk(member.signing_keys[sender_kid]))

    outer = jwc_jwe.JWE()
    outer.allowed_algs = ["ECDH-ES", "A256GCM"]
    outer.deserialize(envelope.decode("ascii"), key=recipient_private)
    assert outer.jose_header["cty"] == "JWT"
    assert outer.jose_header["kid"] == recipient_private.thumbprint()

    inner = jwc_jws.JWS()
    inner.allowed_algs = ["Ed25519"]
    inner.deserialize(outer.payload.decode("ascii"))
    inner.verify(sender_public)
    assert inner.jose_header == {
        "alg": "Ed25519",
        "kid": sender_public.thumbprint(),
        "typ": MESSAGE_JWT_TYPE,
    }
    assert json.loads(inner.payload) == message.claims()
    assert inner.payload == canonical_json(message.claims())


def test_jwcrypto_verifies_a_receipt(
    fed: TestFederation, message: Message, envelope: bytes
) -> None:
    token = issue_receipt(
        message,
        envelope_sha256=hashlib.sha256(envelope).hexdigest(),
        received_at=NOW,
        signing_key=fed.node("GT").signing_key,
    )
    verifier = jwc_jws.JWS()
    verifier.allowed_algs = ["Ed25519"]
    verifier.deserialize(token)
    verifier.verify(jwc_jwk.JWK(**public_jwk(fed.node("GT").signing_key)))
    assert verifier.jose_header["typ"] == RECEIPT_JWT_TYPE
    assert json.loads(verifier.payload) == {
        "typ": "puente-receipt",
        "iss": "GT",
        "jti": message.message_id,
        "sender": {"node": "MX", "authority": "mx-inm-test"},
        "recipient": {"node": "GT", "authority": "gt-reception-test"},
        "envelope_sha256": hashlib.sha256(envelope).hexdigest(),
        "received_at": "2025-03-10T12:00:00Z",
    }


def _jwcrypto_envelope(fed: TestFederation, claims: Mapping[str, Any]) -> bytes:
    """An envelope built by jwcrypto only, from keys as the directory publishes them."""
    mx = fed.node("MX").signing_key
    gt_public = published_encryption_key(fed, "GT")
    signer = jwc_jws.JWS(canonical_json(claims))
    signer.allowed_algs = ["Ed25519"]
    signer.add_signature(
        _jwcrypto_key(mx, private=True),
        alg="Ed25519",
        protected=json.dumps({"alg": "Ed25519", "kid": mx.kid, "typ": MESSAGE_JWT_TYPE}),
    )
    sealer = jwc_jwe.JWE(
        signer.serialize(compact=True).encode("ascii"),
        protected=json.dumps(
            {"alg": "ECDH-ES", "enc": "A256GCM", "kid": gt_public.kid, "cty": "JWT"}
        ),
    )
    sealer.allowed_algs = ["ECDH-ES", "A256GCM"]
    sealer.add_recipient(jwc_jwk.JWK(**public_jwk(gt_public)))
    compact: str = sealer.serialize(compact=True)
    return compact.encode("ascii")


def test_open_envelope_accepts_what_jwcrypto_makes(fed: TestFederation) -> None:
    message = fed.message("MX", "GT")
    envelope = _jwcrypto_envelope(fed, message.claims())
    opened = fed.open(envelope, "GT", peer_node="MX")
    assert opened.message == message
    assert opened.signing_kid == fed.node("MX").signing_key.kid
    # And jwcrypto's envelope is refused for the same reasons as ours.
    assert refusal(fed, envelope, "HN") == "unknown_recipient_key"
    expired = fed.message("MX", "GT", now=NOW - dt.timedelta(days=1))
    assert refusal(fed, _jwcrypto_envelope(fed, expired.claims())) == "expired"


# --- receipts -----------------------------------------------------------------------------------


def _receipt(fed: TestFederation, message: Message, envelope: bytes, *, by: str = "GT") -> str:
    return issue_receipt(
        message,
        envelope_sha256=hashlib.sha256(envelope).hexdigest(),
        received_at=NOW,
        signing_key=fed.node(by).signing_key,
    )


def _receipt_refusal(
    fed: TestFederation,
    token: str,
    message: Message,
    envelope: bytes,
    *,
    recipient: str = "GT",
    message_id: str | None = None,
) -> str:
    with pytest.raises(ReceiptError) as info:
        verify_receipt(
            token,
            directory=fed.directory,
            expected_message_id=message_id or message.message_id,
            expected_recipient=recipient,
            expected_envelope_sha256=hashlib.sha256(envelope).hexdigest(),
        )
    return info.value.reason


def _signed_receipt(fed: TestFederation, claims: Mapping[str, Any], by: str = "GT") -> str:
    key = fed.node(by).signing_key
    header = {"alg": "Ed25519", "kid": key.kid, "typ": RECEIPT_JWT_TYPE}
    return rfc_jws.serialize_compact(header, canonical_json(claims), key, registry=ED25519)


def _receipt_claims(token: str) -> dict[str, Any]:
    claims = json.loads(b64url_decode(token.split(".")[1]))
    assert isinstance(claims, dict)
    return claims


def test_receipt_verifies(fed: TestFederation, message: Message, envelope: bytes) -> None:
    token = _receipt(fed, message, envelope)
    receipt = verify_receipt(
        token,
        directory=fed.directory,
        expected_message_id=message.message_id,
        expected_recipient="GT",
        expected_envelope_sha256=hashlib.sha256(envelope).hexdigest(),
    )
    assert receipt.message_id == message.message_id
    assert receipt.sender == message.sender
    assert receipt.recipient == message.recipient
    assert receipt.envelope_sha256 == hashlib.sha256(envelope).hexdigest()
    assert receipt.received_at == NOW
    assert receipt.signing_kid == fed.node("GT").signing_key.kid
    assert receipt.token == token


def test_receipt_signed_by_another_node(
    fed: TestFederation, message: Message, envelope: bytes
) -> None:
    by_hn = _receipt(fed, message, envelope, by="HN")  # claims iss GT, HN's key
    assert _receipt_refusal(fed, by_hn, message, envelope) == "receipt_unknown_key"
    # GT's own key, but a receipt that says it was issued by HN.
    other_issuer = {**_receipt_claims(_receipt(fed, message, envelope)), "iss": "HN"}
    token = _signed_receipt(fed, other_issuer)
    assert _receipt_refusal(fed, token, message, envelope) == "receipt_mismatch"
    # An expected recipient that is not a member at all.
    token = _receipt(fed, message, envelope)
    assert _receipt_refusal(fed, token, message, envelope, recipient="SV") == "receipt_unknown_key"


def test_receipt_for_another_message(
    fed: TestFederation, message: Message, envelope: bytes
) -> None:
    token = _receipt(fed, message, envelope)
    other_id = fed.message("MX", "GT").message_id
    assert _receipt_refusal(fed, token, message, envelope, message_id=other_id) == (
        "receipt_mismatch"
    )


def test_receipt_for_other_envelope_bytes(
    fed: TestFederation, message: Message, envelope: bytes
) -> None:
    resealed = fed.seal(message)  # same message, other bytes
    token = _receipt(fed, message, resealed)
    assert _receipt_refusal(fed, token, message, envelope) == "receipt_mismatch"


def test_receipt_with_flipped_signature_bit(
    fed: TestFederation, message: Message, envelope: bytes
) -> None:
    header, payload, signature = _receipt(fed, message, envelope).split(".")
    for index, mask in ((0, 0x01), (63, 0x80)):
        token = f"{header}.{payload}.{flip_bit(signature, index, mask)}"
        assert _receipt_refusal(fed, token, message, envelope) == "receipt_bad_signature"
    forged = {
        **_receipt_claims(f"{header}.{payload}.{signature}"),
        "received_at": "2025-01-01T00:00:00Z",
    }
    token = f"{header}.{b64url(canonical_json(forged))}.{signature}"
    assert _receipt_refusal(fed, token, message, envelope) == "receipt_bad_signature"


def test_malformed_receipts(fed: TestFederation, message: Message, envelope: bytes) -> None:
    for token in ("", "a.b", "a.b.c.d", "!!!.b.c", f"{b64url(b'[' * 100_000)}.b.c"):
        assert _receipt_refusal(fed, token, message, envelope) == "receipt_malformed"
    # A signed message is not a receipt, even though both are Ed25519 JWS by a member.
    signed_message = fed.open(envelope, "GT").signed_jws
    assert _receipt_refusal(fed, signed_message, message, envelope) == "receipt_malformed"
    claims = _receipt_claims(_receipt(fed, message, envelope))
    for bad in ({**claims, "extra": 1}, {**claims, "envelope_sha256": "ABC"}):
        token = _signed_receipt(fed, bad)
        assert _receipt_refusal(fed, token, message, envelope) == "receipt_malformed"
    # RFC 3339 allows a lower-case "t" and "z"; the schema accepts them, the parser
    # must not crash on them.
    lower = _signed_receipt(fed, {**claims, "received_at": "2025-03-10t12:00:00z"})
    assert _receipt_refusal(fed, lower, message, envelope) == "receipt_malformed"
