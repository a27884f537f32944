"""The signed federation directory (node/directory.py): pure tests, no I/O but temp files.

A node trusts the directory for every key and TLS pin it uses, so each refusal
is asserted by reason code: a directory that verifies when it should not is the
worst failure this module can have.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey

from node.core.canonical import b64url, b64url_decode, canonical_json
from node.core.errors import DirectoryError, KeyStoreError
from node.trust.acceptance import verify_directory
from node.trust.directory import (
    DIRECTORY_JWS_TYPE,
    Directory,
    TrustRoot,
    merge_signatures,
    sign_directory,
)
from node.trust.keys import ENCRYPTION_CURVE, generate_signing_key, import_public_jwk, public_jwk
from node.trust.operator import trust_root_document
from tests.support.pki import FEDERATION, TestFederation, build_federation

NOW = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
NODES = [
    ("MX", "mx-inm-test", "migration_authority"),
    ("GT", "gt-reception-test", "reception_centre"),
    ("HN", "hn-reception-test", "reception_centre"),
]
_ED25519 = jws.JWSRegistry(algorithms=["Ed25519"])


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> TestFederation:
    return build_federation(NODES, now=NOW, tls_dir=tmp_path_factory.mktemp("pki"))


def document(fed: TestFederation) -> dict[str, Any]:
    """A deep copy of the federation's directory document, free to modify."""
    return copy.deepcopy(dict(fed.document))


def trust(keys: Iterable[OKPKey], threshold: int = 1, federation: str = FEDERATION) -> TrustRoot:
    return TrustRoot.from_document(trust_root_document(federation, keys, threshold))


def refusal(signed: Mapping[str, Any], trust_root: TrustRoot, now: dt.datetime = NOW) -> str:
    with pytest.raises(DirectoryError) as info:
        verify_directory(signed, trust_root, now=now)
    return info.value.reason


def raw_signed(
    payload: bytes, keys: Iterable[OKPKey], *, typ: str = DIRECTORY_JWS_TYPE
) -> dict[str, Any]:
    """A JWS JSON General Serialization over any bytes, skipping sign_directory's checks.

    This is what a careless or compromised operator tool could publish; the
    receiving node must not rely on the signer having validated anything.
    """
    signatures = []
    for key in keys:
        header = {"alg": "Ed25519", "kid": key.kid, "typ": typ}
        protected, _, signature = jws.serialize_compact(
            header, payload, key, registry=_ED25519
        ).split(".")
        signatures.append({"protected": protected, "signature": signature})
    return {"payload": b64url(payload), "signatures": signatures}


def node_entry(doc: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    entry = next(n for n in doc["nodes"] if n["id"] == node_id)
    assert isinstance(entry, dict)
    return entry


# --- the good path -------------------------------------------------------------------------


def test_sign_verify_round_trip(fed: TestFederation) -> None:
    # Through JSON text and back, as it travels in directory.json.
    signed = json.loads(json.dumps(sign_directory(fed.document, [fed.operator_key])))
    directory = verify_directory(signed, fed.trust_root, now=NOW)

    assert isinstance(directory, Directory)
    assert directory.federation == "test-federation"
    assert directory.version == 1
    assert directory.issued_at == NOW
    assert directory.expires_at == NOW + dt.timedelta(days=30)
    assert set(directory.nodes) == {"MX", "GT", "HN"}
    assert directory.digest == hashlib.sha256(canonical_json(fed.document)).hexdigest()
    assert b64url_decode(signed["payload"]) == canonical_json(fed.document)

    for node_id, test_node in fed.nodes.items():
        member = directory.node(node_id)
        assert member is not None
        assert member.endpoint == f"https://{node_id.lower()}.puente.test:8443"
        signing_kid = str(test_node.signing_key.kid)
        encryption_kid = str(test_node.encryption_key.kid)
        assert list(member.signing_keys) == [signing_kid]
        assert list(member.encryption_keys) == [encryption_kid]
        published = member.signing_keys[signing_kid]
        assert not published.is_private
        assert public_jwk(published) == public_jwk(test_node.signing_key)
        assert member.current_encryption_key.thumbprint() == encryption_kid
        assert member.tls_certificates == {test_node.tls.pin: test_node.tls.cert_der}
        assert directory.node_by_pin(test_node.tls.pin) == member
        assert set(member.authorities) == {test_node.authority}
        assert member.authorities[test_node.authority].kind == test_node.authority_kind
    assert directory.node("SV") is None
    assert directory.node_by_pin("A" * 43) is None
    assert len(directory.pinned_certificates()) == 3


def test_current_encryption_key_is_the_last_listed(fed: TestFederation) -> None:
    doc = document(fed)
    entry = node_entry(doc, "GT")
    newer = OKPKey.generate_key("X25519")
    newer_jwk = {**public_jwk(newer), "kid": newer.thumbprint()}
    entry["encryption_keys"].append(newer_jwk)
    directory = verify_directory(sign_directory(doc, [fed.operator_key]), fed.trust_root, now=NOW)
    member = directory.node("GT")
    assert member is not None
    assert len(member.encryption_keys) == 2
    assert member.current_encryption_key.thumbprint() == newer.thumbprint()


# --- signatures and threshold --------------------------------------------------------------


def test_signature_by_untrusted_key(fed: TestFederation) -> None:
    stranger = generate_signing_key()
    assert refusal(sign_directory(fed.document, [stranger]), fed.trust_root) == (
        "directory_under_threshold"
    )
    # A stranger's key carrying a trusted operator's kid does not verify either.
    impostor = OKPKey.import_key(
        {**generate_signing_key().as_dict(private=True), "kid": str(fed.operator_key.kid)}
    )
    assert refusal(sign_directory(fed.document, [impostor]), fed.trust_root) == (
        "directory_under_threshold"
    )


def test_threshold_two(fed: TestFederation) -> None:
    first, second = generate_signing_key(), generate_signing_key()
    root = trust([first, second], threshold=2)
    by_first = sign_directory(fed.document, [first])
    by_second = sign_directory(fed.document, [second])

    assert refusal(by_first, root) == "directory_under_threshold"
    assert refusal(by_second, root) == "directory_under_threshold"
    # The same operator twice is still one operator.
    assert refusal(merge_signatures(by_first, by_first), root) == "directory_under_threshold"
    doubled = {**by_first, "signatures": by_first["signatures"] * 2}
    assert refusal(doubled, root) == "directory_under_threshold"
    # One trusted and one untrusted signature is not two.
    with_stranger = merge_signatures(
        by_first, sign_directory(fed.document, [generate_signing_key()])
    )
    assert refusal(with_stranger, root) == "directory_under_threshold"

    merged = merge_signatures(by_first, by_second)
    assert len(merged["signatures"]) == 2
    assert verify_directory(merged, root, now=NOW).version == 1
    # Signing with both keys at once gives the same acceptance.
    assert verify_directory(sign_directory(fed.document, [first, second]), root, now=NOW)


def test_merge_refuses_different_payloads(fed: TestFederation) -> None:
    other = {**document(fed), "version": 2}
    with pytest.raises(DirectoryError) as info:
        merge_signatures(
            sign_directory(fed.document, [fed.operator_key]),
            sign_directory(other, [fed.operator_key]),
        )
    assert info.value.reason == "payload_mismatch"


def test_tampered_payload(fed: TestFederation) -> None:
    signed = sign_directory(fed.document, [fed.operator_key])
    doc = document(fed)
    node_entry(doc, "GT")["endpoint"] = "https://attacker.puente.test"
    tampered = {**signed, "payload": b64url(canonical_json(doc))}
    assert refusal(tampered, fed.trust_root) == "directory_under_threshold"
    # Same document, other bytes (not canonical): the signature is over bytes.
    reformatted = {**signed, "payload": b64url(json.dumps(fed.document).encode())}
    assert refusal(reformatted, fed.trust_root) == "directory_under_threshold"


def test_flipped_signature_bit(fed: TestFederation) -> None:
    signed = sign_directory(fed.document, [fed.operator_key])
    sig = signed["signatures"][0]
    raw = bytearray(b64url_decode(sig["signature"]))
    raw[0] ^= 0x01
    flipped = {**signed, "signatures": [{**sig, "signature": b64url(bytes(raw))}]}
    assert refusal(flipped, fed.trust_root) == "directory_under_threshold"


def test_signature_of_another_type_does_not_count(fed: TestFederation) -> None:
    # The operator key signing something that is not a directory (another typ)
    # must not be usable as a directory signature.
    payload = canonical_json(fed.document)
    other_typ = raw_signed(payload, [fed.operator_key], typ="puente-msg+jwt")
    assert refusal(other_typ, fed.trust_root) == "directory_under_threshold"


def test_junk_signature_entries_are_ignored(fed: TestFederation) -> None:
    signed = sign_directory(fed.document, [fed.operator_key])
    junk: list[Any] = [
        "not an object",
        {"protected": 1, "signature": "AAAA"},
        {"protected": b64url(b"[]"), "signature": "AAAA"},  # valid JSON, not an object
        {"protected": b64url(b"null"), "signature": "AAAA"},
        {"protected": b64url(b"not json"), "signature": "AAAA"},
        {"protected": b64url(b"[" * 100_000), "signature": "AAAA"},
    ]
    with_junk = {**signed, "signatures": junk + signed["signatures"]}
    assert verify_directory(with_junk, fed.trust_root, now=NOW).version == 1
    assert refusal({**signed, "signatures": junk}, fed.trust_root) == "directory_under_threshold"


@pytest.mark.parametrize(
    "wrapper",
    [
        pytest.param([], id="not-an-object"),
        pytest.param({"signatures": []}, id="no-payload"),
        pytest.param({"payload": "e30", "signatures": "x"}, id="signatures-not-a-list"),
        pytest.param({"payload": 7, "signatures": []}, id="payload-not-a-string"),
    ],
)
def test_malformed_wrapper(fed: TestFederation, wrapper: Any) -> None:
    assert refusal(wrapper, fed.trust_root) == "directory_malformed"


def test_signed_payload_that_is_not_json(fed: TestFederation) -> None:
    assert refusal(raw_signed(b"not json", [fed.operator_key]), fed.trust_root) == (
        "directory_malformed"
    )


# --- validity --------------------------------------------------------------------------------


def test_expired(fed: TestFederation) -> None:
    expires = NOW + dt.timedelta(days=30)
    assert refusal(fed.signed_directory, fed.trust_root, now=expires) == "directory_expired"
    later = expires + dt.timedelta(days=1)
    assert refusal(fed.signed_directory, fed.trust_root, now=later) == "directory_expired"
    just_before = expires - dt.timedelta(seconds=1)
    assert verify_directory(fed.signed_directory, fed.trust_root, now=just_before).version == 1


def test_wrong_federation(fed: TestFederation) -> None:
    # Same operator key, but this node belongs to another federation.
    other_root = trust([fed.operator_key], federation="other-federation")
    assert refusal(fed.signed_directory, other_root) == "wrong_federation"
    # And a document for another federation, signed by our own operator.
    doc = {**document(fed), "federation": "other-federation"}
    assert refusal(sign_directory(doc, [fed.operator_key]), fed.trust_root) == "wrong_federation"


# --- document contents -----------------------------------------------------------------------


def _refused_document(fed: TestFederation, doc: Mapping[str, Any]) -> str:
    """Sign without sign_directory's checks, and return verify_directory's reason."""
    return refusal(raw_signed(canonical_json(doc), [fed.operator_key]), fed.trust_root)


def test_pin_not_matching_certificate(fed: TestFederation) -> None:
    doc = document(fed)
    gt_tls = node_entry(doc, "GT")["tls"][0]
    gt_tls["x5t#S256"] = node_entry(doc, "HN")["tls"][0]["x5t#S256"]  # well formed, wrong
    assert _refused_document(fed, doc) == "directory_invalid"
    # sign_directory checks the schema only, so it signs this; the verifier refuses.
    assert refusal(sign_directory(doc, [fed.operator_key]), fed.trust_root) == "directory_invalid"

    doc = document(fed)
    node_entry(doc, "GT")["tls"][0]["x5c"] = node_entry(doc, "HN")["tls"][0]["x5c"]
    assert _refused_document(fed, doc) == "directory_invalid"


def test_certificate_that_is_not_base64(fed: TestFederation) -> None:
    doc = document(fed)
    node_entry(doc, "GT")["tls"][0]["x5c"] = ["QUJDA"]  # matches the schema pattern, bad length
    assert _refused_document(fed, doc) == "directory_invalid"


@pytest.mark.parametrize("kind", ["signing_keys", "encryption_keys"])
def test_published_private_key(fed: TestFederation, kind: str) -> None:
    doc = document(fed)
    node = fed.node("GT")
    private = node.signing_key if kind == "signing_keys" else node.encryption_key
    node_entry(doc, "GT")[kind] = [private.as_dict(private=True)]
    assert "d" in node_entry(doc, "GT")[kind][0]
    with pytest.raises(DirectoryError) as info:
        sign_directory(doc, [fed.operator_key])
    assert info.value.reason == "directory_invalid"
    assert _refused_document(fed, doc) == "directory_invalid"


def test_import_public_jwk_refuses_private_part(fed: TestFederation) -> None:
    # The second line of defence behind the schema, used for every directory key.
    with pytest.raises(KeyStoreError) as info:
        import_public_jwk(
            dict(fed.node("GT").encryption_key.as_dict(private=True)), curve=ENCRYPTION_CURVE
        )
    assert info.value.reason == "private_key_published"


def test_key_on_the_wrong_curve(fed: TestFederation) -> None:
    doc = document(fed)
    # An Ed25519 key published as an encryption key.
    node_entry(doc, "GT")["encryption_keys"] = [public_jwk(fed.node("GT").signing_key)]
    assert _refused_document(fed, doc) == "directory_invalid"


def test_duplicate_node_id(fed: TestFederation) -> None:
    doc = document(fed)
    impostor = copy.deepcopy(node_entry(doc, "HN"))
    impostor["id"] = "GT"
    impostor["name"] = "Second GT"
    doc["nodes"].append(impostor)
    assert refusal(sign_directory(doc, [fed.operator_key]), fed.trust_root) == "directory_invalid"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("expires_at", "2025-04-09t12:00:00z", id="lower-case-rfc3339"),
        pytest.param("expires_at", "not a date", id="not-a-date"),
        pytest.param("version", 0, id="version-zero"),
        pytest.param("federation", "Test Federation", id="federation-pattern"),
        pytest.param("extra", True, id="unknown-member"),
    ],
)
def test_invalid_document_fields(fed: TestFederation, field: str, value: Any) -> None:
    doc = {**document(fed), field: value}
    assert _refused_document(fed, doc) == "directory_invalid"


# --- trust root ----------------------------------------------------------------------------


def test_trust_root_refusals(fed: TestFederation) -> None:
    key = fed.operator_key
    with pytest.raises(DirectoryError) as info:
        TrustRoot.from_document(trust_root_document(FEDERATION, [key], threshold=2))
    assert info.value.reason == "trust_root_invalid"
    with pytest.raises(DirectoryError) as info:
        TrustRoot.from_document(trust_root_document(FEDERATION, [key], threshold=0))
    assert info.value.reason == "trust_root_invalid"
    with pytest.raises(DirectoryError) as info:
        TrustRoot.from_document(
            {"federation": FEDERATION, "threshold": 1, "keys": [key.as_dict(private=True)]}
        )
    assert info.value.reason == "trust_root_invalid"
