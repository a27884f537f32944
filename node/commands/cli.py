"""The ``puente`` command line.

Refusals are printed as ``puente: <reason_code>: <detail>`` with exit code 2,
never as a stack trace. Each command group lives in its own module under
node/commands and registers itself here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from node.commands import (
    audit_cmds,
    backup_cmds,
    case_cmds,
    demo_cmd,
    evidence_cmds,
    federation_cmds,
    keys_cmds,
    node_cmds,
    users_cmds,
)
from node.core.errors import PuenteError

EXIT_REFUSED = 2
COMMAND_GROUPS = (
    node_cmds,
    federation_cmds,
    keys_cmds,
    evidence_cmds,
    audit_cmds,
    backup_cmds,
    users_cmds,
    case_cmds,
    demo_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="puente",
        description="Puente: federated, consent-bound exchange of minimal case summaries.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except PuenteError as refusal:
        print(f"puente: {refusal.reason}: {refusal.detail}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
