"""Node set-up and operation: init, serve, migrate, send, status."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from node.commands._util import with_node
from node.config import AUTHORITY_KINDS, AuthorityConfig
from node.context import NodeContext, open_node
from node.errors import ConfigError
from node.logs import configure_logging, get_logger
from node.nodeinit import init_node
from node.storage.migrate import upgrade_to_head
from node.storage.models import Disclosure


def _authority(text: str) -> AuthorityConfig:
    try:
        authority_id, kind, name = text.split(":", 2)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("use ID:KIND:DISPLAY NAME") from exc
    if kind not in AUTHORITY_KINDS:
        raise argparse.ArgumentTypeError(f"kind must be one of {', '.join(AUTHORITY_KINDS)}")
    return AuthorityConfig(authority_id, kind, {"es": name, "en": name})


def register(sub: Any) -> None:
    init_p = sub.add_parser("init", help="create a node's data directory and keys")
    init_p.add_argument("--dir", type=Path, required=True)
    init_p.add_argument("--id", required=True, help="ISO 3166-1 alpha-2 code, e.g. MX")
    init_p.add_argument("--name", required=True)
    init_p.add_argument("--host", default="127.0.0.1")
    init_p.add_argument("--port", type=int, default=8443)
    init_p.add_argument("--api-port", type=int, default=0, help="local API port (0: none)")
    init_p.add_argument("--public-url", help="the URL peers use (default https://HOST:PORT)")
    init_p.add_argument("--database-url", help="e.g. postgresql+asyncpg://… (default SQLite)")
    init_p.add_argument(
        "--authority",
        type=_authority,
        action="append",
        required=True,
        help="ID:KIND:DISPLAY NAME, repeatable",
    )
    init_p.set_defaults(handler=init)

    serve_p = sub.add_parser("serve", help="run the node")
    serve_p.add_argument("--dir", type=Path, required=True)
    serve_p.add_argument("--log-level", default="info")
    serve_p.set_defaults(handler=serve)

    migrate_p = sub.add_parser("migrate", help="bring the database schema up to date")
    migrate_p.add_argument("--dir", type=Path, required=True)
    migrate_p.set_defaults(handler=migrate)

    send_p = sub.add_parser("send", help="queue a case summary for delivery")
    send_p.add_argument("--dir", type=Path, required=True)
    send_p.add_argument("--from", dest="sender", required=True, help="sending authority id")
    send_p.add_argument("--to", required=True, help="NODE/AUTHORITY, e.g. GT/gt-reception-x")
    send_p.add_argument("--type", default="return_notice")
    send_p.add_argument("--file", type=Path, required=True, help="the document, JSON")
    send_p.add_argument("--ttl-hours", type=float)
    send_p.set_defaults(handler=send)

    status_p = sub.add_parser("status", help="disclosures and their delivery state")
    status_p.add_argument("--dir", type=Path, required=True)
    status_p.add_argument("--json", action="store_true")
    status_p.set_defaults(handler=status)


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
        api_port=args.api_port,
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
    api_runner = None
    if ctx.config.api.port:
        from node.api.app import create_api_app, start_api_site

        api_runner = await start_api_site(create_api_app(ctx), ctx)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("node_stopping", node=ctx.node_id)
    if api_runner is not None:
        await api_runner.cleanup()
    await runner.cleanup()


def migrate(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> None:
        await upgrade_to_head(ctx.engine)

    with_node(args.dir, work)
    print("database schema is up to date")
    return 0


def send(args: argparse.Namespace) -> int:
    from node.outbox import queue_disclosure

    node_id, _, authority = args.to.partition("/")
    try:
        body = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("bad_document", f"{args.file}: {exc}") from exc

    async def work(ctx: NodeContext) -> str:
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

    message_id = with_node(args.dir, work)
    print(f"queued {message_id}; the running node delivers it (see `puente status`)")
    return 0


def status(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> list[Disclosure]:
        async with ctx.sessions() as session:
            query = select(Disclosure).order_by(Disclosure.created_at)
            return list((await session.execute(query)).scalars())

    rows = with_node(args.dir, work)
    if args.json:
        print(json.dumps([disclosure_json(r) for r in rows], indent=2))
        return 0
    for row in rows:
        extra = row.refusal_reason or row.last_error or ""
        print(
            f"{row.message_id}  {row.doc_type:<14} -> {row.recipient_node}/"
            f"{row.recipient_authority:<28} {row.state:<10} attempts={row.attempts} {extra}"
        )
    print(f"{len(rows)} disclosure(s)")
    return 0


def disclosure_json(row: Disclosure) -> dict[str, object]:
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
