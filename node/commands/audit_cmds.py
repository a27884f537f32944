"""Audit log tools for operators and auditors (placeholder until the full group lands)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node import audit
from node.commands._util import with_node
from node.context import NodeContext


def register(sub: Any) -> None:
    audit_p = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit_p.add_subparsers(dest="audit_command", required=True)
    check = audit_sub.add_parser("verify", help="check the stored log against its Merkle tree")
    check.add_argument("--dir", type=Path, required=True)
    check.set_defaults(handler=verify_cmd)


def verify_cmd(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> tuple[int, int | None]:
        async with ctx.sessions() as session:
            return await audit.log_size(session), await audit.first_damaged_entry(session)

    size, broken = with_node(args.dir, work)
    if broken is not None:
        print(f"audit log of {size} entries: entry {broken} does not match the Merkle tree")
        return 1
    print(f"audit log of {size} entries: intact")
    return 0
