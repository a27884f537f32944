"""Made-up tokens are refused per address before authentication, and barely touch the log.

Before: every request with a random token was authenticated against the
database and wrote its own permanent ``api.refused`` entry, so anyone who
could reach the port could grow the append-only log without bound. Now each
client address has a token bucket in front of authentication (429 with
``Retry-After`` once it is spent), and refusals before authentication are
counted into one ``api.unauthenticated`` entry per source and minute.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from sqlalchemy import func, select

from node.storage.context import NodeContext
from node.storage.models import AuditEntry
from tests.support.api import client_ssl, running_api, user_token
from tests.support.cases import MovableClock
from tests.support.nodes import GT, MX, DatabaseFactory, live_federation

BURST = 20


def random_token() -> str:
    return f"pnt_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


@asynccontextmanager
async def from_address(ctx: NodeContext, address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from ``address`` (any of 127.0.0.0/8 on loopback)."""
    connector = aiohttp.TCPConnector(ssl=client_ssl(ctx), local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def flood(ctx: NodeContext, address: str, requests: int) -> list[tuple[int, str]]:
    """``requests`` calls, each with a new made-up token; (status, reason) of each."""
    answers = []
    async with from_address(ctx, address) as session:
        for _ in range(requests):
            async with session.get(
                f"https://127.0.0.1:{ctx.config.api.port}/api/v1/me",
                headers={"Authorization": f"Bearer {random_token()}"},
            ) as response:
                problem = await response.json(content_type=None)
                if response.status == 429:
                    assert int(response.headers["Retry-After"]) >= 1
                answers.append((response.status, problem["reason"]))
    return answers


async def log_size(ctx: NodeContext) -> int:
    async with ctx.sessions() as session:
        counted = await session.execute(select(func.count()).select_from(AuditEntry))
        return int(counted.scalar_one())


async def test_random_tokens_are_throttled_per_address_and_counted_not_logged_one_by_one(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(tmp_path, database_factory, (MX, GT), clock=clock) as nodes:
        ctx = nodes["GT"].ctx
        ctx.config = dataclasses.replace(
            ctx.config,
            api=dataclasses.replace(
                ctx.config.api, preauth_rate_per_second=0.01, preauth_burst=BURST
            ),
        )
        async with running_api(ctx):
            officer = await user_token(ctx, "ana.officer", "reception_officer", "gt-reception")
            before = await log_size(ctx)

            first = await flood(ctx, "127.0.0.1", 150)
            assert first[:BURST] == [(401, "invalid_token")] * BURST
            assert first[BURST:] == [(429, "rate_limited")] * (150 - BURST)
            second = await flood(ctx, "127.0.0.2", 60)
            assert second.count((401, "invalid_token")) == BURST
            clock.advance(dt.timedelta(minutes=1))
            third = await flood(ctx, "127.0.0.1", 40)
            assert set(third) == {(429, "rate_limited")}

            # Another address is served: the limit is per address, not for everyone.
            async with (
                from_address(ctx, "127.0.0.3") as session,
                session.get(
                    f"https://127.0.0.1:{ctx.config.api.port}/api/v1/me",
                    headers={"Authorization": f"Bearer {officer}"},
                ) as response,
            ):
                assert response.status == 200
        # Stopping the API writes what was still being counted.
        grown = await log_size(ctx) - before
        async with ctx.sessions() as db:
            rows = (
                await db.execute(
                    select(AuditEntry)
                    .where(AuditEntry.event == "api.unauthenticated")
                    .order_by(AuditEntry.seq)
                )
            ).scalars()
            tallies = [json.loads(row.entry) for row in rows]

    # 250 refusals from two sources over two minutes: three entries.
    assert grown == 3, f"the log grew by {grown} entries for 250 refused requests"
    counted = {(t["source"], t["minute"]) for t in tallies}
    assert len(counted) == 3
    assert sorted(t["count"] for t in tallies) == [40, 60, 150]
    by_source: dict[str, list[int]] = {}
    for tally in tallies:
        assert tally["count"] == sum(tally["reasons"].values())
        assert set(tally["reasons"]) <= {"invalid_token", "rate_limited"}
        by_source.setdefault(tally["source"], []).append(tally["count"])
    assert sorted(by_source) == ["127.0.0.1", "127.0.0.2"]
    assert sorted(by_source["127.0.0.1"]) == [40, 150]
