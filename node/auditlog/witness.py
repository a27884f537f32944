"""This node as a witness of its peers' logs (C2SP tlog-witness, add-checkpoint).

``POST /federation/v1/witness/add-checkpoint`` on the mutual-TLS federation
app. The body is ``old <size>``, up to 63 base64 consistency-proof lines, an
empty line and a signed checkpoint; the answer is a tlog-cosignature/v1 line
(200), or the status the spec names: 400 malformed, 403 no valid signature by
the origin's key, 404 unknown origin, 409 (``text/x.tlog.size``: the size we
last cosigned) when the old size is not ours or the same size has another
root, 422 when the consistency proof fails.

A checkpoint that cannot be consistent with the one we cosigned for the same
log — same size and another root, or a failing consistency proof — is a
fork: both signed notes are kept as evidence (``witness_forks``), an audit
entry and an error log line are written, and nothing is cosigned.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit.errors import VerificationError
from audit.merkle import verify_consistency
from audit.note import Checkpoint, VerifierKey, parse_checkpoint, parse_note, verify_note
from node.auditlog import entries as audit
from node.auditlog.checkpoints import identity_of
from node.core.canonical import sha256_hex
from node.core.logs import get_logger
from node.core.responses import problem_response
from node.storage.audit_models import WitnessFork, WitnessState
from node.storage.context import NodeContext
from node.trust.directory import MemberNode
from node.trust.note_signing import cosignature_line

log = get_logger(__name__)

ADD_CHECKPOINT_PATH = "/federation/v1/witness/add-checkpoint"
SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_PROOF_LINES = 63
_OLD = re.compile(r"^old (0|[1-9][0-9]{0,18})$")


@dataclass(frozen=True)
class Answer:
    """A witness answer: status, content type, body, and for refusals a reason code."""

    status: int
    content_type: str
    body: str
    reason: str | None = None

    def response(self) -> web.Response:
        if self.reason is not None and self.content_type != SIZE_CONTENT_TYPE:
            return problem_response(self.status, self.reason, self.body)
        return web.Response(status=self.status, text=self.body, content_type=self.content_type)


def _refuse(status: int, reason: str, detail: str) -> Answer:
    return Answer(status, "application/problem+json", detail, reason)


def _conflict(size: int, reason: str) -> Answer:
    return Answer(409, SIZE_CONTENT_TYPE, f"{size}\n", reason)


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: list[bytes]
    note: str


def parse_request(body: bytes) -> AddCheckpoint:
    """Split an add-checkpoint body; raises VerificationError("malformed_request")."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("malformed_request", "the body is UTF-8") from exc
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise VerificationError("malformed_request", "no empty line before the checkpoint")
    lines = head.split("\n")
    match = _OLD.match(lines[0])
    if not match:
        raise VerificationError("malformed_request", "the first line is `old <size>`")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise VerificationError("malformed_request", f"more than {MAX_PROOF_LINES} proof lines")
    try:
        proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("malformed_request", "a proof line is not base64") from exc
    return AddCheckpoint(int(match.group(1)), proof, note)


def member_for_origin(ctx: NodeContext, origin: str) -> MemberNode | None:
    for member in ctx.directory.nodes.values():
        if member.id != ctx.node_id and member.audit_log and member.audit_log["origin"] == origin:
            return member
    return None


async def add_checkpoint(ctx: NodeContext, body: bytes, *, submitter: str) -> Answer:
    """Check a submitted checkpoint against what we cosigned before, and cosign it."""
    identity = identity_of(ctx)
    try:
        request = parse_request(body)
        note = parse_note(request.note)
        origin = note.text.split("\n", 1)[0]
    except VerificationError as exc:
        return _refuse(400, exc.reason, exc.detail)
    member = member_for_origin(ctx, origin)
    if member is None or member.audit_log is None:
        return _refuse(404, "unknown_origin", "no member of the directory has this log")
    try:
        verify_note(note, [VerifierKey.parse(member.audit_log["verifier_key"])])
    except VerificationError as exc:
        return _refuse(403, "bad_checkpoint_signature", exc.detail)
    try:
        checkpoint = parse_checkpoint(note.text)
    except VerificationError as exc:
        return _refuse(400, exc.reason, exc.detail)
    if request.old_size > checkpoint.size:
        return _refuse(400, "old_size_too_large", "the old size exceeds the checkpoint's")
    async with ctx.sessions.begin() as session:
        # The row lock makes check-then-update atomic, as the spec requires.
        state = (
            await session.execute(
                select(WitnessState).where(WitnessState.origin == origin).with_for_update()
            )
        ).scalar_one_or_none()
        recorded = state.tree_size if state else 0
        if state is not None and checkpoint.size == recorded and checkpoint.root != state.root_hash:
            await record_fork(
                ctx,
                session,
                origin=origin,
                node=member.id,
                reason="same_size_other_root",
                cosigned_size=recorded,
                cosigned_note=state.note,
                presented_note=request.note,
                reported_by=submitter if submitter != member.id else None,
            )
            return _conflict(recorded, "fork_detected")
        if request.old_size != recorded:
            return _conflict(recorded, "old_size_mismatch")
        old_root = state.root_hash if state else None
        try:
            if old_root is None:
                if request.proof:
                    raise VerificationError("proof_too_long", "a first checkpoint has no proof")
            else:
                verify_consistency(
                    recorded, checkpoint.size, request.proof, old_root, checkpoint.root
                )
        except VerificationError as exc:
            if state is not None:
                await record_fork(
                    ctx,
                    session,
                    origin=origin,
                    node=member.id,
                    reason="consistency_proof_failed",
                    cosigned_size=recorded,
                    cosigned_note=state.note,
                    presented_note=request.note,
                    reported_by=submitter if submitter != member.id else None,
                )
            return _refuse(422, "inconsistent_checkpoint", exc.detail)
        _remember(ctx, session, state, member, checkpoint, request.note)
    timestamp = int(ctx.now().timestamp())
    line = cosignature_line(note.text, identity.witness_name, identity.witness_key, timestamp)
    log.info("checkpoint_cosigned", origin=origin, tree_size=checkpoint.size, by=submitter)
    return Answer(200, "text/plain", line)


def _remember(
    ctx: NodeContext,
    session: AsyncSession,
    state: WitnessState | None,
    member: MemberNode,
    checkpoint: Checkpoint,
    note: str,
) -> None:
    if state is None:
        session.add(
            WitnessState(
                origin=checkpoint.origin,
                node=member.id,
                tree_size=checkpoint.size,
                root_hash=checkpoint.root,
                note=note,
                updated_at=ctx.now(),
            )
        )
        return
    state.tree_size = checkpoint.size
    state.root_hash = checkpoint.root
    state.note = note
    state.updated_at = ctx.now()


async def record_fork(
    ctx: NodeContext,
    session: AsyncSession,
    *,
    origin: str,
    node: str,
    reason: str,
    cosigned_size: int,
    cosigned_note: str,
    presented_note: str,
    reported_by: str | None,
) -> None:
    """Keep both checkpoints as evidence, audit the fork and say it loudly."""
    now = ctx.now()
    session.add(
        WitnessFork(
            origin=origin,
            node=node,
            reason=reason,
            detected_at=now,
            reported_by=reported_by,
            cosigned_note=cosigned_note,
            presented_note=presented_note,
        )
    )
    await audit.append(
        session,
        node=ctx.node_id,
        event="witness.fork_detected",
        at=now,
        counterparty=node,
        reason=reason,
        origin=origin,
        cosigned_size=cosigned_size,
        cosigned_note_sha256=sha256_hex(cosigned_note.encode("utf-8")),
        presented_note_sha256=sha256_hex(presented_note.encode("utf-8"))
        if presented_note
        else None,
        reported_by=reported_by,
    )
    log.error("audit_log_fork", origin=origin, node=node, reason=reason, reported_by=reported_by)
