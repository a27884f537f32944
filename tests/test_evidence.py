"""Evidence export: a third party checks envelopes and receipts with another JOSE library."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jwcrypto import jwe, jwk, jws

from node.delivery.outbox import queue_disclosure
from node.intake.evidence import export_evidence
from tests.support.nodes import DatabaseFactory, live_federation

NOTICE = {
    "case_ref": "MX-TEST-2026-000009",
    "person": {"given_names": "Rosa Prueba", "family_names": "Inventada"},
    "arrival": {
        "date": "2026-12-03",
        "place_of_entry": "Puesto fronterizo de prueba",
        "means": "land",
    },
}


async def test_exported_evidence_verifies_with_jwcrypto(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path / "fed", database_factory) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        for _ in range(2):
            await queue_disclosure(
                mx.ctx,
                sender_authority="mx-inm",
                recipient_node="GT",
                recipient_authority="gt-reception",
                doc_type="return_notice",
                body=NOTICE,
            )
        assert await mx.deliverer.run_once() == 2
        out = tmp_path / "evidence"
        assert await export_evidence(gt.ctx, out) == 2
        gt_private = next((gt.ctx.config.keys_dir / "encryption").glob("*.jwk")).read_text()

    # From here on: only the exported files, the recipient's key and jwcrypto.
    index = json.loads((out / "index.json").read_text())
    signed_directory = json.loads((out / "directory.json").read_text())
    trust_root = json.loads((out / "trust-root.json").read_text())
    operator = jwk.JWK(**trust_root["keys"][0])
    directory_jws = jws.JWS()
    directory_jws.deserialize(json.dumps(signed_directory))
    directory_jws.allowed_algs = ["Ed25519"]
    directory_jws.verify(operator)
    directory = json.loads(directory_jws.payload)
    nodes_by_id = {n["id"]: n for n in directory["nodes"]}
    recipient_key = jwk.JWK.from_json(gt_private)

    assert len(index) == 2
    for item in index:
        envelope = (out / item["envelope"]).read_bytes()
        assert hashlib.sha256(envelope).hexdigest() == item["envelope_sha256"]
        outer = jwe.JWE()
        outer.deserialize(envelope.decode(), key=recipient_key)
        inner = jws.JWS()
        inner.deserialize(outer.payload.decode())
        inner.allowed_algs = ["Ed25519"]
        inner.verify(jwk.JWK(**nodes_by_id["MX"]["signing_keys"][0]))
        claims = json.loads(inner.payload)
        assert claims["jti"] == item["message_id"]
        assert claims["aud"] == "GT" and claims["iss"] == "MX"
        assert claims["body"] == NOTICE

        receipt = jws.JWS()
        receipt.deserialize((out / item["receipt"]).read_text())
        receipt.allowed_algs = ["Ed25519"]
        receipt.verify(jwk.JWK(**nodes_by_id["GT"]["signing_keys"][0]))
        receipt_claims = json.loads(receipt.payload)
        assert receipt_claims["jti"] == item["message_id"]
        assert receipt_claims["envelope_sha256"] == item["envelope_sha256"]
