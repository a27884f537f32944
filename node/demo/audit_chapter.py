"""The demo's last chapter: each node's signed, witnessed checkpoint and the verifier's verdict."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from audit.verify import verify_export
from node.auditlog import entries as audit
from node.auditlog.export import export_log
from node.auditlog.witness_rounds import witness_round
from node.storage.context import NodeContext


async def tell_audit_story(contexts: Mapping[str, NodeContext], base: Path, out: TextIO) -> bool:
    """Checkpoint, witness, export and independently verify every node's log. True if all hold."""
    ok = True
    print("\nAudit logs (RFC 9162 Merkle trees, C2SP checkpoints cosigned by peers):", file=out)
    for node_id, ctx in contexts.items():
        results = await witness_round(ctx)  # on demand: sign, get witnessed, compare notes
        own = [r for r in results if ctx.audit and r.origin == ctx.audit.origin]
        export_dir = base / node_id / "audit-export"
        summary = await export_log(ctx, export_dir)
        report = verify_export(export_dir)
        async with ctx.sessions() as session:
            damaged = await audit.first_damaged_entry(session)
            note = (export_dir / "checkpoint").read_text("utf-8")
        ok = ok and report.ok and damaged is None
        witnesses = ", ".join(f"{r.witness} {r.outcome}" for r in own) or "no peers"
        print(f"\n  {node_id}: {summary.entries} entries; witnesses: {witnesses}", file=out)
        for line in note.splitlines():
            print(f"    | {line}", file=out)
        print(f"    independent verifier on {export_dir}:", file=out)
        for line in report.verdict().splitlines():
            print(f"      {line}", file=out)
    return ok
