"""Signed checkpoints of this node's audit log, and the cosignatures witnesses return.

A checkpoint (C2SP tlog-checkpoint) commits to the whole log: origin, size and
RFC 9162 root. It is issued on a schedule (node.auditlog.witness_rounds) and on demand
(``puente audit checkpoint --new``), always inside a transaction that holds the
log's head lock, and only after checking the new tree is consistent with the
last checkpoint signed — so the node never signs two inconsistent checkpoints,
even if its database was tampered with (it refuses and says so instead).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit.errors import VerificationError
from audit.merkle import verify_consistency
from audit.note import Checkpoint
from node.auditlog import tree as audit_tree
from node.core.errors import ConfigError, PuenteError
from node.core.logs import get_logger
from node.storage.audit_models import AuditCheckpoint, AuditCosignature
from node.storage.context import NodeContext
from node.storage.models import AuditHead
from node.trust.log_keys import AuditIdentity
from node.trust.note_signing import sign_checkpoint

log = get_logger(__name__)


class AuditLogError(PuenteError):
    """The audit log cannot do what was asked (reason says why)."""

    reason = "audit_log_error"
    http_status = 409


@dataclass(frozen=True)
class SignedCheckpoint:
    tree_size: int
    root_hash: bytes
    signed_at: dt.datetime
    note: str  # the signed note with the log's own signature only


def identity_of(ctx: NodeContext) -> AuditIdentity:
    """The node's audit-log identity, or a clear refusal for an old data directory."""
    if ctx.audit is None:
        raise ConfigError("no_audit_identity", "this data directory has no audit.toml")
    return ctx.audit


def _signed(row: AuditCheckpoint) -> SignedCheckpoint:
    return SignedCheckpoint(row.tree_size, bytes(row.root_hash), row.signed_at, row.note)


async def latest_checkpoint(session: AsyncSession) -> SignedCheckpoint | None:
    row = (
        await session.execute(
            select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()).limit(1)
        )
    ).scalar_one_or_none()
    return _signed(row) if row else None


async def checkpoint_at(session: AsyncSession, tree_size: int) -> SignedCheckpoint | None:
    row = await session.get(AuditCheckpoint, tree_size)
    return _signed(row) if row else None


async def issue_checkpoint(ctx: NodeContext) -> SignedCheckpoint:
    """Sign a checkpoint of the log as it is now; the latest one if the log has not grown."""
    identity = identity_of(ctx)
    async with ctx.sessions.begin() as session:
        head = (
            await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
        ).scalar_one()
        size = head.size
        latest = await latest_checkpoint(session)
        if latest is not None and latest.tree_size == size:
            return latest
        root = await audit_tree.root_at(session, size)
        if root.hex() != head.head_hash:
            _refuse("the stored tree does not hash to the log's head")
        if latest is not None:
            if latest.tree_size > size:
                _refuse(f"the log shrank from {latest.tree_size} to {size} entries")
            proof = await audit_tree.consistency_proof(session, latest.tree_size, size)
            try:
                verify_consistency(latest.tree_size, size, proof, latest.root_hash, root)
            except VerificationError:
                _refuse(f"the tree of {size} does not extend the checkpoint of {latest.tree_size}")
        note = sign_checkpoint(Checkpoint(identity.origin, size, root), identity.log_key)
        row = AuditCheckpoint(tree_size=size, root_hash=root, signed_at=ctx.now(), note=note)
        session.add(row)
    log.info("checkpoint_signed", origin=identity.origin, tree_size=size, root=root.hex()[:16])
    return _signed(row)


def _refuse(detail: str) -> None:
    log.error("checkpoint_refused", reason="log_inconsistent", detail=detail)
    raise AuditLogError("log_inconsistent", f"refusing to sign: {detail}")


async def cosignatures_for(session: AsyncSession, tree_size: int) -> list[AuditCosignature]:
    """The cosignatures witnesses returned for one checkpoint, one per witness (newest)."""
    rows = (
        await session.execute(
            select(AuditCosignature)
            .where(AuditCosignature.tree_size == tree_size)
            .order_by(AuditCosignature.id)
        )
    ).scalars()
    newest: dict[str, AuditCosignature] = {}
    for row in rows:
        newest[row.witness_node] = row
    return list(newest.values())


async def cosigned_note(session: AsyncSession, checkpoint: SignedCheckpoint) -> str:
    """The checkpoint's signed note with every witness's cosignature line appended."""
    lines = [c.line for c in await cosignatures_for(session, checkpoint.tree_size)]
    return checkpoint.note + "".join(lines)


async def record_cosignatures(
    ctx: NodeContext, tree_size: int, witness_node: str, cosigner: str, lines: Sequence[str]
) -> None:
    async with ctx.sessions.begin() as session:
        for line in lines:
            session.add(
                AuditCosignature(
                    tree_size=tree_size,
                    witness_node=witness_node,
                    cosigner=cosigner,
                    cosigned_at=ctx.now(),
                    line=line,
                )
            )


async def last_size_cosigned_by(session: AsyncSession, witness_node: str) -> int:
    """The largest of our tree sizes this witness has cosigned (0 if none)."""
    row = (
        await session.execute(
            select(AuditCosignature.tree_size)
            .where(AuditCosignature.witness_node == witness_node)
            .order_by(AuditCosignature.tree_size.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return int(row) if row is not None else 0


async def witnessed(session: AsyncSession) -> list[AuditCosignature]:
    """Every cosignature received, for auditors: which peer witnessed which tree size."""
    query = select(AuditCosignature).order_by(AuditCosignature.tree_size, AuditCosignature.id)
    return list((await session.execute(query)).scalars())
