"""``puente backup`` and ``puente restore``: one encrypted, signed archive (docs/backup.md).

puente backup keygen --out FILE                      an age identity for the backup recipient
puente backup --dir D --out FILE --recipient age1…   [--include-keys]
puente restore ARCHIVE --dir TARGET --identity FILE  [--node XX --trust-root F --directory F]
                       [--database-url URL] [--restore-data-keys] [--checkpoint FILE]

A backup runs beside a serving node: the database copy is one consistent
snapshot (node.storage.snapshot), then the files are read. Data keys are
read *after* the database copy, so a summary erased before the copy has no
key in the archive (docs/backup.md, "Erasure survives a restore").
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyrage
from joserfc.jwk import OKPKey

from audit.errors import VerificationError
from audit.note import VerifierKey, open_checkpoint
from node import __version__
from node.auditlog import entries as audit
from node.auditlog import tree as audit_tree
from node.auditlog.checkpoints import identity_of, issue_checkpoint, latest_checkpoint
from node.commands import _util
from node.commands._passphrase import add_passphrase_argument, unlocker
from node.core.clock import parse_rfc3339, rfc3339, utcnow
from node.core.config import CONFIG_FILE, default_database_url, load_config
from node.intake.datakeys import is_data_key_file
from node.intake.summaries import key_store
from node.storage import snapshot
from node.storage.context import NodeContext, load_directory, load_trust_root
from node.storage.migrate import upgrade_to_head
from node.trust.archive import ArchiveError, Manifest, open_archive, recipient_of, write_archive
from node.trust.archive import identity_of as age_identity

DATABASE_DIR = "database"
DATA_DIR = "data"
KEYS = "keys"


def register(sub: Any) -> None:
    backup = sub.add_parser(
        "backup",
        help="an encrypted, signed archive of this node (database, config, directory, keys)",
    )
    backup.add_argument("--dir", type=Path, help="the node's data directory")
    backup.add_argument("--out", type=Path, help="the archive to write (e.g. gt-2026-11-23.age)")
    backup.add_argument(
        "--recipient",
        help="who can open it: an age X25519 public key (age1…), from `puente backup keygen`",
    )
    backup.add_argument(
        "--include-keys",
        action="store_true",
        help="also the private key files under keys/ (data keys of erased summaries never are)",
    )
    add_passphrase_argument(backup)
    backup.set_defaults(handler=backup_cmd)
    backup_sub = backup.add_subparsers(dest="backup_command")
    keygen = backup_sub.add_parser("keygen", help="make the recipient's age identity file")
    keygen.add_argument("--out", type=Path, required=True, help="identity file to create (0600)")
    keygen.set_defaults(handler=keygen_cmd)

    restore = sub.add_parser("restore", help="put a node back from a backup archive")
    restore.add_argument("archive", type=Path, help="the archive `puente backup` wrote")
    restore.add_argument(
        "--dir",
        type=Path,
        required=True,
        help="the data directory: new or empty (a new node), or an existing node's, "
        "whose database is empty",
    )
    restore.add_argument(
        "--identity", type=Path, required=True, help="the recipient's age identity file"
    )
    restore.add_argument(
        "--node", help="the node the archive must be of (a new directory), e.g. GT"
    )
    restore.add_argument(
        "--trust-root", type=Path, help="the federation's trust-root.json (a new directory)"
    )
    restore.add_argument(
        "--directory", type=Path, help="the federation's signed directory.json (a new directory)"
    )
    restore.add_argument(
        "--database-url",
        help="an empty database to restore into (default: puente.db in --dir for SQLite, "
        "else the archived configuration's)",
    )
    restore.add_argument(
        "--restore-data-keys",
        action="store_true",
        help="also put back data keys into a node that has lost its key store: summaries "
        "erased after the backup become readable again (docs/backup.md)",
    )
    restore.add_argument(
        "--checkpoint",
        type=Path,
        help="a checkpoint this node published after the backup (from a witness): "
        "the restore says whether the restored log is consistent with it",
    )
    add_passphrase_argument(restore)
    restore.set_defaults(handler=restore_cmd)


def keygen_cmd(args: argparse.Namespace) -> int:
    """Write an age identity (the archive recipient's private key) and print its public key."""
    if args.out.exists():
        raise ArchiveError("already_exists", f"{args.out} exists; choose another file")
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    text = f"# created: {rfc3339(utcnow())}\n# public key: {public}\n{identity}\n"
    descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(text)
    print(public)
    print(f"keep {args.out} offline: it opens every archive made with --recipient {public}")
    return 0


# -- backup -----------------------------------------------------------------


def _required(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
    if missing:
        raise ArchiveError("missing_option", f"backup needs {' and '.join(missing)}")


def _skipped(data_dir: Path, path: Path, database: Path | None, include_keys: bool) -> bool:
    relative = path.relative_to(data_dir)
    if relative.parts[0].startswith(".") or path.name.endswith(".partial"):
        return True  # a backup or restore in progress
    if (
        database is not None
        and path.name.startswith(database.name)
        and path.parent == database.parent
    ):
        return True  # the live database and its -wal / -shm: copied through the backup API
    return relative.parts[0] == KEYS and not include_keys


def _data_files(
    data_dir: Path, database: Path | None, include_keys: bool
) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(files, data keys) of the data directory to archive, by archive name."""
    files: list[tuple[str, Path]] = []
    data_keys: list[tuple[str, Path]] = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        if _skipped(data_dir, path, database, include_keys):
            continue
        name = f"{DATA_DIR}/{path.relative_to(data_dir).as_posix()}"
        (data_keys if is_data_key_file(path) else files).append((name, path))
    return files, data_keys


@dataclass(frozen=True)
class BackupSummary:
    out: Path
    sha256: str
    manifest: Mapping[str, Any]


async def make_backup(
    ctx: NodeContext, out: Path, *, recipient: str, include_keys: bool, user: str
) -> BackupSummary:
    """Write the archive while the node may keep serving; audit it in the node's log."""
    recipient_of(recipient)  # refuse a bad recipient before any work
    data_dir = ctx.config.data_dir
    checkpoint = await issue_checkpoint(ctx)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".backup-") as tmp:
        staging = Path(tmp)
        backend = snapshot.backend_of(ctx.config.database_url)
        copy = staging / ("puente.db" if backend == snapshot.SQLITE else "puente.pgdump")
        await snapshot.copy_database(ctx.config.database_url, copy)
        # Read after the copy: a key destroyed by an erasure the copy holds is gone by now.
        database = (
            snapshot.sqlite_path(ctx.config.database_url).resolve()
            if backend == snapshot.SQLITE
            else None
        )
        files, data_keys = _data_files(data_dir.resolve(), database, include_keys)
        members = [(f"{DATABASE_DIR}/{copy.name}", copy), *files, *data_keys]
        manifest = {
            "node": ctx.node_id,
            "created_at": rfc3339(ctx.now()),
            "puente_version": __version__,
            "database": {"backend": backend, "member": f"{DATABASE_DIR}/{copy.name}"},
            "includes_keys": include_keys,
            "data_keys": len(data_keys),
            "audit_log": {
                "origin": identity_of(ctx).origin,
                "tree_size": checkpoint.tree_size,
                "checkpoint": checkpoint.note,
            },
        }
        signed = await asyncio.to_thread(
            write_archive,
            out,
            members=members,
            manifest=manifest,
            signing_key=ctx.keys.signing,
            recipient=recipient,
            workdir=staging,
        )
    digest = await asyncio.to_thread(_file_sha256, out)
    async with ctx.sessions.begin() as session:
        await audit.append(
            session,
            node=ctx.node_id,
            event="backup.created",
            at=ctx.now(),
            user=user,
            recipient=recipient.strip(),
            includes_keys=include_keys,
            data_keys=len(data_keys),
            archive_sha256=digest,
            tree_size=checkpoint.tree_size,
        )
    return BackupSummary(out, digest, signed)


def _file_sha256(path: Path) -> str:
    import hashlib

    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def backup_cmd(args: argparse.Namespace) -> int:
    _required(args, "dir", "out", "recipient")
    user = f"cli:{getpass.getuser()}"

    async def work(ctx: NodeContext) -> BackupSummary:
        await upgrade_to_head(ctx.engine)
        return await make_backup(
            ctx, args.out, recipient=args.recipient, include_keys=args.include_keys, user=user
        )

    made = _util.with_node(args.dir, work, unlocker=unlocker(args))
    manifest = made.manifest
    keys = "with the private keys" if args.include_keys else "without private keys"
    print(
        f"backup of {manifest['node']} at {manifest['created_at']} ({keys}; "
        f"{manifest['data_keys']} data keys; audit log of "
        f"{manifest['audit_log']['tree_size']} entries) -> {args.out}\n"
        f"sha256 {made.sha256}; only the holder of {manifest['recipient']}'s identity opens it"
    )
    return 0


# -- restore ----------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError as exc:
        raise ArchiveError("no_such_file", f"no {what} at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchiveError("unreadable_file", f"the {what} {path} is unreadable: {exc}") from exc


def _trusted_keys(args: argparse.Namespace, target: Path) -> tuple[str, Any]:
    """(node id, directory) whose published keys must have signed the archive.

    An existing node's own trust root and directory; for a new directory, the
    federation's files and the node the operator says this is.
    """
    now = utcnow()
    if (target / CONFIG_FILE).exists():
        config = load_config(target)
        trust = load_trust_root(config.trust_root_path)
        return config.node_id, load_directory(config.directory_path, trust, now)
    if args.node is None or args.trust_root is None or args.directory is None:
        raise ArchiveError(
            "missing_option",
            "restoring into a new directory needs --node, --trust-root and --directory "
            "(the federation's own files: the archive cannot vouch for itself)",
        )
    trust = load_trust_root(args.trust_root)
    return args.node.upper(), load_directory(args.directory, trust, now)


def _key_lookup(expected: str, directory: Any) -> Any:
    def key_for(node: str, kid: str, manifest: Mapping[str, Any]) -> OKPKey:
        if node != expected:
            raise ArchiveError(
                "backup_wrong_node", f"this is a backup of node {node}, not of {expected}"
            )
        member = directory.node(node)
        if member is None or kid not in member.signing_keys:
            raise ArchiveError(
                "backup_unknown_key", f"{node}'s directory entry publishes no signing key {kid}"
            )
        try:
            made = parse_rfc3339(str(manifest.get("created_at", "")))
        except ValueError as exc:
            raise ArchiveError("backup_malformed", "the manifest has no creation time") from exc
        refusal = member.key_validity(kid).refusal(signed_at=made, seen_at=utcnow())
        if refusal is not None:
            raise ArchiveError(f"backup_key_{refusal}", f"{node}'s key {kid} is {refusal}")
        key: OKPKey = member.signing_keys[kid]
        return key

    return key_for


def _install(source: Path, dest: Path) -> bool:
    """Copy one restored file where it belongs, never over an existing one."""
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(source, dest)
    return True


@dataclass(frozen=True)
class RestoreSummary:
    node: str
    created_at: str
    database_url: str
    files: int
    keys: int
    data_keys: int
    tree_size: int
    checkpoint_size: int
    unreadable_summaries: int
    published: str | None


def _install_files(
    manifest: Manifest, staging: Path, target: Path, *, fresh: bool, data_keys: bool
) -> tuple[int, int, int]:
    """Put the archived files in place: (files, private keys, data keys) installed."""
    files = keys = data = 0
    for name in sorted(manifest.members):
        if not name.startswith(f"{DATA_DIR}/"):
            continue
        relative = Path(name).relative_to(DATA_DIR)
        source, dest = staging / name, target / relative
        if is_data_key_file(relative):
            # Into a node that kept its key store, never: a key missing there was destroyed.
            if data_keys and _install(source, dest):
                data += 1
        elif relative.parts[0] == KEYS:
            keys += _install(source, dest)
        elif fresh:
            files += _install(source, dest)
    return files, keys, data


def _database_url(args: argparse.Namespace, target: Path, backend: str, fresh: bool) -> str:
    if args.database_url:
        return str(args.database_url)
    if fresh and backend == snapshot.SQLITE:
        return default_database_url(target)
    return load_config(target).database_url


async def _check_log(ctx: NodeContext, published: Path | None) -> tuple[int, int, str | None]:
    """(entries, last checkpoint's size, verdict on ``published``) of the restored log.

    Refuses a log whose entries do not match its stored tree, or whose latest
    checkpoint is not signed by the node's log key or not a prefix of it.
    """
    identity = identity_of(ctx)
    vkey = VerifierKey.parse(identity.verifier_key)
    async with ctx.sessions() as session:
        damaged = await audit.first_damaged_entry(session)
        size = await audit.log_size(session)
        latest = await latest_checkpoint(session)
        root = await audit_tree.root_at(session, latest.tree_size) if latest else None
        if damaged is not None:
            raise ArchiveError(
                "restore_log_damaged", f"audit entry {damaged} does not match the stored tree"
            )
        try:
            if latest is not None:
                signed = open_checkpoint(latest.note, vkey).checkpoint
                if signed.root != root:
                    raise VerificationError("root_mismatch", "the log is not its checkpoint's")
            verdict = None
            if published is not None:
                checkpoint = open_checkpoint(published.read_bytes(), vkey).checkpoint
                if checkpoint.size > size:
                    verdict = (
                        f"the federation saw {checkpoint.size} entries; this backup holds "
                        f"{size}: entries {size} to {checkpoint.size - 1} were written after "
                        "the backup and are lost (docs/backup.md)"
                    )
                elif await audit_tree.root_at(session, checkpoint.size) != checkpoint.root:
                    raise VerificationError(
                        "inconsistent_checkpoint", "the published checkpoint is of another log"
                    )
        except VerificationError as exc:
            raise ArchiveError(f"restore_{exc.reason}", exc.detail) from exc
    return size, latest.tree_size if latest else 0, verdict


async def _unreadable(ctx: NodeContext) -> int:
    from sqlalchemy import select

    from node.storage.consent_models import ReceivedSummary

    store = key_store(ctx)
    async with ctx.sessions() as session:
        rows = await session.execute(
            select(ReceivedSummary.data_key_id).where(ReceivedSummary.erased_at.is_(None))
        )
        return sum(1 for key_id in rows.scalars() if not store.exists(key_id))


async def restore(args: argparse.Namespace) -> RestoreSummary:
    target: Path = args.dir
    fresh = not (target / CONFIG_FILE).exists()
    if fresh and target.exists() and any(p.name != KEYS for p in target.iterdir()):
        raise ArchiveError(
            "restore_target_not_empty",
            f"{target} holds files but no {CONFIG_FILE}: restore into a new directory "
            f"(empty, or holding only the node's {KEYS}/ folder)",
        )
    expected, directory = _trusted_keys(args, target)
    identity = age_identity(_read_text(args.identity, "identity file"))
    if not args.archive.is_file():
        raise ArchiveError("no_such_file", f"no archive at {args.archive}")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=target, prefix=".restore-") as tmp:
        staging = Path(tmp)
        manifest = await asyncio.to_thread(
            open_archive,
            args.archive,
            identity=identity,
            into=staging,
            key_for=_key_lookup(expected, directory),
        )
        if fresh and not manifest.document.get("includes_keys") and not (target / KEYS).exists():
            raise ArchiveError(
                "restore_needs_keys",
                f"this archive holds no private keys: put the node's {KEYS}/ folder (kept "
                "since its key ceremony) into the new directory first, then restore into it",
            )
        # Data keys only into a node with no key store at all, and only when asked.
        store = target / KEYS / "summaries"
        put_back_data_keys = args.restore_data_keys and not store.exists()
        files, keys, data_keys = _install_files(
            manifest, staging, target, fresh=fresh, data_keys=put_back_data_keys
        )
        database = manifest.document["database"]
        backend = str(database["backend"])
        url = _database_url(args, target, backend, fresh)
        await snapshot.restore_database(url, staging / str(database["member"]), backend)
    config = load_config(target)
    if config.database_url != url:
        replace(config, database_url=url).save()
    return await _after_restore(args, target, manifest, url, files, keys, data_keys)


async def _after_restore(
    args: argparse.Namespace,
    target: Path,
    manifest: Manifest,
    url: str,
    files: int,
    keys: int,
    data_keys: int,
) -> RestoreSummary:
    from node.storage.context import open_node

    ctx = open_node(target, unlocker=unlocker(args))
    try:
        await upgrade_to_head(ctx.engine)
        size, checkpoint_size, published = await _check_log(ctx, args.checkpoint)
        unreadable = await _unreadable(ctx)
        async with ctx.sessions.begin() as session:
            await audit.append(
                session,
                node=ctx.node_id,
                event="backup.restored",
                at=ctx.now(),
                user=f"cli:{getpass.getuser()}",
                backup_created_at=manifest.created_at,
                archive_sha256=await asyncio.to_thread(_file_sha256, args.archive),
                tree_size=size,
                data_keys_restored=data_keys,
                unreadable_summaries=unreadable,
            )
    finally:
        await ctx.close()
    return RestoreSummary(
        node=manifest.node,
        created_at=manifest.created_at,
        database_url=url,
        files=files,
        keys=keys,
        data_keys=data_keys,
        tree_size=size,
        checkpoint_size=checkpoint_size,
        unreadable_summaries=unreadable,
        published=published,
    )


def restore_cmd(args: argparse.Namespace) -> int:
    done = asyncio.run(restore(args))
    print(
        f"restored {done.node}'s backup of {done.created_at} into {args.dir}: {done.files} "
        f"files, {done.keys} private keys, {done.data_keys} data keys\n"
        f"audit log: {done.tree_size} entries verify against the stored tree and the "
        f"checkpoint of {done.checkpoint_size} the node signed"
    )
    if done.unreadable_summaries:
        print(
            f"{done.unreadable_summaries} received summaries have no data key here (erased, "
            "or keys not restored) and stay unreadable"
        )
    if done.published is not None:
        print(f"WARNING: {done.published}")
        return 1
    return 0
