"""``puente audit export --out DIR``: everything an auditor needs to verify the log offline.

Writes the files ``audit/verify.py`` reads (see its docstring and
docs/audit-log.md): ``entries.jsonl`` (every entry exactly as hashed, in log
order), ``checkpoint`` (the latest signed note with its cosignatures),
``vkey``, ``witnesses``, ``directory.json`` (the signed federation directory),
``leaf-hashes`` and ``checkpoints/<size>``.
Entries are streamed in batches, so a log of millions exports in constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from node.auditlog.checkpoints import cosigned_note, identity_of, issue_checkpoint
from node.auditlog.entries import log_size
from node.auditlog.witness_rounds import witnesses
from node.storage.audit_models import AuditCheckpoint, AuditTreeNode
from node.storage.context import NodeContext
from node.storage.models import AuditEntry

BATCH = 10_000


@dataclass(frozen=True)
class ExportSummary:
    entries: int
    tree_size: int
    directory: Path


async def export_log(ctx: NodeContext, out: Path) -> ExportSummary:
    """Write the export; signs a checkpoint first if the log has grown since the last one."""
    identity = identity_of(ctx)
    checkpoint = await issue_checkpoint(ctx)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    async with ctx.sessions() as session:
        total = await log_size(session)
        note = await cosigned_note(session, checkpoint)
        earlier = [
            (row.tree_size, row.note)
            for row in (await session.execute(select(AuditCheckpoint))).scalars()
            if row.tree_size != checkpoint.tree_size
        ]
    # The log is append-only, so reading [0, total) in short transactions is as
    # consistent as one long one, and never holds up the node's writers.
    with (out / "entries.jsonl").open("wb") as entries, (out / "leaf-hashes").open("wb") as leaves:
        for start in range(0, total, BATCH):
            end = min(start + BATCH, total)
            async with ctx.sessions() as session:
                rows = await session.execute(
                    select(AuditEntry.entry)
                    .where(AuditEntry.seq >= start, AuditEntry.seq < end)
                    .order_by(AuditEntry.seq)
                )
                entries.writelines(row.encode("utf-8") + b"\n" for row in rows.scalars())
                hashes = await session.execute(
                    select(AuditTreeNode.hash)
                    .where(
                        AuditTreeNode.level == 0,
                        AuditTreeNode.index >= start,
                        AuditTreeNode.index < end,
                    )
                    .order_by(AuditTreeNode.index)
                )
                leaves.writelines(bytes(h) for h in hashes.scalars())
    (out / "checkpoint").write_text(note, "utf-8")
    for tree_size, earlier_note in earlier:
        (out / "checkpoints" / str(tree_size)).write_text(earlier_note, "utf-8")
    (out / "vkey").write_text(identity.verifier_key + "\n", "utf-8")
    keys = [str(m.audit_log["witness_key"]) for m in witnesses(ctx) if m.audit_log]
    (out / "witnesses").write_text("".join(k + "\n" for k in keys), "utf-8")
    # The signed directory: with the federation's trust root, auditors take the keys from it.
    (out / "directory.json").write_bytes(ctx.config.directory_path.read_bytes())
    return ExportSummary(entries=total, tree_size=checkpoint.tree_size, directory=out)
