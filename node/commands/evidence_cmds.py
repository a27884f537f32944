"""Evidence for third parties: ``puente evidence export``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node.commands._util import with_node
from node.storage.context import NodeContext


def register(sub: Any) -> None:
    evidence = sub.add_parser("evidence", help="evidence for third parties")
    evidence_sub = evidence.add_subparsers(dest="evidence_command", required=True)
    export = evidence_sub.add_parser("export", help="received envelopes and receipts")
    export.add_argument("--dir", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(handler=export_cmd)


def export_cmd(args: argparse.Namespace) -> int:
    from node.intake.evidence import export_evidence

    async def work(ctx: NodeContext) -> int:
        return await export_evidence(ctx, args.out)

    count = with_node(args.dir, work)
    print(f"exported {count} received message(s) with receipts to {args.out}")
    return 0
