"""Node set-up and operation: init, serve, migrate, send, status."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
from pathlib import Path
from typing import Any

from node.commands._passphrase import (
    UNPROTECTED_WARNING,
    add_passphrase_argument,
    new_passphrase,
    unlocker,
)
from node.commands._util import with_node
from node.core import testhooks
from node.core.clock import rfc3339
from node.core.config import AUTHORITY_KINDS, AuthorityConfig
from node.core.errors import ConfigError
from node.core.logs import configure_logging, get_logger
from node.delivery import status as delivery_status
from node.storage.context import NodeContext, open_node
from node.storage.migrate import upgrade_to_head
from node.trust.init_node import init_node


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
    add_passphrase_argument(init_p)
    init_p.set_defaults(handler=init)

    serve_p = sub.add_parser("serve", help="run the node")
    serve_p.add_argument("--dir", type=Path, required=True)
    serve_p.add_argument("--log-level", default="info")
    add_passphrase_argument(serve_p)
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

    status_p = sub.add_parser("status", help="peer health and disclosures' delivery state")
    status_p.add_argument("--dir", type=Path, required=True)
    status_p.add_argument("--state", choices=delivery_status.STATES, help="only this state")
    status_p.add_argument("--peer", help="only disclosures to this node, e.g. GT")
    status_p.add_argument("--limit", type=int, default=50, help="newest N disclosures (50)")
    status_p.add_argument("--json", action="store_true")
    status_p.set_defaults(handler=status)


def init(args: argparse.Namespace) -> int:
    passphrase = new_passphrase(args)
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
        passphrase=passphrase,
    )
    print(f"node {config.node_id} initialised in {config.data_dir}")
    print(f"  signing key    {config.signing_kid}")
    print(f"  encryption key {config.encryption_kid}")
    print(f"  TLS pin        {config.tls_pin}")
    print(f"give {config.node_entry_path} to the federation operators;")
    print("install the signed directory with `puente federation install` before serving")
    print("private keys encrypted at rest" if passphrase else UNPROTECTED_WARNING)
    return 0


def serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    asyncio.run(_serve(args.dir, args))
    return 0


async def _serve(data_dir: Path, args: argparse.Namespace) -> None:
    from node.federation.app import create_app, start_site

    log = get_logger("puente.serve")
    # Test-only clock and crash points; refused unless PUENTE_TEST_MODE=1 (node.core.testhooks).
    clock, crash_points = testhooks.from_environment(os.environ)
    ctx = open_node(data_dir, clock=clock, unlocker=unlocker(args))
    ctx.crash_points = crash_points
    app = create_app(ctx)
    runner = await start_site(app, ctx)
    api_runner = None
    if ctx.config.api.port:
        from node.api.app import create_api_app, start_api_site
        from node.federation.app_keys import DELIVERER

        deliverer = app[DELIVERER]
        api_runner = await start_api_site(create_api_app(ctx, on_queued=deliverer.wake), ctx)
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
    from node.casework.at_rest import seal_clear_cases

    async def work(ctx: NodeContext) -> int:
        await upgrade_to_head(ctx.engine)
        return await seal_clear_cases(ctx)

    sealed = with_node(args.dir, work)
    sealed_note = f"; {sealed} case(s) sealed at rest" if sealed else ""
    print(f"database schema is up to date{sealed_note}")
    return 0


def send(args: argparse.Namespace) -> int:
    from node.delivery.outbox import queue_disclosure

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
    async def work(
        ctx: NodeContext,
    ) -> tuple[
        list[delivery_status.PeerHealth], dict[str, int], list[delivery_status.DisclosureView]
    ]:
        await upgrade_to_head(ctx.engine)
        peers = await delivery_status.peers(ctx)
        counts = await delivery_status.counts(ctx)
        rows = await delivery_status.disclosures(
            ctx, state=args.state, peer=args.peer, limit=args.limit
        )
        return peers, counts, rows

    peers, counts, rows = with_node(args.dir, work)
    if args.json:
        document = {
            "peers": [p.as_json() for p in peers],
            "counts": counts,
            "disclosures": [r.as_json() for r in rows],
        }
        print(json.dumps(document, indent=2))
        return 0
    print("peers:")
    for peer in peers:
        reachable = {True: "reachable", False: "UNREACHABLE", None: "not tried"}[peer.reachable]
        retry = f" next retry {rfc3339(peer.next_attempt_at)}" if peer.next_attempt_at else ""
        error = f" last error: {peer.last_error}" if peer.reachable is False else ""
        print(f"  {peer.peer}  {reachable:<11} backlog {peer.backlog}{retry}{error}")
    print("disclosures: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    for row in rows:
        extra = row.refusal_reason or row.last_error or ""
        print(
            f"  {row.message_id}  {row.doc_type:<14} -> {row.recipient_node}/"
            f"{row.recipient_authority:<28} {row.state:<10} attempts={row.attempts} {extra}"
        )
    return 0
