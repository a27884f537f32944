"""docs/envelope.md's worked example is real: its test-vector keys open and re-sign it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from jwcrypto import jwe, jwk, jws

from node.core.canonical import b64url_decode

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "envelope.md").read_text(encoding="utf-8")
VECTORS = ROOT / "tests" / "vectors" / "envelope-example"


def _block_after(heading: str) -> str:
    match = re.search(rf"^### {re.escape(heading)}\n.*?```\n(.+?)\n```", DOC, re.S | re.M)
    assert match is not None, heading
    return match.group(1).strip()


def test_the_documented_envelope_opens_with_the_test_vector_key() -> None:
    recipient = jwk.JWK.from_json((VECTORS / "gt-encryption.jwk").read_text())
    outer = jwe.JWE()
    outer.allowed_algs = ["ECDH-ES", "A256GCM"]
    outer.deserialize(_block_after("Envelope (JWE)"), key=recipient)
    inner_jws = outer.payload.decode("ascii")
    assert inner_jws == _block_after("Inner JWS")

    signer = jwk.JWK.from_json((VECTORS / "mx-signing.jwk").read_text())
    inner = jws.JWS()
    inner.allowed_algs = ["Ed25519"]
    inner.deserialize(inner_jws)
    inner.verify(signer)  # the public half of the vector verifies the documented JWS
    # Ed25519 is deterministic: re-signing the same bytes gives the same signature.
    header, _payload, signature = inner_jws.split(".")
    again = jws.JWS(inner.payload)
    again.add_signature(signer, None, protected=b64url_decode(header).decode("utf-8"))
    assert json.loads(again.serialize())["signature"] == signature
    # The vectors are the documented keys: their public parts appear on the page.
    for name in ("gt-encryption.jwk", "mx-signing.jwk"):
        public = json.loads((VECTORS / name).read_text())
        assert public["x"] in DOC and public["d"] not in DOC
