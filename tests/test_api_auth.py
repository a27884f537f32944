"""Local API authentication and protection, over real HTTPS."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from node.api import users
from node.api.app import create_api_app, start_api_site
from node.storage.api_models import ApiToken
from node.storage.models import AuditEntry
from tests.support.api import api_client, running_api, user_token
from tests.support.nodes import DatabaseFactory, live_federation


async def test_tokens_are_required_valid_unexpired_and_unrevoked(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        ctx = nodes["GT"].ctx
        async with running_api(ctx):
            token = await user_token(ctx, "ana.officer", "reception_officer", "gt-reception")
            async with api_client(ctx, None) as anonymous:
                status, problem = await anonymous.call("GET", "/api/v1/me")
                assert (status, problem["reason"]) == (401, "missing_token")
                # Operators' endpoints need no token.
                assert (await anonymous.call("GET", "/healthz"))[0] == 200
                assert (await anonymous.call("GET", "/api/v1/openapi.json"))[0] == 200
            for bad, reason in (
                ("pnt_0123456789abcdef_" + "A" * 43, "invalid_token"),
                ("not-a-token", "invalid_token"),
                (token[:-1] + ("A" if token[-1] != "A" else "B"), "invalid_token"),
            ):
                async with api_client(ctx, bad) as client:
                    status, problem = await client.call("GET", "/api/v1/me")
                    assert (status, problem["reason"]) == (401, reason)
            async with api_client(ctx, token) as client:
                status, me = await client.call("GET", "/api/v1/me")
                assert status == 200
                assert me == {
                    "username": "ana.officer",
                    "role": "reception_officer",
                    "authority": "gt-reception",
                }
            token_id = token.split("_")[1]
            async with ctx.sessions() as session:
                stored = await session.get(ApiToken, token_id)
            assert stored is not None and stored.last_used_at is not None
            assert token.split("_")[2] not in stored.secret_sha256  # only the hash is kept

            await users.revoke_token(ctx, token_id)
            async with api_client(ctx, token) as client:
                status, problem = await client.call("GET", "/api/v1/me")
                assert (status, problem["reason"]) == (401, "token_revoked")

            short, _ = await users.issue_token(ctx, "ana.officer", lifetime=dt.timedelta(seconds=1))
            later = ctx.now() + dt.timedelta(seconds=5)
            ctx.clock = lambda: later
            async with api_client(ctx, short) as client:
                status, problem = await client.call("GET", "/api/v1/me")
                assert (status, problem["reason"]) == (401, "token_expired")
        async with ctx.sessions() as session:
            entries = (await session.execute(select(AuditEntry))).scalars().all()
        # Refusals before authentication are counted per source and minute (node.api.preauth).
        tallies = [json.loads(e.entry) for e in entries if e.event == "api.unauthenticated"]
        assert not [e for e in entries if e.event == "api.refused"]
        reasons: Counter[str] = Counter()
        for tally in tallies:
            assert tally["source"] == "127.0.0.1"
            assert tally["count"] == sum(tally["reasons"].values())
            reasons.update(tally["reasons"])
        assert reasons == {
            "missing_token": 1,
            "invalid_token": 3,
            "token_revoked": 1,
            "token_expired": 1,
        }
        assert {u for t in tallies for u in t.get("users", [])} == {"ana.officer"}


async def test_roles_must_fit_the_authority(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        ctx = nodes["GT"].ctx
        for username, role, authority, reason in (
            ("x1", "reception_officer", "mx-inm", "unknown_authority"),
            ("x2", "caseworker", "gt-reception", "role_authority_mismatch"),
            ("x3", "superuser", "gt-reception", "bad_role"),
            ("Bad Name", "auditor", "dpa-gt", "bad_username"),
        ):
            with pytest.raises(users.UserError) as refused:
                await users.create_user(ctx, username=username, role=role, authority=authority)
            assert refused.value.reason == reason
        await users.create_user(ctx, username="dpa.auditor", role="auditor", authority="dpa-gt")


async def test_rate_limit_body_limit_and_bad_input_are_problems(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory) as nodes:
        ctx = nodes["GT"].ctx
        ctx.config = dataclasses.replace(
            ctx.config,
            api=dataclasses.replace(
                ctx.config.api, rate_per_second=0.01, burst=3, max_body_bytes=2048
            ),
        )
        app = create_api_app(ctx)
        runner = await start_api_site(app, ctx)
        try:
            admin = await user_token(ctx, "ops", "admin", "gt-operator")
            async with api_client(ctx, admin) as client:
                status, problem = await client.call(
                    "POST", "/api/v1/admin/users", json={"username": "u", "role": "x"}
                )
                assert (status, problem["reason"]) == (422, "invalid_request")
                assert "/role" in problem["detail"] or "/" in problem["detail"]
                async with client.session.post(
                    client.base_url + "/api/v1/admin/users",
                    data=b"{not json",
                    headers={
                        "Authorization": f"Bearer {admin}",
                        "Content-Type": "application/json",
                    },
                ) as response:
                    assert response.status == 400
                    assert (await response.json(content_type=None))["reason"] == "invalid_json"
                async with client.session.post(
                    client.base_url + "/api/v1/admin/users",
                    data=b"{" + b" " * 5000 + b"}",
                    headers={
                        "Authorization": f"Bearer {admin}",
                        "Content-Type": "application/json",
                    },
                ) as response:
                    assert response.status == 413
                    assert response.content_type == "application/problem+json"
                status, problem = await client.call("GET", "/api/v1/me")
                assert (status, problem["reason"]) == (429, "rate_limited")
        finally:
            await runner.cleanup()
