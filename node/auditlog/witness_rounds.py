"""Getting this node's checkpoints witnessed, and comparing notes between witnesses.

A *witness round* (every ``checkpoint_interval`` seconds while the node
serves, or ``puente audit witness``):

1. sign a checkpoint if the log has grown (node.auditlog.checkpoints);
2. send it to every peer with a witness key, by C2SP tlog-witness
   add-checkpoint with a consistency proof from the size that peer last
   cosigned, and keep the tlog-cosignature/v1 lines it returns;
3. relay every peer checkpoint this node has cosigned to the other witnesses
   (``old`` = its size, empty proof). A witness holding another checkpoint of
   the same size for that log answers 409 and records the fork; so does this
   node. This is how a log that shows one history to one peer and another
   history to another is caught.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass

import aiohttp
from sqlalchemy import select

from audit.errors import VerificationError
from audit.note import VerifierKey, parse_note, verify_cosignatures
from node.auditlog import tree as audit_tree
from node.auditlog.checkpoints import (
    SignedCheckpoint,
    identity_of,
    issue_checkpoint,
    last_size_cosigned_by,
    record_cosignatures,
)
from node.auditlog.witness import ADD_CHECKPOINT_PATH, SIZE_CONTENT_TYPE, record_fork
from node.core.logs import get_logger
from node.storage.audit_models import WitnessState
from node.storage.context import NodeContext
from node.trust.directory import MemberNode
from node.trust.tls import client_context

log = get_logger(__name__)
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class WitnessResult:
    """What one witness said about one checkpoint."""

    witness: str
    origin: str
    tree_size: int
    outcome: str  # cosigned, agreed, refused, unreachable, fork
    detail: str = ""


@dataclass(frozen=True)
class _Reply:
    status: int
    content_type: str
    text: str


def witnesses(ctx: NodeContext) -> list[MemberNode]:
    """The peers that publish a witness key, in directory order."""
    return [
        m
        for m in ctx.directory.nodes.values()
        if m.id != ctx.node_id and m.audit_log and m.audit_log.get("witness_key")
    ]


async def _post(ctx: NodeContext, peer: MemberNode, body: str) -> _Reply:
    connector = aiohttp.TCPConnector(ssl=client_context(ctx.keys.tls, peer))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
        http.post(
            peer.endpoint + ADD_CHECKPOINT_PATH,
            data=body.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        ) as response,
    ):
        return _Reply(response.status, response.content_type, await response.text())


def _body(old_size: int, proof: list[bytes], note: str) -> str:
    lines = [f"old {old_size}", *(base64.b64encode(h).decode() for h in proof)]
    return "".join(line + "\n" for line in lines) + "\n" + note


def _size(reply: _Reply) -> int | None:
    if reply.status != 409 or reply.content_type != SIZE_CONTENT_TYPE:
        return None
    text = reply.text.strip()
    return int(text) if text.isdigit() else None


async def submit(ctx: NodeContext, peer: MemberNode, checkpoint: SignedCheckpoint) -> WitnessResult:
    """Ask one witness to cosign our checkpoint; keep the cosignature if it verifies."""
    origin = identity_of(ctx).origin

    def result(outcome: str, detail: str = "") -> WitnessResult:
        return WitnessResult(peer.id, origin, checkpoint.tree_size, outcome, detail)

    async with ctx.sessions() as session:
        old = await last_size_cosigned_by(session, peer.id)
    for _ in range(3):  # at most: our guess, then the size the witness says it holds
        if old > checkpoint.tree_size:
            log.error("witness_ahead_of_log", witness=peer.id, witness_size=old)
            return result("refused", f"the witness has cosigned size {old}, beyond ours")
        async with ctx.sessions() as session:
            proof = await audit_tree.consistency_proof(session, old, checkpoint.tree_size)
        try:
            reply = await _post(ctx, peer, _body(old, proof, checkpoint.note))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return result("unreachable", type(exc).__name__)
        if reply.status == 200:
            return result(*await _keep_cosignature(ctx, peer, checkpoint, reply.text))
        size = _size(reply)
        if size is None:
            return result("refused", f"HTTP {reply.status}")
        if size == old:  # same size, but the witness holds another root for our log
            log.error("witness_sees_other_root", witness=peer.id, tree_size=size)
            return result("fork", f"the witness holds another checkpoint of size {size}")
        old = size
    return result("refused", "the witness kept changing its size")


async def _keep_cosignature(
    ctx: NodeContext, peer: MemberNode, checkpoint: SignedCheckpoint, lines: str
) -> tuple[str, str]:
    """Verify the witness's answer against its published key and store it: (outcome, detail)."""
    assert peer.audit_log is not None
    try:
        key = VerifierKey.parse(peer.audit_log["witness_key"])
        found = verify_cosignatures(parse_note(checkpoint.note + lines), [key])
    except VerificationError as exc:
        log.warning("bad_cosignature", witness=peer.id, reason=exc.reason)
        return "refused", exc.reason
    if not found:
        return "refused", "no cosignature by the witness's key"
    await record_cosignatures(ctx, checkpoint.tree_size, peer.id, key.name, [c.line for c in found])
    return "cosigned", ""


async def relay(ctx: NodeContext) -> list[WitnessResult]:
    """Show every other witness each peer checkpoint we cosigned; a disagreement is a fork."""
    async with ctx.sessions() as session:
        states = list((await session.execute(select(WitnessState))).scalars())
    results = []
    for state in states:
        for peer in witnesses(ctx):
            if peer.id == state.node:
                continue
            results.append(await _relay_one(ctx, peer, state))
    return results


async def _relay_one(ctx: NodeContext, peer: MemberNode, state: WitnessState) -> WitnessResult:
    def result(outcome: str, detail: str = "") -> WitnessResult:
        return WitnessResult(peer.id, state.origin, state.tree_size, outcome, detail)

    old = state.tree_size
    for _ in range(2):  # a witness that never saw the log takes it on first sight (old 0)
        try:
            reply = await _post(ctx, peer, _body(old, [], state.note))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return result("unreachable", type(exc).__name__)
        if reply.status == 200:
            return result("agreed")
        size = _size(reply)
        if size == state.tree_size:
            async with ctx.sessions.begin() as session:
                await record_fork(
                    ctx,
                    session,
                    origin=state.origin,
                    node=state.node,
                    reason="other_witness_holds_other_root",
                    cosigned_size=state.tree_size,
                    cosigned_note=state.note,
                    presented_note="",
                    reported_by=peer.id,
                )
            return result("fork", f"{peer.id} holds another checkpoint of size {size}")
        if size != 0 or old == 0:
            return result("refused" if size is None else "behind_or_ahead", f"HTTP {reply.status}")
        old = 0
    return result("refused")


async def witness_round(ctx: NodeContext) -> list[WitnessResult]:
    """Sign a checkpoint if the log grew, get it witnessed, and relay peers' checkpoints."""
    checkpoint = await issue_checkpoint(ctx)
    results = [await submit(ctx, peer, checkpoint) for peer in witnesses(ctx)]
    results.extend(await relay(ctx))
    return results


async def run_forever(ctx: NodeContext) -> None:
    interval = identity_of(ctx).checkpoint_interval
    while True:
        try:
            await witness_round(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("witness_round_failed")
        await asyncio.sleep(interval)
