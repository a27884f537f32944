"""Federation operator tasks: operator keys, drafts, signing, verification, installation.

The workflow (docs/directory.md, "Operator workflow"): one operator edits a
*draft* (the plain directory document: ``create``, ``add-node``,
``remove-node``, ``add-authority``, ``set-endpoint``, ``witness-policy``, ``add-tls``,
``remove-key``, ``set-validity``, ``revoke-key``, ``set-operators``,
``bump``); each operator checks it (``diff``) and signs it on their own
machine (``sign``: one signature file each); anyone merges the signatures
(``merge``), checks the result (``verify``) and distributes it (``publish``,
``install``, or peers fetch it from a node that has it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from node.commands._passphrase import (
    UNPROTECTED_WARNING,
    add_passphrase_argument,
    new_passphrase,
    unlocker,
)
from node.commands._util import with_node
from node.core.clock import parse_rfc3339, rfc3339
from node.core.config import AUTHORITY_KINDS, load_config
from node.core.errors import ConfigError, DirectoryError, PuenteError
from node.federation import directory_history
from node.storage.context import NodeContext
from node.storage.directory_models import DirectoryVersion
from node.storage.migrate import upgrade_to_head
from node.trust import edit as directory_edit
from node.trust.acceptance import check_directory, effective_operators, verify_held, verify_initial
from node.trust.directory import (
    Directory,
    TrustRoot,
    merge_signatures,
    sign_directory,
    valid_signers,
)
from node.trust.keys import cert_der_from_pem
from node.trust.operator import (
    create_operator_key,
    load_operator_key,
    load_operator_public_key,
    public_key_path,
    publish,
    publish_for_sources,
    read_json,
    write_json,
)
from node.trust.validity import REVOCATION_REASONS

# Thumbprints are base64url and may start with "-", which argparse takes for an option.
KEY_ID_HELP = "kid, or x5t#S256 pin; write --key-id=ID (with '=') since an id may start with '-'"


def register(sub: Any) -> None:
    fed = sub.add_parser("federation", help="federation operator tasks")
    fed_sub = fed.add_subparsers(dest="federation_command", required=True)

    keygen = fed_sub.add_parser("keygen", help="create an operator signing key (offline)")
    keygen.add_argument("--out", type=Path, required=True, help="directory for the key files")
    add_passphrase_argument(keygen)
    keygen.set_defaults(handler=keygen_cmd)

    root = fed_sub.add_parser("trust-root", help="write the trust root nodes are installed with")
    root.add_argument("--federation", required=True)
    root.add_argument("--key", type=Path, action="append", required=True, help="operator key")
    root.add_argument("--threshold", type=int, default=1)
    root.add_argument("--out", type=Path, required=True)
    root.set_defaults(handler=trust_root_cmd)

    create = fed_sub.add_parser("create", help="a new directory from node entries")
    create.add_argument("--federation", required=True)
    create.add_argument("--entry", type=Path, action="append", default=[], help="node-entry.json")
    create.add_argument(
        "--operator", type=Path, action="append", default=[], help="operator public key"
    )
    create.add_argument("--threshold", type=int, default=1, help="operator signatures needed")
    create.add_argument("--version", type=int, default=1)
    create.add_argument("--valid-days", type=float, default=30)
    create.add_argument("--key", type=Path, action="append", default=[], help="sign at once")
    create.add_argument("--out", type=Path, required=True, help="the draft (or signed, with --key)")
    add_passphrase_argument(create)
    create.set_defaults(handler=create_cmd)

    add_node = _draft_parser(fed_sub, "add-node", "add a node entry to a draft")
    add_node.add_argument("--entry", type=Path, required=True)
    add_node.add_argument("--replace", action="store_true", help="update a listed node")
    add_node.set_defaults(handler=add_node_cmd)

    remove_node = _draft_parser(fed_sub, "remove-node", "take a node out of the federation")
    remove_node.add_argument("--node", required=True)
    remove_node.set_defaults(handler=remove_node_cmd)

    authority = _draft_parser(fed_sub, "add-authority", "add an authority a node serves")
    authority.add_argument("--node", required=True)
    authority.add_argument("--authority", required=True, help="ID:KIND:DISPLAY NAME")
    authority.add_argument("--language", default="es", help="language of the display name")
    authority.set_defaults(handler=add_authority_cmd)

    endpoint = _draft_parser(fed_sub, "set-endpoint", "set a node's https endpoint")
    endpoint.add_argument("--node", required=True)
    endpoint.add_argument("--url", required=True)
    endpoint.set_defaults(handler=set_endpoint_cmd)
    witnesses = _draft_parser(
        fed_sub, "witness-policy", "how many members must cosign each member's audit log"
    )
    witnesses.add_argument(
        "--quorum",
        type=int,
        required=True,
        help="cosignatures from other members an auditor requires (0 to the member count - 1)",
    )
    witnesses.set_defaults(handler=witness_policy_cmd)

    add_tls = _draft_parser(fed_sub, "add-tls", "pin another TLS certificate for a node")
    add_tls.add_argument("--node", required=True)
    add_tls.add_argument("--cert", type=Path, required=True, help="PEM certificate")
    add_tls.add_argument("--not-before", help="RFC 3339: when the node may start using it")
    add_tls.set_defaults(handler=add_tls_cmd)

    remove_key = _draft_parser(fed_sub, "remove-key", "drop a key or TLS pin of a node")
    remove_key.add_argument("--node", required=True)
    remove_key.add_argument("--key-id", required=True, help=KEY_ID_HELP)
    remove_key.set_defaults(handler=remove_key_cmd)

    validity = _draft_parser(fed_sub, "set-validity", "set a key's or pin's nbf/exp")
    validity.add_argument("--node", required=True)
    validity.add_argument("--key-id", required=True, help=KEY_ID_HELP)
    validity.add_argument("--not-before", help="RFC 3339")
    validity.add_argument("--expires", help="RFC 3339")
    validity.set_defaults(handler=set_validity_cmd)

    revoke = _draft_parser(fed_sub, "revoke-key", "revoke a key or pin from a time")
    revoke.add_argument("--node", required=True)
    revoke.add_argument("--key-id", required=True, help=KEY_ID_HELP)
    revoke.add_argument("--at", help="RFC 3339 (default: now)")
    revoke.add_argument("--reason", choices=REVOCATION_REASONS, default="unspecified")
    revoke.set_defaults(handler=revoke_key_cmd)

    operators = _draft_parser(fed_sub, "set-operators", "name a new operator set")
    operators.add_argument("--operator", type=Path, action="append", required=True)
    operators.add_argument("--threshold", type=int, required=True)
    operators.set_defaults(handler=set_operators_cmd)

    bump = _draft_parser(fed_sub, "bump", "next version: new version number, issued now")
    bump.add_argument("--valid-days", type=float, default=30)
    bump.add_argument("--version", type=int, help="default: the current version + 1")
    bump.set_defaults(handler=bump_cmd)

    sign = fed_sub.add_parser("sign", help="sign a draft (or co-sign a signed directory)")
    sign.add_argument("--draft", type=Path, required=True)
    sign.add_argument("--key", type=Path, required=True, help="this operator's private key")
    sign.add_argument("--out", type=Path, required=True, help="the signature file")
    add_passphrase_argument(sign)
    sign.set_defaults(handler=sign_cmd)

    merge = fed_sub.add_parser("merge", help="merge operators' signature files")
    merge.add_argument("--out", type=Path, required=True)
    merge.add_argument("signatures", type=Path, nargs="+")
    merge.set_defaults(handler=merge_cmd)

    verify = fed_sub.add_parser("verify", help="check a signed directory as a node would")
    verify.add_argument("--trust-root", type=Path, required=True)
    verify.add_argument("--directory", type=Path, required=True)
    verify.add_argument("--previous", type=Path, help="the directory nodes hold now")
    verify.set_defaults(handler=verify_cmd)

    diff = fed_sub.add_parser("diff", help="what changed between two versions")
    diff.add_argument("old", type=Path)
    diff.add_argument("new", type=Path)
    diff.set_defaults(handler=diff_cmd)

    install = fed_sub.add_parser("install", help="install a signed directory into a node")
    install.add_argument("--dir", type=Path, required=True)
    install.add_argument("--trust-root", type=Path, required=True)
    install.add_argument("--directory", type=Path, required=True)
    install.set_defaults(handler=install_cmd)

    history = fed_sub.add_parser("history", help="the directory versions a node has verified")
    history.add_argument("--dir", type=Path, required=True)
    history.add_argument("--version", type=int, help="write this version's signed JSON")
    history.set_defaults(handler=history_cmd)

    pub = fed_sub.add_parser("publish", help="write files for nodes' URL or file sources")
    pub.add_argument("--directory", type=Path, required=True)
    pub.add_argument("--out-dir", type=Path, required=True)
    pub.set_defaults(handler=publish_cmd)


def _draft_parser(fed_sub: Any, name: str, help_text: str) -> Any:
    parser = fed_sub.add_parser(name, help=help_text)
    parser.add_argument("--draft", type=Path, required=True, help="the draft, edited in place")
    return parser


# --- keys and trust root ---------------------------------------------------------------------


def keygen_cmd(args: argparse.Namespace) -> int:
    passphrase = new_passphrase(args)
    key, path = create_operator_key(args.out, passphrase=passphrase)
    print(f"operator key {key.kid} written to {path} (keep it offline)")
    print(f"public key for the other operators: {public_key_path(path)}")
    if passphrase is None:
        print(UNPROTECTED_WARNING)
    return 0


def trust_root_cmd(args: argparse.Namespace) -> int:
    keys = [load_operator_public_key(p) for p in args.key]
    document = {"federation": args.federation, "threshold": args.threshold, "keys": keys}
    TrustRoot.from_document(document)  # refuses a threshold the keys cannot meet
    write_json(args.out, document)
    print(f"trust root for {args.federation} ({args.threshold} of {len(keys)}) -> {args.out}")
    return 0


# --- drafts ----------------------------------------------------------------------------------


def create_cmd(args: argparse.Namespace) -> int:
    operator_files = args.operator or args.key
    if not operator_files:
        raise ConfigError("no_operators", "name the operators with --operator (or sign with --key)")
    document = directory_edit.new_directory(
        args.federation,
        operator_keys=[load_operator_public_key(p) for p in operator_files],
        threshold=args.threshold,
        entries=[read_json(p) for p in args.entry],
        version=args.version,
        now=_now(),
        validity=_days(args.valid_days),
    )
    if args.key:
        keys = [load_operator_key(p, unlocker(args)) for p in args.key]
        write_json(args.out, sign_directory(document, keys))
        print(f"directory v{args.version} with {len(args.entry)} node(s), signed -> {args.out}")
    else:
        write_json(args.out, document)
        print(f"draft directory v{args.version} with {len(args.entry)} node(s) -> {args.out}")
    return 0


def _edit(args: argparse.Namespace, change: Any, summary: str) -> int:
    before = directory_edit.as_document(read_json(args.draft))
    after = change(before)
    write_json(args.draft, after)
    print(f"{summary} -> {args.draft}")
    for line in directory_edit.diff(before, after):
        print(f"  {line}")
    return 0


def add_node_cmd(args: argparse.Namespace) -> int:
    entry = read_json(args.entry)
    return _edit(
        args,
        lambda doc: directory_edit.add_node(doc, entry, replace=args.replace),
        f"node {entry.get('id')} {'updated' if args.replace else 'added'}",
    )


def remove_node_cmd(args: argparse.Namespace) -> int:
    return _edit(
        args, lambda doc: directory_edit.remove_node(doc, args.node), f"node {args.node} removed"
    )


def add_authority_cmd(args: argparse.Namespace) -> int:
    try:
        authority_id, kind, name = args.authority.split(":", 2)
    except ValueError as exc:
        raise ConfigError("bad_authority", "use ID:KIND:DISPLAY NAME") from exc
    if kind not in AUTHORITY_KINDS:
        raise ConfigError("bad_authority", f"kind must be one of {', '.join(AUTHORITY_KINDS)}")
    authority = {"id": authority_id, "kind": kind, "names": {args.language: name}}
    return _edit(
        args,
        lambda doc: directory_edit.add_authority(doc, args.node, authority),
        f"authority {authority_id} for {args.node}",
    )


def set_endpoint_cmd(args: argparse.Namespace) -> int:
    return _edit(
        args,
        lambda doc: directory_edit.set_endpoint(doc, args.node, args.url),
        f"endpoint of {args.node} set",
    )


def witness_policy_cmd(args: argparse.Namespace) -> int:
    return _edit(
        args,
        lambda doc: directory_edit.set_witness_quorum(doc, args.quorum),
        f"witness quorum set to {args.quorum}",
    )


def add_tls_cmd(args: argparse.Namespace) -> int:
    try:
        cert_der = cert_der_from_pem(args.cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError("bad_certificate", f"{args.cert}: {exc}") from exc
    not_before = _time(args.not_before)
    return _edit(
        args,
        lambda doc: directory_edit.add_tls(doc, args.node, cert_der, not_before=not_before),
        f"certificate pinned for {args.node}",
    )


def remove_key_cmd(args: argparse.Namespace) -> int:
    return _edit(
        args,
        lambda doc: directory_edit.remove_key(doc, args.node, args.key_id),
        f"{args.key_id} removed from {args.node}",
    )


def set_validity_cmd(args: argparse.Namespace) -> int:
    not_before, expires = _time(args.not_before), _time(args.expires)
    return _edit(
        args,
        lambda doc: directory_edit.set_validity(
            doc, args.node, args.key_id, not_before=not_before, expires=expires
        ),
        f"validity of {args.key_id} set",
    )


def revoke_key_cmd(args: argparse.Namespace) -> int:
    at = _time(args.at) or _now()
    return _edit(
        args,
        lambda doc: directory_edit.revoke(doc, args.node, args.key_id, at=at, reason=args.reason),
        f"{args.key_id} of {args.node} revoked from {rfc3339(at)} ({args.reason})",
    )


def set_operators_cmd(args: argparse.Namespace) -> int:
    keys = [load_operator_public_key(p) for p in args.operator]
    return _edit(
        args,
        lambda doc: directory_edit.set_operators(doc, keys, args.threshold),
        f"operators: {args.threshold} of {len(keys)} (the next version needs the old and the new)",
    )


def bump_cmd(args: argparse.Namespace) -> int:
    now = _now()
    return _edit(
        args,
        lambda doc: directory_edit.bump(
            doc, now=now, validity=_days(args.valid_days), version=args.version
        ),
        "new version",
    )


# --- signatures ------------------------------------------------------------------------------


def sign_cmd(args: argparse.Namespace) -> int:
    source = read_json(args.draft)
    key = load_operator_key(args.key, unlocker(args))
    if "payload" in source and "signatures" in source:
        # Co-sign the exact bytes others signed, whatever tool wrote them.
        document = directory_edit.as_document(source)
        signature = sign_directory(document, [key])
        if signature["payload"] != source["payload"]:
            raise DirectoryError("payload_mismatch", "the signed payload is not canonical JSON")
    else:
        document = directory_edit.checked(source)
        signature = sign_directory(document, [key])
    write_json(args.out, signature)
    print(f"signed v{document['version']} ({document['federation']}) with {key.kid} -> {args.out}")
    return 0


def merge_cmd(args: argparse.Namespace) -> int:
    merged = merge_signatures(*(read_json(p) for p in args.signatures))
    write_json(args.out, merged)
    print(f"{len(merged['signatures'])} signature(s) merged -> {args.out}")
    return 0


def verify_cmd(args: argparse.Namespace) -> int:
    trust = TrustRoot.from_document(read_json(args.trust_root))
    signed = read_json(args.directory)
    now = _now()
    if args.previous is not None:
        previous = verify_held(read_json(args.previous), trust, now=now)
        directory = check_directory(signed, trust_root=trust, previous=previous, now=now)
        trusted = effective_operators(previous, trust)
    else:
        directory = verify_initial(signed, trust, now=now)
        trusted = trust
    print(
        f"directory {directory.federation} v{directory.version} verifies; "
        f"expires {directory.expires_at.isoformat()}; nodes {', '.join(directory.nodes)}"
    )
    _print_signers(signed, "trusted operators", trusted)
    own = effective_operators(directory, trust)
    if own is not trusted:
        _print_signers(signed, "its own operators", own)
    return 0


def _print_signers(signed: dict[str, Any], label: str, operators: TrustRoot) -> None:
    signers = valid_signers(signed, operators)
    print(
        f"  signed by {len(signers)} of {len(operators.keys)} {label} "
        f"(threshold {operators.threshold}): {', '.join(sorted(signers))}"
    )


def diff_cmd(args: argparse.Namespace) -> int:
    old = directory_edit.as_document(read_json(args.old))
    new = directory_edit.as_document(read_json(args.new))
    lines = directory_edit.diff(old, new)
    for line in lines:
        print(line)
    if not lines:
        print("no changes")
    return 0


# --- distribution ----------------------------------------------------------------------------


def install_cmd(args: argparse.Namespace) -> int:
    """Install into a node's data directory, by the same rules the running node applies.

    A running node picks the new file up at its next refresh.
    """
    trust_doc, signed = read_json(args.trust_root), read_json(args.directory)
    trust = TrustRoot.from_document(trust_doc)
    now = _now()
    held_path = args.dir / "directory.json"
    held: Directory | None = None
    if held_path.exists():
        try:
            held = verify_held(read_json(held_path), trust, now=now)
        except DirectoryError:
            held = None  # a broken or foreign file: install as a first directory
    directory = check_directory(signed, trust_root=trust, previous=held, now=now)
    publish([args.dir], signed, trust_doc)
    print(f"installed directory v{directory.version} into {args.dir}")
    try:
        database_url = load_config(args.dir).database_url
        asyncio.run(directory_history.record_in_database(database_url, directory, seen_at=now))
    except (PuenteError, OSError, SQLAlchemyError) as exc:
        # The file is what the node runs on; the history catches up when it starts.
        print(f"note: not recorded in the directory history yet ({type(exc).__name__})")
    return 0


def history_cmd(args: argparse.Namespace) -> int:
    """List what the node has verified, or print one version (to check old evidence)."""

    async def work(ctx: NodeContext) -> list[DirectoryVersion] | Mapping[str, Any] | None:
        await upgrade_to_head(ctx.engine)
        if args.version is not None:
            return await directory_history.signed_version(ctx.sessions, args.version)
        return await directory_history.list_versions(ctx.sessions)

    found = with_node(args.dir, work)
    if args.version is not None:
        if found is None:
            raise DirectoryError("directory_version_unknown", f"no version {args.version} here")
        print(json.dumps(found, indent=2))
        return 0
    assert isinstance(found, list)
    for row in found:
        print(
            f"v{row.version}  first seen {rfc3339(row.first_seen_at)}  "
            f"expires {rfc3339(row.expires_at)}  sha256 {row.digest}"
        )
    return 0


def publish_cmd(args: argparse.Namespace) -> int:
    paths = publish_for_sources(args.out_dir, read_json(args.directory))
    print("published " + ", ".join(str(p) for p in paths))
    return 0


# --- arguments -------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _days(days: float) -> dt.timedelta:
    if days <= 0:
        raise ConfigError("bad_validity", "a directory must be valid for some time")
    return dt.timedelta(days=days)


def _time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise ConfigError("bad_time", f"{text!r} is not an RFC 3339 time with a zone") from exc
