"""Who disclosed what to whom: the audit trail of one case across real nodes.

GT's consulate sends a handoff to MX's protection agency and another to MX's
migration authority (two caseworkers), MX reads one, she withdraws her
consent, MX erases and confirms. The CSV tells the two disclosures apart and
names each sender; each node's per-case report, asked for by the case
reference, lists every step it took part in; filters refuse values the log
cannot hold; spreadsheet formulas never reach a cell. On SQLite and
PostgreSQL, over real mutual TLS.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest

from audit.verify import verify_export
from node.auditlog import queries
from node.auditlog.export import export_log
from node.auditlog.queries import AuditQueryError, EntryQuery, UnknownCase
from node.casework.consents import withdraw_consent
from node.casework.disclose import disclose
from node.intake.summaries import read_received
from node.rules.consent import Officer
from tests.support.cases import CASE_SPECS, CONSULATE, MovableClock, new_case
from tests.support.nodes import DatabaseFactory, live_federation

CASE_REF = "GT-CONS-2026-000777"
FORMULA_USER = '=HYPERLINK("http://example.invalid")'


async def _send(ctx: Any, node: str, authority: str, user: str) -> str:
    sent = await disclose(
        ctx,
        case=CASE_REF,
        doc_type="case_handoff",
        purpose="protection_referral",
        recipient_node=node,
        recipient_authority=authority,
        user=user,
    )
    return sent.message_id


def _csv(rows: list[Any]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(queries.entries_csv(rows))))


async def test_csv_and_case_report_answer_who_what_to_whom(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock()
    async with live_federation(tmp_path, database_factory, CASE_SPECS, clock=clock) as nodes:
        gt, mx = nodes["GT"], nodes["MX"]
        await new_case(gt.ctx, CASE_REF)
        to_comar = await _send(gt.ctx, "MX", "mx-comar", "consular-officer-7")
        to_inm = await _send(gt.ctx, "MX", "mx-inm", "consular-officer-9")
        assert await gt.deliverer.run_once() == 2
        viewed = await read_received(mx.ctx, CASE_REF, viewer="comar-officer-3")
        assert {v.message_id for v in viewed} == {to_comar, to_inm}
        # A third one is still in GT's outbox when she withdraws: it is stopped.
        waiting = await _send(gt.ctx, "HN", "hn-protection", FORMULA_USER)
        await withdraw_consent(
            gt.ctx, (await _consent_id(gt.ctx)), by=Officer("GT", CONSULATE, "officer-0042")
        )
        await gt.deliverer.run_once()  # the withdrawals reach MX, which erases
        await mx.deliverer.run_once()  # MX's erasure receipts reach GT

        # The CSV tells the two handoffs apart and names who sent each.
        sent = await queries.query_entries(gt.ctx, EntryQuery(event="disclosure.queued"))
        by_message = {row["message_id"]: row for row in _csv(sent)}
        comar, inm = by_message[to_comar], by_message[to_inm]
        assert (comar["counterparty"], comar["counterparty_authority"]) == ("MX", "mx-comar")
        assert (inm["counterparty"], inm["counterparty_authority"]) == ("MX", "mx-inm")
        assert (comar["user"], inm["user"]) == ("consular-officer-7", "consular-officer-9")
        assert comar["authority"] == CONSULATE and comar["doc_type"] == "case_handoff"
        assert len(comar["policy_digest"]) == 64, "policy_digest is filled"
        assert comar["categories"] and comar["withheld"], "categories and withheld field names"
        assert comar["legal_basis"] == "consent" and comar["purpose"] == "protection_referral"
        # Every later entry of a disclosure names the same who and whom.
        delivered = await queries.query_entries(gt.ctx, EntryQuery(event="disclosure.delivered"))
        rows = {row["message_id"]: row for row in _csv(delivered)}
        assert rows[to_inm]["user"] == "consular-officer-9"
        assert rows[to_inm]["counterparty_authority"] == "mx-inm"
        assert rows[to_inm]["case_ref"] == comar["case_ref"] != ""

        # A formula never reaches a spreadsheet; the value comes back without loss.
        stopped = await queries.query_entries(gt.ctx, EntryQuery(event="disclosure.withdrawn"))
        (cell,) = [r["user"] for r in _csv(stopped) if r["message_id"] == waiting]
        assert cell == "'" + FORMULA_USER and cell[1:] == FORMULA_USER

        # The origin's report of the case: queued, delivered, withdrawn, erasure confirmed.
        report = await queries.subject_report(gt.ctx, CASE_REF)
        assert {
            "disclosure.queued",
            "disclosure.delivered",
            "disclosure.withdrawn",
            "consent.withdrawn",
            "erasure.confirmed",
        } <= set(report["events"])
        assert report["recipients"] == ["HN/hn-protection", "MX/mx-comar", "MX/mx-inm"]
        confirmed = [
            e["entry"] for e in report["entries"] if e["entry"]["event"] == "erasure.confirmed"
        ]
        assert {e["counterparty_authority"] for e in confirmed} == {"mx-comar", "mx-inm"}
        assert CASE_REF not in str(report)
        # The recipient's report of the same case reference: received, viewed, erased.
        theirs = await queries.subject_report(mx.ctx, CASE_REF)
        assert {"envelope.received", "summary.viewed", "summary.erased"} <= set(theirs["events"])
        # Its erasure receipts are disclosures about the case too, queued and delivered.
        assert {"disclosure.queued", "disclosure.delivered"} <= set(theirs["events"])
        views = [e["entry"] for e in theirs["entries"] if e["entry"]["event"] == "summary.viewed"]
        assert {v["user"] for v in views} == {"comar-officer-3"} and len(views) == 2
        # The node's own case id finds the same report; a reference nobody used is an error.
        case_id = await _case_id(gt.ctx)
        assert (await queries.subject_report(gt.ctx, case_id))["events"] == report["events"]
        with pytest.raises(UnknownCase):
            await queries.subject_report(gt.ctx, "GT-CONS-2026-999999")

        # Both logs, old members and new, still verify independently.
        for node in (gt, mx):
            await export_log(node.ctx, tmp_path / f"export-{node.node_id}")
            verdict = verify_export(tmp_path / f"export-{node.node_id}")
            assert verdict.ok, verdict.verdict()


async def _consent_id(ctx: Any) -> str:
    from node.casework.consents import consents_for_case

    (consent,) = await consents_for_case(ctx, await _case_id(ctx))
    return consent.consent_id


async def _case_id(ctx: Any) -> str:
    from node.casework.cases import find_case

    return (await find_case(ctx, CASE_REF)).case_id


@pytest.mark.parametrize(
    ("query", "reason", "named"),
    [
        (EntryQuery(event="disclosure.deliverd"), "unknown_event", "disclosure.delivered"),
        (EntryQuery(counterparty="XX"), "unknown_counterparty", "GT, HN, MX"),
        (EntryQuery(legal_basis="consentt"), "unknown_legal_basis", "consent, vital_interest"),
        (EntryQuery(purpose="return"), "unknown_purpose", "protection_referral"),
    ],
)
async def test_filters_the_log_cannot_match_are_refused_naming_the_known_values(
    tmp_path: Path, database_factory: DatabaseFactory, query: EntryQuery, reason: str, named: str
) -> None:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        with pytest.raises(AuditQueryError) as refused:
            await queries.query_entries(nodes["GT"].ctx, query)
        assert refused.value.reason == reason and named in refused.value.detail


async def test_counterparty_in_lower_case_and_dates_as_whole_days(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    clock = MovableClock(dt.datetime(2026, 11, 23, 23, 30, tzinfo=dt.UTC))
    async with live_federation(tmp_path, database_factory, CASE_SPECS, clock=clock) as nodes:
        gt = nodes["GT"]
        await new_case(gt.ctx, CASE_REF)
        await _send(gt.ctx, "MX", "mx-comar", "consular-officer-7")
        sent = await queries.query_entries(gt.ctx, EntryQuery(counterparty="mx"))
        assert [e.event for e in sent] == ["disclosure.queued"]
        # 23:30 UTC on the 23rd is the 23rd in UTC (the node's default zone).
        utc_day = queries.time_bound(gt.ctx, "2026-11-23", name="since")
        utc_end = queries.time_bound(gt.ctx, "2026-11-23", name="until", end=True)
        assert (utc_day, utc_end) == (
            dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 24, tzinfo=dt.UTC),
        )
        whole_day = await queries.query_entries(
            gt.ctx, EntryQuery(since=utc_day, until=utc_end, counterparty="MX")
        )
        assert len(whole_day) == 1
        with pytest.raises(AuditQueryError) as refused:
            queries.time_bound(gt.ctx, "23/11/2026", name="since")
        assert refused.value.reason == "bad_parameter" and "2026-11-23" in refused.value.detail


def test_a_date_is_a_day_in_the_nodes_time_zone() -> None:
    from zoneinfo import ZoneInfo

    from node.core.clock import parse_bound

    guatemala = ZoneInfo("America/Guatemala")  # UTC-6, no daylight saving
    assert parse_bound("2026-11-23", guatemala) == dt.datetime(2026, 11, 23, 6, tzinfo=dt.UTC)
    assert parse_bound("2026-11-23", guatemala, end=True) == dt.datetime(
        2026, 11, 24, 6, tzinfo=dt.UTC
    )
    assert parse_bound("2026-11-23T15:00:00Z", guatemala) == dt.datetime(
        2026, 11, 23, 15, tzinfo=dt.UTC
    )


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'quoted", "''quoted"),
        ("mx-comar", "mx-comar"),
        (["-a", "b"], "'-a;b"),
        (3, "3"),
    ],
)
def test_csv_cells_never_start_a_formula_and_round_trip(value: Any, cell: str) -> None:
    assert queries.csv_cell(value) == cell
    text = ";".join(map(str, value)) if isinstance(value, list) else str(value)
    assert (cell[1:] if cell.startswith("'") else cell) == text
