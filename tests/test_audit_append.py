"""Appending to the audit log, on SQLite and PostgreSQL: what is stored, byte for byte.

The append path is tuned for throughput (node/audit.py); these tests pin what
it writes — every column of every entry, every stored subtree hash, the head —
to a digest taken from the straightforward implementation it replaced, and
check it against independent computations: RFC 8785 bytes from the rfc8785
library and the tree from the independent verifier's own code (audit/).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit.merkle import root_of_entries
from node.auditlog import entries as audit
from node.auditlog import tree as audit_tree
from node.auditlog.entries import AuditEvent, CaseRef
from node.core.canonical import canonical_json
from node.storage.engine import create_engine, session_factory
from node.storage.migrate import upgrade_to_head
from node.storage.models import AuditEntry

START = dt.datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=dt.UTC)
SECRET = b"test-case-secret-0123456789abcdef"
# The digest of everything the events below leave in the database, taken from
# the implementation before the append path was tuned (see _dump).
GOLDEN = "98f37d27436e4c7e9f0124d39faad59131c784e7385418556e4ba9903387dee6"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)
        yield engine
    finally:
        await engine.dispose()


def _events(count: int, offset: int = 0) -> list[AuditEvent]:
    """Entries of every shape the log holds, with times that sometimes go backwards."""
    made = []
    for i in range(offset, offset + count):
        # Every seventh entry is a second *earlier* than the one before it.
        at = START + dt.timedelta(seconds=3 * i) - dt.timedelta(seconds=4 * (i % 7 == 6))
        if i % 5 == 0:
            at = at.astimezone(dt.timezone(dt.timedelta(hours=-6)))  # not UTC: stored as UTC
        ref = audit.case_pseudonym(SECRET, f"MX-TEST-{i % 4:04d}")
        kind = i % 4
        if kind == 0:
            made.append(AuditEvent("case.created", at, case_ref=ref, details={"authority": "mx"}))
        elif kind == 1:
            details: dict[str, Any] = {
                "consent_id": f"00000000-0000-4000-8000-{i:012d}",
                "purposes": ["reception_on_return", "family_tracing"],
                "grantor": "self",
                "note_lang": "español — niña",  # non-ASCII goes in as UTF-8, unescaped
                "skipped": None,
            }
            made.append(AuditEvent("consent.given", at, case_ref=ref, details=details))
        elif kind == 2:
            made.append(
                AuditEvent(
                    "disclosure.queued",
                    at,
                    message_id=f"00000000-0000-4000-8000-{i:012d}",
                    counterparty="GT",
                    case_ref=ref,
                    purpose="reception_on_return",
                    legal_basis="consent",
                    details={
                        "fields": ["person.given_names", "arrival"],
                        "directory_version": 3,
                        "urgent": i % 3 == 0,
                        "envelope_sha256": hashlib.sha256(str(i).encode()).hexdigest(),
                    },
                )
            )
        else:
            # Values off the fast path: a nested object, a float, a big integer.
            details = {"limits": {"b": 1, "a": [1.5, "x"]}, "ratio": 0.25, "big": 2**40}
            made.append(AuditEvent("witness.refused", at, counterparty="HN", details=details))
    return made


async def _write(engine: AsyncEngine, batches: list[int]) -> tuple[list[int], list[AuditEntry]]:
    """The events in transactions of the given sizes; a transaction of 3 appends one at a time.

    Returns every seq, and the entries ``audit.append`` handed back.
    """
    sessions = session_factory(engine)
    seqs: list[int] = []
    returned: list[AuditEntry] = []
    done = 0
    for size in batches:
        events = _events(size, done)
        async with sessions.begin() as session:
            if size == 3:
                for event in events:
                    entry = await audit.append(
                        session,
                        node="MX",
                        event=event.event,
                        at=event.at,
                        message_id=event.message_id,
                        counterparty=event.counterparty,
                        case_ref=event.case_ref,
                        purpose=event.purpose,
                        legal_basis=event.legal_basis,
                        **event.details,
                    )
                    seqs.append(entry.seq)
                    returned.append(entry)
            else:
                seqs += await audit.append_many(session, node="MX", events=events)
        done += size
    return seqs, returned


BATCHES = [1, 3, 64, 0, 1, 100, 7, 3, 1000, 1, 33]


async def _dump(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        entries = (
            await connection.execute(
                text(
                    "SELECT seq, recorded_at, event, message_id, counterparty, case_ref, purpose,"
                    " legal_basis, entry FROM audit_log ORDER BY seq"
                )
            )
        ).all()
        tree = (
            await connection.execute(text("SELECT level, idx, hash FROM audit_tree ORDER BY 1, 2"))
        ).all()
        head = (
            await connection.execute(text("SELECT size, head_hash, frontier FROM audit_head"))
        ).one()
    return {
        "entries": [[*row[:1], _utc(row[1]), *row[2:]] for row in entries],
        "tree": [[level, idx, bytes(h).hex()] for level, idx, h in tree],
        "head": [head[0], head[1], bytes(head[2]).hex()],
    }


def _utc(value: Any) -> str:
    """recorded_at as each backend hands it back raw: SQLite text, PostgreSQL a datetime."""
    if isinstance(value, str):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", value), value
        return value
    assert isinstance(value, dt.datetime)
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _digest(dump: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()


async def test_what_an_append_stores_is_unchanged_byte_for_byte(engine: AsyncEngine) -> None:
    seqs, returned = await _write(engine, BATCHES)
    total = sum(BATCHES)
    assert seqs == list(range(total))
    dump = await _dump(engine)
    assert _digest(dump) == GOLDEN
    # audit.append hands back what it wrote, recorded_at included.
    assert len(returned) == 6
    for entry in returned:
        stored = dump["entries"][entry.seq]
        assert (entry.entry, _utc(entry.recorded_at)) == (stored[-1], stored[1])

    # Independently: each entry is the rfc8785 library's bytes of its members ...
    events = _events(total)
    for (seq, _, event, *_rest, entry), made in zip(dump["entries"], events, strict=True):
        body = json.loads(entry)
        assert body["seq"] == seq and body["event"] == event == made.event
        assert entry == canonical_json(body).decode()
        at = made.at.astimezone(dt.UTC)
        assert body["time"] == at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        assert "skipped" not in body  # None details are left out
    # ... the head is the verifier's root of those bytes, and every stored node hashes its leaves.
    leaves = [row[-1].encode() for row in dump["entries"]]
    assert dump["head"][:2] == [total, root_of_entries(leaves).hex()]
    for level, idx, h in dump["tree"]:
        assert h == root_of_entries(leaves[idx << level : (idx + 1) << level]).hex()
    assert len(dump["tree"]) == 2 * total - bin(total).count("1")  # every complete subtree
    # recorded_at never goes backwards along seq, though entry times do.
    times = [row[1] for row in dump["entries"]]
    assert times == sorted(times)
    async with session_factory(engine)() as session:
        assert await audit.first_damaged_entry(session) is None


async def test_an_empty_batch_writes_nothing(engine: AsyncEngine) -> None:
    await _write(engine, [5])
    before = await _dump(engine)
    async with session_factory(engine).begin() as session:
        assert await audit.append_many(session, node="MX", events=[]) == []
    assert await _dump(engine) == before


async def test_a_refused_entry_rolls_back_its_whole_batch(engine: AsyncEngine) -> None:
    await _write(engine, [5])
    before = await _dump(engine)
    bad = AuditEvent("case.created", START, case_ref=CaseRef("MX-TEST-0001"))  # a raw case id
    with pytest.raises(ValueError, match="pseudonym"):
        async with session_factory(engine).begin() as session:
            await audit.append_many(session, node="MX", events=[*_events(3, 5), bad])
    assert await _dump(engine) == before


async def test_concurrent_batches_keep_one_tree_and_monotonic_time(engine: AsyncEngine) -> None:
    """Writers racing for the head: contiguous seqs, one tree, recorded_at never decreasing."""
    sessions = session_factory(engine)

    async def writer(n: int) -> list[int]:
        seqs: list[int] = []
        for round_ in range(5):
            # Each writer's clock is a minute apart from the next: times interleave backwards.
            at = START + dt.timedelta(minutes=-n, seconds=round_)
            events = [AuditEvent("test.concurrent", at, details={"w": n}) for _ in range(n + 1)]
            async with sessions.begin() as session:
                seqs += await audit.append_many(session, node="MX", events=events)
        return seqs

    written = await asyncio.gather(*(writer(n) for n in range(6)))
    total = sum(len(s) for s in written)
    assert sorted(s for seqs in written for s in seqs) == list(range(total))
    for seqs in written:  # each batch got consecutive seqs
        assert seqs == sorted(seqs)
    dump = await _dump(engine)
    times = [row[1] for row in dump["entries"]]
    assert times == sorted(times)
    leaves = [row[-1].encode() for row in dump["entries"]]
    assert dump["head"][:2] == [total, root_of_entries(leaves).hex()]
    async with sessions() as session:
        assert await audit.first_damaged_entry(session) is None
        assert await audit_tree.root_at(session, total) == root_of_entries(leaves)


_SAFE = 2**53 - 1
_PLAIN_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-_SAFE, _SAFE)
    | st.text()  # control characters, quotes, backslashes, any plane
    | st.lists(st.text(), max_size=5)
)


@settings(max_examples=400, deadline=None)
@given(body=st.dictionaries(st.text(st.characters(max_codepoint=127)), _PLAIN_VALUES, max_size=10))
def test_the_fast_path_gives_rfc8785_bytes(body: dict[str, Any]) -> None:
    """What entries hold (ASCII names; strings, safe integers, flags, lists of names)."""
    try:
        expected = canonical_json(body)
    except Exception:  # values RFC 8785 cannot represent (lone surrogates)
        return
    assert audit.entry_bytes(body) == expected


def test_values_off_the_fast_path_still_give_rfc8785_bytes() -> None:
    for body in (
        {"ratio": 0.1, "n": 1e21},
        {"big": 2**53},  # past the IEEE 754 safe range: the library's refusal, not a wrong number
        {"nested": {"b": [1, {"a": None}]}},
        {"ñame": "x"},
        {"text": "\ud800"},  # a lone surrogate
    ):
        try:
            expected: bytes | type[Exception] = canonical_json(body)
        except Exception as refused:  # the library's own refusal is the expectation
            expected = type(refused)
        if isinstance(expected, bytes):
            assert audit.entry_bytes(body) == expected
        else:
            with pytest.raises(expected):
                audit.entry_bytes(body)


async def test_a_value_too_long_for_its_column_is_never_cut(engine: AsyncEngine) -> None:
    """PostgreSQL refuses it, and so the whole batch; SQLite, which has no lengths, keeps it."""
    long_event = "e" * 41  # the event column holds 40
    events = [*_events(2), AuditEvent(long_event, START)]
    sessions = session_factory(engine)
    if engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="too long"):
            async with sessions.begin() as session:
                await audit.append_many(session, node="MX", events=events)
        assert (await _dump(engine))["head"][0] == 0
    else:
        async with sessions.begin() as session:
            await audit.append_many(session, node="MX", events=events)
        assert [row[2] for row in (await _dump(engine))["entries"]][-1] == long_event
