"""``puente evidence export``: received envelopes and receipts for third parties.

For every received message the export holds the envelope exactly as received
and the signed receipt, plus the signed directory and trust root in force, so
that anyone holding the recipient's private key can check them with any
RFC-conformant JOSE library (docs/envelope.md shows how). An erased case
summary (crypto-shredded, docs/consent-and-policy.md) is listed with its
digest, its receipt and ``"erased": true``, and no envelope bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from node.intake.datakeys import DataKeyError
from node.intake.summaries import key_store, open_envelope_bytes
from node.storage.consent_models import ReceivedSummary
from node.storage.context import NodeContext
from node.storage.models import ReceivedMessage


async def export_evidence(ctx: NodeContext, out: Path) -> int:
    """Write ``out/messages/<sender>/<id>.jwe|.receipt.jws`` and an index. Returns the count."""
    out.mkdir(parents=True, exist_ok=True)
    store = key_store(ctx)
    index = []
    async with ctx.sessions() as session:
        rows = (
            await session.execute(select(ReceivedMessage).order_by(ReceivedMessage.id))
        ).scalars()
        sealed = {
            s.received_message_id: s
            for s in (await session.execute(select(ReceivedSummary))).scalars()
        }
        for row in rows:
            folder = out / "messages" / row.sender_node
            folder.mkdir(parents=True, exist_ok=True)
            envelope_file = folder / f"{row.message_id}.jwe"
            receipt_file = folder / f"{row.message_id}.receipt.jws"
            receipt_file.write_text(row.receipt, encoding="ascii")
            item: dict[str, object] = {
                "message_id": row.message_id,
                "sender": row.sender_node,
                "recipient": ctx.node_id,
                "envelope": str(envelope_file.relative_to(out)),
                "envelope_sha256": row.envelope_sha256,
                "receipt": str(receipt_file.relative_to(out)),
                "received_at": row.received_at.isoformat(),
            }
            summary = sealed.get(row.id)
            envelope = row.envelope
            if summary is not None:
                # A case summary is held only encrypted under its own data key; once that
                # key is destroyed (erasure) only the digest and the receipt remain.
                try:
                    envelope = open_envelope_bytes(store, summary)
                except DataKeyError:
                    envelope = None
                    item["envelope"] = None
                    item["erased"] = True
                    item["erased_at"] = summary.erased_at.isoformat() if summary.erased_at else None
                    item["erasure_reason"] = summary.erasure_reason
            if envelope is not None:
                envelope_file.write_bytes(envelope)
            index.append(item)
    (out / "directory.json").write_text(
        json.dumps(dict(ctx.directory.signed), indent=2), encoding="utf-8"
    )
    (out / "trust-root.json").write_text(
        ctx.config.trust_root_path.read_text(encoding="utf-8"), encoding="utf-8"
    )
    (out / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return len(index)
