"""What each ``puente`` subcommand does (argument parsing is in node.cli)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
from pathlib import Path

from sqlalchemy import select

from node import audit
from node.context import open_node
from node.directory import TrustRoot, sign_directory, verify_directory
from node.errors import ConfigError
from node.federation import (
    create_operator_key,
    directory_document,
    load_operator_key,
    publish,
    read_json,
    trust_root_document,
    write_json,
)
from node.logs import configure_logging, get_logger
from node.nodeinit import init_node
from node.storage.migrate import upgrade_to_head
from node.storage.models import AuditEntry, Disclosure


def init(args: argparse.Namespace) -> int:
    config = init_node(
        args.dir,
        node_id=args.id,
        name=args.name,
        host=args.host,
        port=args.port,
        authorities=args.authority,
        public_url=args.public_url,
        database_url=args.database_url,
    )
    print(f"node {config.node_id} initialised in {config.data_dir}")
    print(f"  signing key    {config.signing_kid}")
    print(f"  encryption key {config.encryption_kid}")
    print(f"  TLS pin        {config.tls_pin}")
    print(f"give {config.node_entry_path} to the federation operators;")
    print("install the signed directory with `puente federation install` before serving")
    return 0


def serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    asyncio.run(_serve(args.dir))
    return 0


async def _serve(data_dir: Path) -> None:
    from node.server import create_app, start_site

    log = get_logger("puente.serve")
    ctx = open_node(data_dir)
    app = create_app(ctx)
    runner = await start_site(app, ctx)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("node_stopping", node=ctx.node_id)
    await runner.cleanup()


def migrate(args: argparse.Namespace) -> int:
    async def run() -> None:
        ctx = open_node(args.dir)
        try:
            await upgrade_to_head(ctx.engine)
        finally:
            await ctx.close()

    asyncio.run(run())
    print("database schema is up to date")
    return 0


def send(args: argparse.Namespace) -> int:
    from node.outbox import queue_disclosure

    node_id, _, authority = args.to.partition("/")
    try:
        body = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("bad_document", f"{args.file}: {exc}") from exc

    async def run() -> str:
        ctx = open_node(args.dir)
        try:
            await upgrade_to_head(ctx.engine)
            row = await queue_disclosure(
                ctx,
                sender_authority=args.sender,
                recipient_node=node_id,
                recipient_authority=authority,
                doc_type=args.type,
                body=body,
                ttl=dt.timedelta(hours=args.ttl_hours) if args.ttl_hours else None,
            )
            return row.message_id
        finally:
            await ctx.close()

    message_id = asyncio.run(run())
    print(f"queued {message_id}; the running node delivers it (see `puente status`)")
    return 0


def status(args: argparse.Namespace) -> int:
    async def run() -> list[Disclosure]:
        ctx = open_node(args.dir)
        try:
            async with ctx.sessions() as session:
                query = select(Disclosure).order_by(Disclosure.created_at)
                return list((await session.execute(query)).scalars())
        finally:
            await ctx.close()

    rows = asyncio.run(run())
    if args.json:
        print(json.dumps([_disclosure_json(r) for r in rows], indent=2))
        return 0
    for row in rows:
        extra = row.refusal_reason or row.last_error or ""
        print(
            f"{row.message_id}  {row.doc_type:<14} -> {row.recipient_node}/"
            f"{row.recipient_authority:<28} {row.state:<10} attempts={row.attempts} {extra}"
        )
    print(f"{len(rows)} disclosure(s)")
    return 0


def _disclosure_json(row: Disclosure) -> dict[str, object]:
    return {
        "message_id": row.message_id,
        "doc_type": row.doc_type,
        "recipient": f"{row.recipient_node}/{row.recipient_authority}",
        "state": row.state,
        "attempts": row.attempts,
        "refusal_reason": row.refusal_reason,
        "last_error": row.last_error,
        "next_attempt_at": row.next_attempt_at.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }


def evidence(args: argparse.Namespace) -> int:
    from node.evidence import export_evidence

    async def run() -> int:
        ctx = open_node(args.dir)
        try:
            return await export_evidence(ctx, args.out)
        finally:
            await ctx.close()

    count = asyncio.run(run())
    print(f"exported {count} received message(s) with receipts to {args.out}")
    return 0


def federation(args: argparse.Namespace) -> int:
    command = args.federation_command
    if command == "keygen":
        key, path = create_operator_key(args.out)
        print(f"operator key {key.kid} written to {path} (keep it offline)")
    elif command == "trust-root":
        keys = [load_operator_key(p) for p in args.key]
        write_json(args.out, trust_root_document(args.federation, keys, args.threshold))
        print(f"trust root for {args.federation} ({args.threshold} of {len(keys)}) -> {args.out}")
    elif command == "create":
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
    elif command == "verify":
        trust = TrustRoot.from_document(read_json(args.trust_root))
        directory = verify_directory(read_json(args.directory), trust, now=dt.datetime.now(dt.UTC))
        print(
            f"directory {directory.federation} v{directory.version} verifies; "
            f"expires {directory.expires_at.isoformat()}; nodes {', '.join(directory.nodes)}"
        )
    elif command == "install":
        trust_doc, signed = read_json(args.trust_root), read_json(args.directory)
        directory = verify_directory(
            signed, TrustRoot.from_document(trust_doc), now=dt.datetime.now(dt.UTC)
        )
        publish([args.dir], signed, trust_doc)
        print(f"installed directory v{directory.version} into {args.dir}")
    return 0


def audit_command(args: argparse.Namespace) -> int:
    async def run() -> tuple[int, int | None]:
        ctx = open_node(args.dir)
        try:
            async with ctx.sessions() as session:
                query = select(AuditEntry).order_by(AuditEntry.seq)
                rows = (await session.execute(query)).scalars().all()
            return len(rows), audit.verify_chain(rows)
        finally:
            await ctx.close()

    size, broken = asyncio.run(run())
    if broken is not None:
        print(f"audit log of {size} entries: chain BROKEN at entry {broken}")
        return 1
    print(f"audit log of {size} entries: hash chain intact")
    return 0


def demo(args: argparse.Namespace) -> int:
    from node.demo import run_demo

    with contextlib.suppress(BrokenPipeError):
        return run_demo(args.dir, once=args.once, out=sys.stdout)
    return 1
