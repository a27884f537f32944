"""``puente evidence export``: received envelopes and receipts for third parties.

For every received message the export holds the envelope exactly as received
and the signed receipt, plus the signed directory and trust root in force, so
that anyone holding the recipient's private key can check them with any
RFC-conformant JOSE library (docs/envelope.md shows how).
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from node.context import NodeContext
from node.storage.models import ReceivedMessage


async def export_evidence(ctx: NodeContext, out: Path) -> int:
    """Write ``out/messages/<sender>/<id>.jwe|.receipt.jws`` and an index. Returns the count."""
    out.mkdir(parents=True, exist_ok=True)
    index = []
    async with ctx.sessions() as session:
        rows = (
            await session.execute(select(ReceivedMessage).order_by(ReceivedMessage.id))
        ).scalars()
        for row in rows:
            folder = out / "messages" / row.sender_node
            folder.mkdir(parents=True, exist_ok=True)
            envelope_file = folder / f"{row.message_id}.jwe"
            receipt_file = folder / f"{row.message_id}.receipt.jws"
            envelope_file.write_bytes(row.envelope)
            receipt_file.write_text(row.receipt, encoding="ascii")
            index.append(
                {
                    "message_id": row.message_id,
                    "sender": row.sender_node,
                    "recipient": ctx.node_id,
                    "envelope": str(envelope_file.relative_to(out)),
                    "envelope_sha256": row.envelope_sha256,
                    "receipt": str(receipt_file.relative_to(out)),
                    "received_at": row.received_at.isoformat(),
                }
            )
    (out / "directory.json").write_text(
        json.dumps(dict(ctx.directory.signed), indent=2), encoding="utf-8"
    )
    (out / "trust-root.json").write_text(
        ctx.config.trust_root_path.read_text(encoding="utf-8"), encoding="utf-8"
    )
    (out / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return len(index)
