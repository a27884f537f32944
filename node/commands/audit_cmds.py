"""Audit log tools for operators and auditors."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy import select

from node import audit
from node.commands._util import with_node
from node.context import NodeContext
from node.storage.models import AuditEntry


def register(sub: Any) -> None:
    audit_p = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit_p.add_subparsers(dest="audit_command", required=True)
    check = audit_sub.add_parser("verify", help="check the audit log's hash chain")
    check.add_argument("--dir", type=Path, required=True)
    check.set_defaults(handler=verify_cmd)


def verify_cmd(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> tuple[int, int | None]:
        async with ctx.sessions() as session:
            rows = (
                (await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars().all()
            )
        return len(rows), audit.verify_chain(rows)

    size, broken = with_node(args.dir, work)
    if broken is not None:
        print(f"audit log of {size} entries: chain BROKEN at entry {broken}")
        return 1
    print(f"audit log of {size} entries: hash chain intact")
    return 0
