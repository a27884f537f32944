"""``puente users``: local API users and their bearer tokens."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from node.api import users
from node.commands._util import with_node
from node.storage.context import NodeContext
from node.storage.migrate import upgrade_to_head


def register(sub: Any) -> None:
    users_p = sub.add_parser("users", help="local API users and tokens")
    users_sub = users_p.add_subparsers(dest="users_command", required=True)

    add = users_sub.add_parser("add", help="create a user")
    add.add_argument("--dir", type=Path, required=True)
    add.add_argument("--username", required=True)
    add.add_argument("--role", required=True, choices=[r.value for r in users.Role])
    add.add_argument("--authority", required=True, help="the one authority the user belongs to")
    add.set_defaults(handler=add_cmd)

    token = users_sub.add_parser("token", help="issue a bearer token (shown once)")
    token.add_argument("--dir", type=Path, required=True)
    token.add_argument("--username", required=True)
    token.add_argument("--days", type=float, default=30)
    token.set_defaults(handler=token_cmd)

    revoke = users_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("--dir", type=Path, required=True)
    revoke.add_argument("--token-id", required=True)
    revoke.set_defaults(handler=revoke_cmd)

    listing = users_sub.add_parser("list", help="users and their tokens")
    listing.add_argument("--dir", type=Path, required=True)
    listing.set_defaults(handler=list_cmd)


def add_cmd(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> str:
        await upgrade_to_head(ctx.engine)
        user = await users.create_user(
            ctx, username=args.username, role=args.role, authority=args.authority
        )
        return user.username

    username = with_node(args.dir, work)
    print(f"user {username} ({args.role}, {args.authority}) created")
    return 0


def token_cmd(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> str:
        await upgrade_to_head(ctx.engine)
        token, _ = await users.issue_token(
            ctx, args.username, lifetime=dt.timedelta(days=args.days)
        )
        return token

    print(with_node(args.dir, work))
    return 0


def revoke_cmd(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> None:
        await users.revoke_token(ctx, args.token_id)

    with_node(args.dir, work)
    print(f"token {args.token_id} revoked")
    return 0


def list_cmd(args: argparse.Namespace) -> int:
    async def work(ctx: NodeContext) -> list[tuple[Any, list[Any]]]:
        return list(await users.list_users(ctx))

    for user, tokens in with_node(args.dir, work):
        active = [t for t in tokens if t.revoked_at is None]
        last = max((t.last_used_at for t in tokens if t.last_used_at), default=None)
        print(
            f"{user.username:<24} {user.role:<18} {user.authority:<28} "
            f"tokens={len(active)} last_used={last.isoformat() if last else '-'}"
        )
    return 0
