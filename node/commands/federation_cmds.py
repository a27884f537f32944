"""Federation operator tasks: keys, trust roots, directories."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from node.directory import TrustRoot, sign_directory, verify_directory
from node.federation import (
    create_operator_key,
    directory_document,
    load_operator_key,
    publish,
    read_json,
    trust_root_document,
    write_json,
)


def register(sub: Any) -> None:
    fed = sub.add_parser("federation", help="federation operator tasks")
    fed_sub = fed.add_subparsers(dest="federation_command", required=True)

    keygen = fed_sub.add_parser("keygen", help="create an operator signing key")
    keygen.add_argument("--out", type=Path, required=True, help="directory for the private key")
    keygen.set_defaults(handler=keygen_cmd)

    root = fed_sub.add_parser("trust-root", help="write the trust root nodes are installed with")
    root.add_argument("--federation", required=True)
    root.add_argument("--key", type=Path, action="append", required=True)
    root.add_argument("--threshold", type=int, default=1)
    root.add_argument("--out", type=Path, required=True)
    root.set_defaults(handler=trust_root_cmd)

    create = fed_sub.add_parser("create", help="build and sign a directory from node entries")
    create.add_argument("--federation", required=True)
    create.add_argument("--entry", type=Path, action="append", required=True)
    create.add_argument("--version", type=int, default=1)
    create.add_argument("--valid-days", type=int, default=30)
    create.add_argument("--key", type=Path, action="append", required=True)
    create.add_argument("--out", type=Path, required=True)
    create.set_defaults(handler=create_cmd)

    verify = fed_sub.add_parser("verify", help="verify a signed directory against a trust root")
    verify.add_argument("--trust-root", type=Path, required=True)
    verify.add_argument("--directory", type=Path, required=True)
    verify.set_defaults(handler=verify_cmd)

    install = fed_sub.add_parser("install", help="install a signed directory into a node")
    install.add_argument("--dir", type=Path, required=True)
    install.add_argument("--trust-root", type=Path, required=True)
    install.add_argument("--directory", type=Path, required=True)
    install.set_defaults(handler=install_cmd)


def keygen_cmd(args: argparse.Namespace) -> int:
    key, path = create_operator_key(args.out)
    print(f"operator key {key.kid} written to {path} (keep it offline)")
    return 0


def trust_root_cmd(args: argparse.Namespace) -> int:
    keys = [load_operator_key(p) for p in args.key]
    write_json(args.out, trust_root_document(args.federation, keys, args.threshold))
    print(f"trust root for {args.federation} ({args.threshold} of {len(keys)}) -> {args.out}")
    return 0


def create_cmd(args: argparse.Namespace) -> int:
    entries = [read_json(p) for p in args.entry]
    document = directory_document(
        args.federation,
        entries,
        version=args.version,
        now=dt.datetime.now(dt.UTC),
        validity=dt.timedelta(days=args.valid_days),
    )
    keys = [load_operator_key(p) for p in args.key]
    write_json(args.out, sign_directory(document, keys))
    print(f"directory v{args.version} with {len(entries)} node(s) -> {args.out}")
    return 0


def verify_cmd(args: argparse.Namespace) -> int:
    trust = TrustRoot.from_document(read_json(args.trust_root))
    directory = verify_directory(read_json(args.directory), trust, now=dt.datetime.now(dt.UTC))
    print(
        f"directory {directory.federation} v{directory.version} verifies; "
        f"expires {directory.expires_at.isoformat()}; nodes {', '.join(directory.nodes)}"
    )
    return 0


def install_cmd(args: argparse.Namespace) -> int:
    trust_doc, signed = read_json(args.trust_root), read_json(args.directory)
    directory = verify_directory(
        signed, TrustRoot.from_document(trust_doc), now=dt.datetime.now(dt.UTC)
    )
    publish([args.dir], signed, trust_doc)
    print(f"installed directory v{directory.version} into {args.dir}")
    return 0
