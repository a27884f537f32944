"""The ``puente`` command line: node set-up, serving, sending, evidence, demo.

Refusals are printed as ``puente: <reason_code>: <detail>`` with exit code 2,
never as a stack trace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from node.config import AUTHORITY_KINDS, AuthorityConfig
from node.errors import PuenteError

EXIT_REFUSED = 2


def _authority(text: str) -> AuthorityConfig:
    try:
        authority_id, kind, name = text.split(":", 2)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("use ID:KIND:DISPLAY NAME") from exc
    if kind not in AUTHORITY_KINDS:
        raise argparse.ArgumentTypeError(f"kind must be one of {', '.join(AUTHORITY_KINDS)}")
    return AuthorityConfig(authority_id, kind, {"es": name, "en": name})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="puente", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create a node's data directory and keys")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--id", required=True, help="ISO 3166-1 alpha-2 code, e.g. MX")
    init.add_argument("--name", required=True)
    init.add_argument("--host", default="127.0.0.1")
    init.add_argument("--port", type=int, default=8443)
    init.add_argument("--public-url", help="the URL peers use (default https://HOST:PORT)")
    init.add_argument("--database-url", help="e.g. postgresql+asyncpg://… (default SQLite)")
    init.add_argument(
        "--authority",
        type=_authority,
        action="append",
        required=True,
        help="ID:KIND:DISPLAY NAME, repeatable",
    )

    serve = sub.add_parser("serve", help="run the node")
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--log-level", default="info")

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("--dir", type=Path, required=True)

    send = sub.add_parser("send", help="queue a case summary for delivery")
    send.add_argument("--dir", type=Path, required=True)
    send.add_argument("--from", dest="sender", required=True, help="sending authority id")
    send.add_argument("--to", required=True, help="NODE/AUTHORITY, e.g. GT/gt-reception-la-aurora")
    send.add_argument("--type", default="return_notice")
    send.add_argument("--file", type=Path, required=True, help="the document, JSON")
    send.add_argument("--ttl-hours", type=float)

    status = sub.add_parser("status", help="disclosures and their delivery state")
    status.add_argument("--dir", type=Path, required=True)
    status.add_argument("--json", action="store_true")

    evidence = sub.add_parser("evidence", help="evidence for third parties")
    evidence_sub = evidence.add_subparsers(dest="evidence_command", required=True)
    export = evidence_sub.add_parser("export", help="received envelopes and receipts")
    export.add_argument("--dir", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True)

    fed = sub.add_parser("federation", help="federation operator tasks")
    fed_sub = fed.add_subparsers(dest="federation_command", required=True)
    keygen = fed_sub.add_parser("keygen", help="create an operator signing key")
    keygen.add_argument("--out", type=Path, required=True, help="directory for the private key")
    root = fed_sub.add_parser("trust-root", help="write the trust root nodes are installed with")
    root.add_argument("--federation", required=True)
    root.add_argument("--key", type=Path, action="append", required=True)
    root.add_argument("--threshold", type=int, default=1)
    root.add_argument("--out", type=Path, required=True)
    create = fed_sub.add_parser("create", help="build and sign a directory from node entries")
    create.add_argument("--federation", required=True)
    create.add_argument("--entry", type=Path, action="append", required=True)
    create.add_argument("--version", type=int, default=1)
    create.add_argument("--valid-days", type=int, default=30)
    create.add_argument("--key", type=Path, action="append", required=True)
    create.add_argument("--out", type=Path, required=True)
    verify = fed_sub.add_parser("verify", help="verify a signed directory against a trust root")
    verify.add_argument("--trust-root", type=Path, required=True)
    verify.add_argument("--directory", type=Path, required=True)
    install = fed_sub.add_parser("install", help="install a signed directory into a node")
    install.add_argument("--dir", type=Path, required=True)
    install.add_argument("--trust-root", type=Path, required=True)
    install.add_argument("--directory", type=Path, required=True)

    audit_cmd = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit_cmd.add_subparsers(dest="audit_command", required=True)
    check = audit_sub.add_parser("verify", help="check the audit log's hash chain")
    check.add_argument("--dir", type=Path, required=True)

    demo = sub.add_parser("demo", help="run a local three-country federation")
    demo.add_argument("--dir", type=Path, help="where to put it (default: a fresh temp dir)")
    demo.add_argument("--once", action="store_true", help="exit after the story")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except PuenteError as refusal:
        print(f"puente: {refusal.reason}: {refusal.detail}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from node import commands

    handlers = {
        "init": commands.init,
        "serve": commands.serve,
        "migrate": commands.migrate,
        "send": commands.send,
        "status": commands.status,
        "evidence": commands.evidence,
        "federation": commands.federation,
        "audit": commands.audit_command,
        "demo": commands.demo,
    }
    return handlers[args.command](args)
