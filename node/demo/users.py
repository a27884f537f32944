"""The demo's local API access: one user per journey, tokens in a 0600 file.

Printed after the story so that a newcomer can follow docs/api.md with curl
against the running demo nodes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TextIO

from sqlalchemy import select

from node.api import users
from node.storage.api_models import User
from node.storage.context import open_node
from node.storage.migrate import upgrade_to_head
from node.trust.keys import write_private_file

DEMO_USERS = (
    ("MX", "caseworker.mx", "caseworker", "mx-inm"),
    ("GT", "officer.gt", "reception_officer", "gt-reception-la-aurora"),
    ("HN", "officer.hn", "reception_officer", "hn-camr-sps"),
    ("GT", "auditor.gt", "auditor", "dpa-gt"),
    ("MX", "admin.mx", "admin", "mx-operator"),
    # The critical route's protection institution reads its handoffs in the inbox.
    ("GT", "protection.gt", "reception_officer", "gt-proteccion-victimas"),
)


async def provision_demo_users(base: Path, out: TextIO) -> Path:
    """Create the demo users (once) and fresh 1-day tokens; print how to call the API."""
    lines = []
    for node_id, username, role, authority in DEMO_USERS:
        ctx = open_node(base / node_id)
        try:
            await upgrade_to_head(ctx.engine)
            async with ctx.sessions() as session:
                exists = await session.execute(select(User).where(User.username == username))
            if exists.scalar_one_or_none() is None:
                await users.create_user(ctx, username=username, role=role, authority=authority)
            token, _ = await users.issue_token(ctx, username, lifetime=dt.timedelta(days=1))
            cert = ctx.keys.tls.cert_path
            url = f"https://{ctx.config.api.host}:{ctx.config.api.port}"
            lines.append(f"{node_id} {role:<18} {username:<14} {url} {cert} {token}")
        finally:
            await ctx.close()
    tokens_file = base / "api-tokens.txt"
    header = "# node role username api-url tls-certificate token   (secrets: keep private)\n"
    write_private_file(tokens_file, (header + "\n".join(lines) + "\n").encode())
    node_id, _, _, _ = DEMO_USERS[1]
    officer = lines[1].split()
    print(f"\nLocal API (docs/api.md): users and 1-day tokens are in {tokens_file}", file=out)
    print(
        f"  e.g. GT's reception inbox:\n"
        f"  curl --cacert {officer[4]} -H 'Authorization: Bearer <token of {officer[2]}>' "
        f"{officer[3]}/api/v1/inbox",
        file=out,
    )
    return tokens_file
