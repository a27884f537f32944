"""A node administrator's key tasks: rotate, see, protect, activate.

``puente keys rotate`` makes a new key and the node entry that publishes it;
the operators sign a directory with it; the running node switches to it when
it comes into force (node.federation.key_rotation). Keys are encrypted at rest under the
operator passphrase (node.trust.at_rest); ``protect`` encrypts keys made without one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from node.commands._passphrase import (
    UNPROTECTED_WARNING,
    add_passphrase_argument,
    new_passphrase,
    unlocker,
)
from node.commands._util import with_node
from node.core.clock import rfc3339
from node.core.config import NodeConfig, load_config
from node.core.errors import KeyStoreError
from node.federation.key_rotation import (
    DEFAULT_LEAD,
    DEFAULT_OVERLAP,
    KINDS,
    activate_due_keys,
    rotate_key,
)
from node.storage.context import NodeContext, open_node
from node.storage.migrate import upgrade_to_head
from node.trust.at_rest import describe, is_wrapped, tls_key_password, unwrap_jwk, wrap_jwk
from node.trust.directory import MemberNode
from node.trust.keys import read_private_file, write_private_file
from node.trust.validity import KeyValidity


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the node's keys: rotate, status, protect, activate")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    rotate = keys_sub.add_parser("rotate", help="make a new key and the entry that publishes it")
    rotate.add_argument("--dir", type=Path, required=True)
    rotate.add_argument("--kind", choices=KINDS, required=True)
    rotate.add_argument(
        "--lead-hours",
        type=float,
        default=DEFAULT_LEAD.total_seconds() / 3600,
        help="hours from now until the new key may be used (time to publish it)",
    )
    rotate.add_argument(
        "--overlap-days",
        type=float,
        default=DEFAULT_OVERLAP.total_seconds() / 86400,
        help="days the old key stays valid after the new one starts",
    )
    add_passphrase_argument(rotate)
    rotate.set_defaults(handler=rotate_cmd)

    status = keys_sub.add_parser("status", help="held keys, what is published and active")
    status.add_argument("--dir", type=Path, required=True)
    status.add_argument("--json", action="store_true")
    add_passphrase_argument(status)
    status.set_defaults(handler=status_cmd)

    protect = keys_sub.add_parser("protect", help="encrypt unprotected private keys")
    protect.add_argument("--dir", type=Path, required=True)
    add_passphrase_argument(protect)
    protect.set_defaults(handler=protect_cmd)

    activate = keys_sub.add_parser(
        "activate", help="switch a stopped node to its keys now in force (serve does this itself)"
    )
    activate.add_argument("--dir", type=Path, required=True)
    add_passphrase_argument(activate)
    activate.set_defaults(handler=activate_cmd)


def rotate_cmd(args: argparse.Namespace) -> int:
    rotation = rotate_key(
        args.dir,
        args.kind,
        now=dt.datetime.now(dt.UTC),
        lead=dt.timedelta(hours=args.lead_hours),
        overlap=dt.timedelta(days=args.overlap_days),
        unlocker=unlocker(args),
    )
    print(f"new {rotation.kind} key {rotation.new_id}")
    print(f"  in force from {rfc3339(rotation.not_before)}")
    print(f"  the previous {rotation.kind} key stays valid until {rfc3339(rotation.old_expire)}")
    print(f"give {rotation.entry_path} to the federation operators (federation add-node --replace)")
    print("the node switches by itself once a directory publishing the key is installed")
    if not rotation.protected:
        print(UNPROTECTED_WARNING)
    return 0


def status_cmd(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> list[dict[str, Any]]:
        return _status(ctx)

    rows = with_node(args.dir, work, unlocker=unlocker(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(
            f"{row['kind']:<10} {row['id']}  {row['state']:<11} {row['at_rest']:<13} "
            f"{row['validity']}"
        )
    return 0


def _status(ctx: NodeContext) -> list[dict[str, Any]]:
    member = ctx.directory.node(ctx.node_id)
    keys_dir = ctx.config.keys_dir
    active = {
        "signing": str(ctx.keys.signing.kid),
        "encryption": ctx.keys.active_encryption_kid,
        "tls": ctx.keys.tls.pin,
    }
    held = {
        "signing": sorted((keys_dir / "signing").glob("*.jwk")),
        "encryption": sorted((keys_dir / "encryption").glob("*.jwk")),
        "tls": sorted((keys_dir / "tls").glob("*.key")),
    }
    rows = []
    for kind in KINDS:
        for path in held[kind]:
            key_id = path.stem
            published = member is not None and _published(member, kind, key_id)
            validity = member.key_validity(key_id) if member else KeyValidity()
            state = (
                "active" if key_id == active[kind] else "published" if published else "unpublished"
            )
            rows.append(
                {
                    "kind": kind,
                    "id": key_id,
                    "state": state,
                    "at_rest": describe(path),
                    "validity": _validity_text(validity) if published else "",
                }
            )
    return rows


def _published(member: MemberNode, kind: str, key_id: str) -> bool:
    lists = {
        "signing": member.signing_keys,
        "encryption": member.encryption_keys,
        "tls": member.tls_certificates,
    }
    return key_id in lists[kind]


def _validity_text(validity: KeyValidity) -> str:
    parts = []
    if validity.not_before:
        parts.append(f"from {rfc3339(validity.not_before)}")
    if validity.expires:
        parts.append(f"until {rfc3339(validity.expires)}")
    if validity.revoked_at:
        parts.append(f"REVOKED {rfc3339(validity.revoked_at)} ({validity.revocation_reason})")
    return ", ".join(parts) or "no limits"


def protect_cmd(args: argparse.Namespace) -> int:
    config = load_config(args.dir)
    passphrase = new_passphrase(args)
    if passphrase is None:
        raise KeyStoreError("no_passphrase", "give --passphrase-file or PUENTE_KEY_PASSPHRASE")
    done = _protect(config, passphrase)
    # Prove the node opens with it before telling the administrator it is done.
    open_node(args.dir, unlocker=unlocker(args))
    print(f"{done} key file(s) encrypted; the node's keys are protected at rest")
    return 0


def _protect(config: NodeConfig, passphrase: bytes) -> int:
    done = 0
    # The audit log's checkpoint and witness keys are signing keys like the others.
    for kind in ("signing", "encryption", "audit-log", "witness"):
        for path in sorted((config.keys_dir / kind).glob("*.jwk")):
            raw = read_private_file(path)
            if is_wrapped(raw):
                unwrap_jwk(raw, passphrase, where=str(path))  # same passphrase for all keys
                continue
            write_private_file(path, wrap_jwk(json.loads(raw), passphrase).encode("ascii"))
            done += 1
    for path in sorted((config.keys_dir / "tls").glob("*.key")):
        raw = read_private_file(path)
        password = tls_key_password(passphrase, path.stem)
        if b"ENCRYPTED PRIVATE KEY" in raw:
            continue
        key = serialization.load_pem_private_key(raw, password=None)
        write_private_file(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(password),
            ),
        )
        done += 1
    return done


def activate_cmd(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> dict[str, tuple[str, str]]:
        await upgrade_to_head(ctx.engine)
        return (await activate_due_keys(ctx)).changed

    changed = with_node(args.dir, work, unlocker=unlocker(args))
    if not changed:
        print("the active keys are the newest in force; nothing to switch")
    for kind, (old, new) in changed.items():
        print(f"{kind}: {old} -> {new}")
    return 0
