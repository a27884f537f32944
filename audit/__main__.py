"""``python -m audit`` (also ``puente-audit``): the independent verifier's command line.

Exit codes: 0 verified, 1 the log or proof does not verify, 2 unusable input.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audit.errors import VerificationError
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.note import VerifierKey, open_checkpoint
from audit.verify import verify_export

EXIT_FAILED = 1
EXIT_UNUSABLE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="puente-audit",
        description="Verify a Puente audit log without trusting the node that wrote it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="replay an export and check it against its checkpoint")
    verify.add_argument("export", type=Path, help="the directory `puente audit export` wrote")
    verify.add_argument("--vkey", type=Path, help="the log's verifier key (default: DIR/vkey)")
    verify.add_argument("--witnesses", type=Path, help="witness verifier keys, one a line")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--jobs",
        type=_positive,
        default=os.cpu_count() or 1,
        help="processes that replay the entries (default: one per CPU; 1: no worker processes)",
    )
    inclusion = sub.add_parser("inclusion", help="check an inclusion proof (JSON from the node)")
    inclusion.add_argument("proof", type=Path)
    inclusion.add_argument("--vkey", type=Path, required=True)
    consistency = sub.add_parser("consistency", help="check a consistency proof")
    consistency.add_argument("proof", type=Path)
    consistency.add_argument("--vkey", type=Path, required=True)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _hashes(values: Any) -> list[bytes]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise VerificationError("malformed_proof", "a path is a list of base64 hashes")
    try:
        return [base64.b64decode(v, validate=True) for v in values]
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("malformed_proof", "a hash is not base64") from exc


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise VerificationError("malformed_proof", f"{name} is a non-negative integer")
    return value


def check_inclusion(doc: dict[str, Any], log_key: VerifierKey) -> str:
    """Verify an inclusion proof document; returns a one-line verdict."""
    signed = open_checkpoint(str(doc.get("checkpoint", "")), log_key)
    index, size = _int(doc, "leaf_index"), _int(doc, "tree_size")
    if size != signed.checkpoint.size:
        raise VerificationError("size_mismatch", "the proof is for another tree size")
    if isinstance(doc.get("entry"), str):
        leaf = leaf_hash(doc["entry"].encode("utf-8"))
    else:
        leaf = _hashes([doc.get("leaf_hash")])[0]
    verify_inclusion(index, size, leaf, _hashes(doc.get("inclusion_path")), signed.checkpoint.root)
    return f"OK: entry {index} is in {signed.checkpoint.origin} at tree size {size}"


def check_consistency(doc: dict[str, Any], log_key: VerifierKey) -> str:
    """Verify a consistency proof between two signed checkpoints of one log."""
    old = open_checkpoint(str(doc.get("old_checkpoint", "")), log_key).checkpoint
    new = open_checkpoint(str(doc.get("checkpoint", "")), log_key).checkpoint
    if (_int(doc, "tree_size_1"), _int(doc, "tree_size_2")) != (old.size, new.size):
        raise VerificationError("size_mismatch", "the proof is for other tree sizes")
    verify_consistency(old.size, new.size, _hashes(doc.get("consistency_path")), old.root, new.root)
    return f"OK: {new.origin} at size {old.size} is a prefix of the log at size {new.size}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "verify":
            vkey = args.vkey.read_text("utf-8") if args.vkey else None
            witnesses = (
                [k for k in args.witnesses.read_text("utf-8").splitlines() if k.strip()]
                if args.witnesses
                else None
            )
            report = verify_export(args.export, vkey=vkey, witness_keys=witnesses, jobs=args.jobs)
            print(json.dumps(report.as_json(), indent=2) if args.json else report.verdict())
            return 0 if report.ok else EXIT_FAILED
        log_key = VerifierKey.parse(args.vkey.read_text("utf-8"))
        doc = json.loads(args.proof.read_text("utf-8"))
        if not isinstance(doc, dict):
            raise VerificationError("malformed_proof", "a proof is a JSON object")
        check = check_inclusion if args.command == "inclusion" else check_consistency
        print(check(doc, log_key))
        return 0
    except VerificationError as exc:
        print(f"FAILED: {exc.reason}: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError) as exc:
        print(f"puente-audit: unusable input: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE


if __name__ == "__main__":
    sys.exit(main())
