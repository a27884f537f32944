"""``puente audit export --out DIR``: everything an auditor needs to verify the log offline.

Writes the files ``audit/verify.py`` reads (see its docstring and
docs/audit-log.md): ``entries.jsonl`` (every entry exactly as hashed, in log
order), ``checkpoint`` (the latest signed note with its cosignatures),
``vkey``, ``witnesses``, ``leaf-hashes`` and ``checkpoints/<size>``.
Entries are streamed in batches, so a log of millions exports in constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from node.checkpoints import cosigned_note, identity_of, issue_checkpoint
from node.context import NodeContext
from node.storage.audit_models import AuditCheckpoint, AuditTreeNode
from node.storage.models import AuditEntry
from node.witness_client import witnesses

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
    count = 0
    async with ctx.sessions() as session:
        with (out / "entries.jsonl").open("wb") as entries:
            while True:
                rows = (
                    await session.execute(
                        select(AuditEntry.entry)
                        .where(AuditEntry.seq >= count)
                        .order_by(AuditEntry.seq)
                        .limit(BATCH)
                    )
                ).scalars()
                batch = [row.encode("utf-8") + b"\n" for row in rows]
                if not batch:
                    break
                entries.writelines(batch)
                count += len(batch)
        with (out / "leaf-hashes").open("wb") as leaves:
            done = 0
            while True:
                hashes = list(
                    (
                        await session.execute(
                            select(AuditTreeNode.hash)
                            .where(AuditTreeNode.level == 0, AuditTreeNode.index >= done)
                            .order_by(AuditTreeNode.index)
                            .limit(BATCH)
                        )
                    ).scalars()
                )
                if not hashes:
                    break
                leaves.writelines(bytes(h) for h in hashes)
                done += len(hashes)
        (out / "checkpoint").write_text(await cosigned_note(session, checkpoint), "utf-8")
        for row in (await session.execute(select(AuditCheckpoint))).scalars():
            if row.tree_size != checkpoint.tree_size:
                (out / "checkpoints" / str(row.tree_size)).write_text(row.note, "utf-8")
    (out / "vkey").write_text(identity.verifier_key + "\n", "utf-8")
    keys = [str(m.audit_log["witness_key"]) for m in witnesses(ctx) if m.audit_log]
    (out / "witnesses").write_text("".join(k + "\n" for k in keys), "utf-8")
    return ExportSummary(entries=count, tree_size=checkpoint.tree_size, directory=out)
