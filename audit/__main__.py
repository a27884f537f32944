"""``python -m audit`` (also ``puente-audit``): the independent verifier's command line.

Exit codes: 0 verified, 1 the log or proof does not verify, 2 unusable input
(a missing folder or file, a malformed key: nothing was checked).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audit.directory import AuditKeys, verify_directory
from audit.errors import InputError, VerificationError
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
    _directory_arguments(verify, required=False)
    verify.add_argument(
        "--require-witnesses",
        action="store_true",
        help="fail (exit 1) when fewer witnesses cosigned than the witness policy asks",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--jobs",
        type=_positive,
        default=os.cpu_count() or 1,
        help="processes that replay the entries (default: one per CPU; 1: no worker processes)",
    )
    keys = sub.add_parser(
        "keys", help="the audit-log keys a signed federation directory publishes, once checked"
    )
    _directory_arguments(keys, required=True)
    keys.add_argument("--node", help="only this member's log key and its witnesses (e.g. MX)")
    keys.add_argument(
        "--out", type=Path, help="with --node: write DIR/vkey and DIR/witnesses for `verify`"
    )
    inclusion = sub.add_parser("inclusion", help="check an inclusion proof (JSON from the node)")
    inclusion.add_argument("proof", type=Path)
    inclusion.add_argument("--vkey", type=Path, required=True)
    consistency = sub.add_parser("consistency", help="check a consistency proof")
    consistency.add_argument("proof", type=Path)
    consistency.add_argument("--vkey", type=Path, required=True)
    return parser


def _directory_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--directory",
        type=Path,
        required=required,
        help="the signed federation directory (directory.json), to take the keys from",
    )
    parser.add_argument(
        "--trust-root",
        type=Path,
        required=required,
        help="the federation operators' keys and threshold (trust-root.json), from the secretariat",
    )


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError as exc:
        raise InputError("no_such_file", f"no {what} at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("unreadable_file", f"the {what} {path} is unreadable: {exc}") from exc


def _audit_keys(args: argparse.Namespace) -> AuditKeys | None:
    directory = args.directory
    if directory is None and args.trust_root is not None and getattr(args, "export", None):
        directory = args.export / "directory.json"  # signed: the trust root vouches for it
    if directory is None and args.trust_root is None:
        return None
    if directory is None or args.trust_root is None:
        raise InputError("missing_option", "--directory needs --trust-root to be checked")
    return verify_directory(_read(directory, "directory"), _read(args.trust_root, "trust root"))


def _log_key(path: Path) -> VerifierKey:
    try:
        return VerifierKey.parse(_read(path, "verifier key"))
    except VerificationError as exc:
        raise InputError("bad_verifier_key", f"{path}: {exc.detail}") from exc


def print_keys(keys: AuditKeys, node: str | None, out: Path | None) -> None:
    """Print (and with ``out``, write) the log and witness keys of a verified directory."""
    print(
        f"directory {keys.federation} version {keys.version}: signed by {keys.signers} "
        f"trusted operator(s); valid until {keys.expires_at}"
    )
    if keys.expired(dt.datetime.now(dt.UTC)):
        print("  note: this directory has expired (fine for checking logs of its time)")
    quorum = "every other member" if keys.quorum is None else f"{keys.quorum} other member(s)"
    print(f"witness policy: each checkpoint cosigned by {quorum}")
    members = [m for m in keys.members if node is None or m.node == node.upper()]
    if node is not None and not members:
        raise InputError("unknown_node", f"the directory publishes no audit log for {node}")
    for member in members:
        print(f"{member.node} log     {member.verifier_key.encode()}")
        if member.witness_key is not None:
            print(f"{member.node} witness {member.witness_key.encode()}")
    if out is not None:
        if node is None:
            raise InputError("missing_option", "--out needs --node: whose log the keys are for")
        (member,) = members
        witnesses = [m.witness_key for m in keys.witnesses_for(member.origin) if m.witness_key]
        out.mkdir(parents=True, exist_ok=True)
        (out / "vkey").write_text(member.verifier_key.encode() + "\n", "utf-8")
        (out / "witnesses").write_text("".join(w.encode() + "\n" for w in witnesses), "utf-8")
        print(f"wrote {out / 'vkey'} and {out / 'witnesses'}")


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
        if args.command == "keys":
            keys = _audit_keys(args)
            assert keys is not None  # both options are required
            print_keys(keys, args.node, args.out)
            return 0
        if args.command == "verify":
            keys = _audit_keys(args)
            vkey = _read(args.vkey, "verifier key") if args.vkey else None
            witnesses = (
                [k for k in _read(args.witnesses, "witness list").splitlines() if k.strip()]
                if args.witnesses
                else None
            )
            report = verify_export(
                args.export,
                vkey=vkey,
                witness_keys=witnesses,
                jobs=args.jobs,
                keys=keys,
                require_witnesses=args.require_witnesses,
            )
            print(json.dumps(report.as_json(), indent=2) if args.json else report.verdict())
            return 0 if report.ok else EXIT_FAILED
        log_key = _log_key(args.vkey)
        try:
            doc = json.loads(_read(args.proof, "proof"))
        except ValueError as exc:
            raise InputError("bad_proof", f"{args.proof} is not JSON") from exc
        if not isinstance(doc, dict):
            raise VerificationError("malformed_proof", "a proof is a JSON object")
        check = check_inclusion if args.command == "inclusion" else check_consistency
        print(check(doc, log_key))
        return 0
    except InputError as exc:
        print(f"puente-audit: {exc.reason}: {exc.detail}", file=sys.stderr)
        return EXIT_UNUSABLE
    except VerificationError as exc:
        print(f"FAILED: {exc.reason}: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError) as exc:
        print(f"puente-audit: unusable input: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE


if __name__ == "__main__":
    sys.exit(main())
