"""The verifiable audit log end to end on SQLite and PostgreSQL: entries, checkpoints,
export and the independent verifier, tampering behind the node's back, queries, API, CLI."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from audit.__main__ import check_consistency, check_inclusion
from audit.merkle import root_of_entries
from audit.note import VerifierKey
from audit.verify import verify_export
from node.api import routes_audit as audit_api
from node.auditlog import entries as audit
from node.auditlog import queries as audit_queries
from node.auditlog import tree as audit_tree
from node.auditlog.checkpoints import AuditLogError, issue_checkpoint
from node.auditlog.export import export_log
from node.demo.local_federation import build_local_federation
from node.federation.app_keys import CONTEXT
from node.storage.context import NodeContext, open_node
from node.storage.engine import session_factory
from node.storage.migrate import upgrade_to_head
from tests.support.nodes import GT, HN, MX, DatabaseFactory

CASE = "MX-TEST-2026-000042"


@pytest.fixture
async def node(tmp_path: Path, database_factory: DatabaseFactory) -> AsyncIterator[NodeContext]:
    url = await database_factory("mx")
    dirs = build_local_federation(
        tmp_path / "fed",
        [MX, GT, HN],
        federation="test-federation",
        now=dt.datetime.now(dt.UTC),
        database_urls={"MX": url},
    )
    ctx = open_node(dirs["MX"])
    await upgrade_to_head(ctx.engine)
    try:
        yield ctx
    finally:
        await ctx.close()


async def write_entries(ctx: NodeContext, count: int, *, case: str | None = None) -> None:
    assert ctx.audit is not None
    ref = audit.case_pseudonym(ctx.audit.case_secret, case) if case else None
    async with ctx.sessions.begin() as session:
        for i in range(count):
            await audit.append(
                session,
                node=ctx.node_id,
                event="disclosure.queued",
                at=ctx.now(),
                message_id=f"00000000-0000-4000-8000-{i:012d}",
                counterparty="GT" if i % 2 else "HN",
                case_ref=ref,
                purpose="reception_on_return",
                legal_basis="consent" if i % 3 else "vital_interest",
                fields=["arrival.date", "immediate_needs"],
            )


async def tamper(ctx: NodeContext, statement: str) -> None:
    """Change the log behind the node's back: switch the trigger off, as a DBA could."""
    async with ctx.engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            await connection.execute(text("DROP TRIGGER audit_log_no_update"))
        else:
            await connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        await connection.execute(text(statement))


async def test_export_verifies_and_names_a_changed_entry(node: NodeContext, tmp_path: Path) -> None:
    await write_entries(node, 30, case=CASE)
    first = await issue_checkpoint(node)
    await write_entries(node, 12)
    good = await export_log(node, tmp_path / "good")
    report = verify_export(tmp_path / "good")
    assert report.ok, report.verdict()
    assert (report.size, report.entries, report.checkpoints_checked) == (42, 42, 1)
    assert first.tree_size == 30 and good.tree_size == 42

    # Rewrite entry 17 (what was disclosed to whom) directly in the database.
    await tamper(
        node,
        'UPDATE audit_log SET entry = replace(entry, \'"counterparty":"GT"\', '
        '\'"counterparty":"NI"\') WHERE seq = 17',
    )
    async with node.sessions() as session:
        assert await audit.first_damaged_entry(session) == 17
    await export_log(node, tmp_path / "bad")
    report = verify_export(tmp_path / "bad")
    assert not report.ok
    named = [p.entry for p in report.problems if p.reason == "entry_changed"]
    assert named == [17], report.verdict()
    # Without the stored leaf hashes the earlier signed checkpoints still bound it.
    (tmp_path / "bad" / "leaf-hashes").unlink()
    report = verify_export(tmp_path / "bad")
    assert [p.entry for p in report.problems if p.reason == "entry_changed"] == [0]
    assert "from 0 to 29" in report.verdict()
    # The command an auditor runs says the same, in words.
    (tmp_path / "bad" / "leaf-hashes").write_bytes((tmp_path / "good" / "leaf-hashes").read_bytes())
    run = subprocess.run(  # noqa: ASYNC221 - the auditor's own command, run once
        [sys.executable, "-m", "audit", "verify", str(tmp_path / "bad")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert "entry 17 (line 18)" in run.stdout and "FAILED" in run.stdout


async def test_a_deleted_entry_is_named(node: NodeContext, tmp_path: Path) -> None:
    await write_entries(node, 9)
    await export_log(node, tmp_path / "x")
    lines = (tmp_path / "x" / "entries.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "x" / "entries.jsonl").write_bytes(b"".join(lines[:4] + lines[5:]))
    (tmp_path / "x" / "leaf-hashes").unlink()
    report = verify_export(tmp_path / "x")
    reasons = {p.reason: p.entry for p in report.problems}
    assert reasons["entries_missing"] is None and reasons["entry_out_of_place"] == 4


async def test_node_refuses_to_sign_a_checkpoint_inconsistent_with_its_last(
    node: NodeContext,
) -> None:
    await write_entries(node, 5)
    await issue_checkpoint(node)
    await write_entries(node, 3)
    async with node.engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            await connection.execute(text("DROP TRIGGER audit_tree_no_update"))
        else:
            await connection.execute(text("ALTER TABLE audit_tree DISABLE TRIGGER USER"))
        # Replace the tree of 8 and its head by another history, as a forger would.
        await connection.execute(
            text("UPDATE audit_tree SET hash = :h WHERE level = 3 AND idx = 0"), {"h": bytes(32)}
        )
        await connection.execute(text("UPDATE audit_head SET head_hash = :h"), {"h": "00" * 32})
    with pytest.raises(AuditLogError) as refused:
        await issue_checkpoint(node)
    assert refused.value.reason == "log_inconsistent"


async def test_log_tables_are_append_only(node: NodeContext) -> None:
    await write_entries(node, 2)
    await issue_checkpoint(node)
    async with node.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO audit_cosignatures (tree_size, witness_node, cosigner, cosigned_at,"
                " line) VALUES (2, 'GT', 'w', CURRENT_TIMESTAMP, 'l')"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO witness_forks (origin, node, reason, detected_at, cosigned_note,"
                " presented_note) VALUES ('o', 'GT', 'r', CURRENT_TIMESTAMP, 'a', 'b')"
            )
        )
    for statement in (
        "UPDATE audit_tree SET hash = hash",
        "DELETE FROM audit_tree",
        "UPDATE audit_checkpoints SET note = 'x'",
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_cosignatures",
        "UPDATE witness_forks SET reason = 'x'",
        "UPDATE audit_log SET event = 'x'",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with node.engine.begin() as connection:
                await connection.execute(text(statement))


async def test_entries_never_carry_a_raw_case_id(node: NodeContext) -> None:
    await write_entries(node, 3, case=CASE)
    async with node.sessions() as session:
        rows = await audit.entries(session)
    assert all(CASE not in r.entry for r in rows)
    assert {r.case_ref for r in rows} == {audit_queries.case_ref_for(node, CASE)}
    with pytest.raises(ValueError, match="pseudonym"):
        async with node.sessions.begin() as session:
            await audit.append(
                session, node="MX", event="x", at=node.now(), case_ref=audit.CaseRef(CASE)
            )


async def test_queries_subject_report_and_csv(node: NodeContext) -> None:
    await write_entries(node, 6, case=CASE)
    await write_entries(node, 4, case="MX-TEST-2026-000099")
    await issue_checkpoint(node)
    q = audit_queries.EntryQuery
    mine = await audit_queries.query_entries(
        node, q(case_ref=audit_queries.case_ref_for(node, CASE))
    )
    assert [r.seq for r in mine] == list(range(6))
    to_gt = await audit_queries.query_entries(node, q(counterparty="GT", legal_basis="consent"))
    assert [r.seq for r in to_gt] == [1, 5, 7]
    assert len(await audit_queries.query_entries(node, q(start=8, limit=5))) == 2
    everything = await audit_queries.query_entries(node, q())
    since, until = everything[3].recorded_at, everything[7].recorded_at
    window = await audit_queries.query_entries(node, q(since=since, until=until))
    assert [r.seq for r in window] == [r.seq for r in everything if since <= r.recorded_at < until]
    assert window and window[0].seq >= 3
    later = until + dt.timedelta(days=1)
    assert await audit_queries.query_entries(node, q(since=later)) == []
    report = await audit_queries.subject_report(node, CASE)
    assert report["disclosures"] == 6 and report["counterparties"] == ["GT", "HN"]
    assert CASE not in json.dumps(report)
    vkey = VerifierKey.parse(node.audit.verifier_key if node.audit else "")
    for item in report["entries"]:
        assert check_inclusion(item["inclusion"], vkey).startswith("OK")
    csv_text = audit_queries.entries_csv(mine)
    header, first = csv_text.splitlines()[:2]
    assert header.startswith("seq,time,node,event,counterparty")
    assert "arrival.date;immediate_needs" in first


async def _api(node: NodeContext) -> TestServer:
    app = web.Application()
    app[CONTEXT] = node
    audit_api.add_routes(app.router)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_api_answers_proofs_queries_and_refusals(node: NodeContext) -> None:
    await write_entries(node, 7, case=CASE)
    old = await issue_checkpoint(node)
    await write_entries(node, 5)
    await issue_checkpoint(node)
    vkey = VerifierKey.parse(node.audit.verifier_key if node.audit else "")
    server = await _api(node)
    base = f"http://127.0.0.1:{server.port}/api/v1/audit"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/checkpoint") as r:
                doc = await r.json()
            assert r.status == 200 and doc["tree_size"] == 12
            async with http.get(f"{base}/proof/inclusion?index=3") as r:
                assert check_inclusion(await r.json(), vkey).startswith("OK")
            async with http.get(f"{base}/proof/consistency?old={old.tree_size}") as r:
                assert check_consistency(await r.json(), vkey).startswith("OK")
            async with http.get(f"{base}/query?case_id={CASE}&counterparty=GT") as r:
                assert [e["seq"] for e in (await r.json())["entries"]] == [1, 3, 5]
            async with http.get(f"{base}/entries?start=10&format=csv") as r:
                assert r.content_type == "text/csv" and len((await r.text()).splitlines()) == 3
            async with http.get(f"{base}/subject-report?case_id={CASE}") as r:
                assert (await r.json())["disclosures"] == 7
            for url, status, reason in (
                (f"{base}/proof/inclusion?index=99", 400, "entry_not_covered"),
                (f"{base}/proof/inclusion?index=-1", 400, "bad_parameter"),
                (f"{base}/proof/inclusion", 400, "missing_parameter"),
                (f"{base}/checkpoint?size=3", 400, "no_checkpoint"),
                (f"{base}/query?since=yesterday", 400, "bad_parameter"),
                (f"{base}/entries?limit=100000", 400, "bad_range"),
            ):
                async with http.get(url) as r:
                    body = await r.json(content_type=None)
                    assert (r.status, r.content_type, body["reason"]) == (
                        status,
                        "application/problem+json",
                        reason,
                    ), url
    finally:
        await server.close()


def test_cli_export_and_independent_verifier(tmp_path: Path) -> None:
    dirs = build_local_federation(
        tmp_path / "fed", [MX], federation="test-federation", now=dt.datetime.now(dt.UTC)
    )

    def puente(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "node.commands", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    data = str(dirs["MX"])
    assert puente("migrate", "--dir", data).returncode == 0
    made = puente("audit", "checkpoint", "--dir", data, "--new")
    assert made.returncode == 0 and made.stdout.startswith("puente.int/audit/MX/")
    out = tmp_path / "export"
    assert puente("audit", "export", "--dir", data, "--out", str(out)).returncode == 0
    assert {p.name for p in out.iterdir()} >= {"entries.jsonl", "checkpoint", "vkey"}
    verified = subprocess.run(
        [sys.executable, "-m", "audit", "verify", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0 and verified.stdout.startswith("OK:")
    assert puente("audit", "verify", "--dir", data).returncode == 0
    refused = puente("audit", "proof", "inclusion", "--dir", data, "--index", "5")
    assert refused.returncode == 2
    assert "puente: entry_not_covered: entry 5" in refused.stderr


async def test_migration_turns_an_old_hash_chain_into_the_tree(database_url: str) -> None:
    """Entries written before 0002 keep their bytes and become the first leaves."""
    from alembic import command

    from node.core.canonical import canonical_json
    from node.storage.engine import create_engine
    from node.storage.migrate import alembic_config

    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0001"))
            old = [
                canonical_json({"event": "disclosure.queued", "node": "MX", "seq": i}).decode()
                for i in range(11)
            ]
            for i, entry in enumerate(old):
                await connection.execute(
                    text(
                        "INSERT INTO audit_log (seq, recorded_at, event, entry, prev_hash,"
                        " entry_hash) VALUES (:s, CURRENT_TIMESTAMP, 'disclosure.queued', :e,"
                        " :p, :h)"
                    ),
                    {"s": i, "e": entry, "p": "0" * 64, "h": "0" * 64},
                )
        await upgrade_to_head(engine)
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            await audit.append(
                session, node="MX", event="after.migration", at=dt.datetime.now(dt.UTC)
            )
        async with sessions() as session:
            assert await audit.first_damaged_entry(session) is None
            rows = await audit.entries(session)
            assert [r.entry for r in rows[:11]] == old
            expected = root_of_entries([r.entry.encode() for r in rows])
            assert await audit_tree.root_at(session, 12) == expected
    finally:
        await engine.dispose()
