"""The floor: sealing, opening and schema-validating in one process, no network, no DB.

Every disclosure costs at least this whatever else happens: the sender
validates the minimized body and seals it (JWS Ed25519 inside JWE
ECDH-ES/X25519/A256GCM), the recipient opens it (decrypts, verifies the
signature against the directory, checks times and parties, validates the body
against its schema). The end-to-end figures are compared with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.stats import rate
from bench.workload import ROUTES, SPECS, PlannedMessage, planned_message
from node.core import schemas
from node.demo.local_federation import build_local_federation
from node.storage.context import NodeContext, open_node
from node.wire.envelope import Message, Party, open_envelope, seal


def _federation(base: Path, now: dt.datetime) -> dict[str, NodeContext]:
    dirs = build_local_federation(base, SPECS, federation="bench-floor", now=now)
    return {node_id: open_node(path) for node_id, path in dirs.items()}


def _measure_one(
    planned: PlannedMessage, nodes: dict[str, NodeContext], now: dt.datetime, seconds: float
) -> dict[str, Any]:
    route = planned.route
    sender, recipient = nodes[route.sender_node], nodes[route.recipient_node]
    peer = sender.directory.node(route.recipient_node)
    assert peer is not None
    recipient_key = peer.encryption_key_at(now)
    schema_id = schemas.DOCUMENT_SCHEMAS[route.doc_type]

    def message() -> Message:
        return Message(
            message_id=str(uuid.uuid4()),
            sender=Party(route.sender_node, route.sender_authority),
            recipient=Party(route.recipient_node, route.recipient_authority),
            doc_type=route.doc_type,
            schema=schema_id,
            issued_at=int(now.timestamp()),
            expires_at=int(now.timestamp()) + 3600,
            body=planned.body,
            terms=planned.terms,
        )

    def validate() -> None:
        schemas.validate(schema_id, planned.body)

    def seal_one() -> str:
        return seal(message(), signing_key=sender.keys.signing, recipient_key=recipient_key)

    def open_one(envelope: bytes) -> object:
        return open_envelope(
            envelope,
            own_node=route.recipient_node,
            own_encryption_keys=recipient.keys.encryption,
            directory=recipient.directory,
            now=now,
            peer_node=route.sender_node,
        )

    sealed = seal_one().encode("ascii")

    def whole() -> object:
        validate()
        return open_one(seal_one().encode("ascii"))

    figures = {
        "doc_type": route.doc_type,
        "purpose": route.purpose,
        "body_fields": len(planned.body),
        "envelope_bytes": len(sealed),
        "validate_per_s": rate(validate, seconds),
        "seal_per_s": rate(seal_one, seconds),
        "open_per_s": rate(lambda: open_one(sealed), seconds),
        "floor_per_s": rate(whole, seconds),
    }
    with _reference_validation_only():
        figures["floor_jsonschema_only_per_s"] = rate(whole, seconds)
    return figures


@contextlib.contextmanager
def _reference_validation_only() -> Iterator[None]:
    """The floor as it was before the compiled fast path (node.core.schemas), for comparison."""
    fast = schemas._fast_accepts
    schemas._fast_accepts = lambda _schema_id, _instance: False  # type: ignore[assignment]
    try:
        yield
    finally:
        schemas._fast_accepts = fast


def run(*, quick: bool) -> dict[str, Any]:
    """Messages/s of validate, seal, open and the whole floor, per document type."""
    seconds = 1.0 if quick else 3.0
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="puente-bench-floor-") as tmp:
        nodes = _federation(Path(tmp), now)
        try:
            return {
                name: _measure_one(planned_message(route, now), nodes, now, seconds)
                for name, route in ROUTES.items()
            }
        finally:
            for ctx in nodes.values():
                ctx.engine.sync_engine.dispose()
