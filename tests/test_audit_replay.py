"""The independent verifier's replay (audit/replay.py) in one process and in several.

Whatever the split of the entries file into runs and blocks, and however many
worker processes hash it, the tree heads are those of the leaf-by-leaf replay
(audit.merkle.replay, itself checked against pymerkle and the published
vectors in tests/test_audit_merkle.py); and a changed, deleted or added entry
anywhere in a real node's export gets the same verdict and reason codes.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import VerificationError
from audit.merkle import EMPTY_ROOT, root_of_entries
from audit.merkle import replay as leaf_by_leaf
from audit.replay import (
    Frontier,
    Split,
    _hash_file_run,
    _likely_firsts,
    hash_run,
    line_runs,
    replay_file,
)
from audit.verify import Report, _entry_lines, verify_export
from node.auditlog import entries as audit
from node.auditlog.checkpoints import issue_checkpoint
from node.auditlog.entries import AuditEvent
from node.auditlog.export import export_log
from node.demo.local_federation import build_local_federation
from node.storage.context import NodeContext, open_node
from node.storage.migrate import upgrade_to_head
from tests.support.nodes import MX, DatabaseFactory

# Runs of about 150 bytes (a few entries), read 64 bytes at a time, a worker for any share.
TINY = Split(run_bytes=150, block_bytes=64, worker_bytes=1)
# Sizes around powers of two, where the tree's shape changes.
SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 128, 129, 255, 1000]


def some_entries(count: int, seed: int) -> list[bytes]:
    """Entries of uneven lengths, some empty, none with a newline."""
    rng = random.Random(seed)
    return [
        b"" if rng.random() < 0.05 else rng.randbytes(rng.randrange(1, 120)).replace(b"\n", b"~")
        for _ in range(count)
    ]


def write_entries_file(path: Path, entries: list[bytes], *, final_newline: bool = True) -> Path:
    body = b"\n".join(entries)
    if entries and final_newline:
        body += b"\n"
    path.write_bytes(body)
    return path


def as_the_verifier_reads(path: Path) -> list[bytes]:
    """The entries as the verifier's line reader sees them: a file that does not end
    with a newline has no empty last entry."""
    return list(_entry_lines(path))


def test_any_run_at_any_alignment_gives_the_reference_heads() -> None:
    """A run's subtrees, put after any number of earlier leaves, make the tree heads."""
    everything = some_entries(80, seed=1)
    heads = [root_of_entries(everything[:size]) for size in range(81)]
    for first in range(35):
        before = Frontier()
        before.push(hash_run(everything[:first], 0)[0])
        for length in range(0, 80 - first, 3):
            run = everything[first : first + length]
            ends = list(range(first + 1, first + length + 1))
            pieces, prefixes = hash_run(run, first, ends)
            after = Frontier(size=before.size, stack=list(before.stack))
            after.push(pieces)
            assert after.size == first + length
            assert after.root() == heads[first + length]
            for end in ends:
                assert before.root_with(prefixes[end]) == heads[end]


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(0, 300),
    seed=st.integers(0, 2**32),
    final_newline=st.booleans(),
    chunk_bytes=st.integers(1, 2000),
    block_bytes=st.integers(1, 700),
    asked=st.lists(st.integers(0, 320), max_size=6),
)
def test_one_process_matches_leaf_by_leaf_for_any_split(
    count: int,
    seed: int,
    final_newline: bool,
    chunk_bytes: int,
    block_bytes: int,
    asked: list[int],
) -> None:
    sizes = [count, *asked]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_entries_file(
            Path(tmp) / "e", some_entries(count, seed), final_newline=final_newline
        )
        entries = as_the_verifier_reads(path)
        got = replay_file(path, sizes, jobs=1, split=Split(chunk_bytes, block_bytes))
    assert (got.count, got.roots) == leaf_by_leaf(entries, sizes)
    assert got.workers == 1


@pytest.mark.parametrize("count", SIZES)
def test_parallel_replay_equals_sequential_at_every_size(count: int, tmp_path: Path) -> None:
    """Every tree head from 0 to the end, by two worker processes and by one."""
    entries = some_entries(count, seed=count)
    path = write_entries_file(tmp_path / "entries.jsonl", entries)
    sizes = list(range(count + 2))  # count + 1 is beyond the file: no head
    sequential = replay_file(path, sizes, jobs=1)
    parallel = replay_file(path, sizes, jobs=2, split=TINY)
    assert (parallel.count, parallel.roots) == (sequential.count, sequential.roots)
    assert (sequential.count, sequential.roots) == leaf_by_leaf(entries, sizes)
    assert count + 1 not in parallel.roots and parallel.roots[0] == EMPTY_ROOT
    assert parallel.workers == (2 if len(line_runs(path, TINY.run_bytes)) > 1 else 1)
    assert parallel.workers == 2 or count < 9


def test_more_workers_than_cores_and_runs_of_one_line(tmp_path: Path) -> None:
    path = write_entries_file(
        tmp_path / "entries.jsonl", some_entries(257, seed=9), final_newline=False
    )
    entries = as_the_verifier_reads(path)
    sizes = [0, 1, 100, 128, 256, 257]
    for jobs, run_bytes in ((3, 1), (4, 500), (2, 1 << 20)):
        got = replay_file(path, sizes, jobs=jobs, split=Split(run_bytes, 10, worker_bytes=1))
        assert (got.count, got.roots) == leaf_by_leaf(entries, sizes)
        assert got.workers == min(jobs, len(line_runs(path, run_bytes)))
    # By default a worker needs a share of 32 MB: a small file is replayed in this process.
    assert replay_file(path, sizes, jobs=2).workers == 1


def json_entries(count: int) -> list[bytes]:
    """Entries that state their ``seq``, as a node's do."""
    return [
        b'{"event":"case.viewed","pad":"%s","seq":%d}' % (b"x" * (i % 50), i) for i in range(count)
    ]


@pytest.mark.parametrize("damage", ["none", "deleted", "inserted", "swapped", "seq_lies"])
def test_runs_placed_by_their_seq_or_by_counting_give_the_same_heads(
    damage: str, tmp_path: Path
) -> None:
    """Workers start hashing each run where its first entry's ``seq`` puts it; a file
    whose ``seq`` values mislead (lines deleted, inserted, swapped, or lying) is
    hashed from where its lines really are, with the same heads as one process."""
    entries = json_entries(400)
    if damage == "deleted":
        del entries[37]
    elif damage == "inserted":
        entries.insert(37, entries[200])
    elif damage == "swapped":
        entries[100:300] = entries[200:300] + entries[100:200]
    elif damage == "seq_lies":
        entries = [e.replace(b'"seq":', b'"seq":1') for e in entries]
    path = write_entries_file(tmp_path / "entries.jsonl", entries)
    chunk_bytes = 900
    claims = [run.claimed for run in line_runs(path, chunk_bytes)]
    plausible = _likely_firsts(line_runs(path, chunk_bytes))
    if damage == "swapped":
        assert plausible is None  # the lines are counted first
    else:
        assert plausible == claims and len(claims) > 10
    sizes = list(range(402))  # every tree head, and one past the end
    one = replay_file(path, sizes, jobs=1)
    several = replay_file(path, sizes, jobs=2, split=Split(chunk_bytes, 200, worker_bytes=1))
    assert (several.count, several.roots) == (one.count, one.roots)
    assert (one.count, one.roots) == leaf_by_leaf(entries, sizes)
    assert several.workers == 2


def test_a_file_that_changes_under_the_replay_is_refused(tmp_path: Path) -> None:
    path = write_entries_file(tmp_path / "entries.jsonl", some_entries(50, seed=3))
    runs = line_runs(path, 100)
    path.write_bytes(path.read_bytes()[: runs[-1].offset])  # the last run is gone
    with pytest.raises(VerificationError) as caught:
        _hash_file_run(path, runs[-1], 40, 50, [], 64)
    assert caught.value.reason == "export_changed"
    # It crosses back from a worker process intact.
    again = pickle.loads(pickle.dumps(caught.value))
    assert (again.reason, again.detail) == (caught.value.reason, caught.value.detail)


# A real node's export, changed behind its back.


@pytest.fixture
async def node(tmp_path: Path, database_factory: DatabaseFactory) -> AsyncIterator[NodeContext]:
    url = await database_factory("mx")
    dirs = build_local_federation(
        tmp_path / "fed",
        [MX],
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


async def grow(ctx: NodeContext, count: int) -> None:
    events = [
        AuditEvent(
            "disclosure.delivered",
            ctx.now(),
            message_id=f"00000000-0000-4000-8000-{i:012d}",
            counterparty=("GT", "HN", "SV")[i % 3],
            purpose="reception_on_return",
            legal_basis="consent",
            details={"fields": ["arrival", "immediate_needs"]},
        )
        for i in range(count)
    ]
    async with ctx.sessions.begin() as session:
        await audit.append_many(session, node=ctx.node_id, events=events)


def verdicts(export: Path) -> tuple[Report, Report]:
    """The report of one process, and of workers over runs of about six entries."""
    one = verify_export(export, jobs=1)
    several = verify_export(export, jobs=2, split=Split(1000, 300, worker_bytes=1))
    return one, several


def findings(report: Report) -> list[tuple[str, int | None]]:
    return [(p.reason, p.entry) for p in report.problems]


async def test_a_changed_entry_anywhere_is_caught_alike(node: NodeContext, tmp_path: Path) -> None:
    await grow(node, 30)
    await issue_checkpoint(node)
    await grow(node, 50)
    await issue_checkpoint(node)
    await grow(node, 49)
    good = tmp_path / "good"
    summary = await export_log(node, good)
    assert summary.tree_size == 129
    one, several = verdicts(good)
    assert one.ok and several.ok, several.verdict()
    assert several.workers == 2 and one.workers == 1
    assert (several.size, several.entries, several.checkpoints_checked) == (129, 129, 2)
    lines = (good / "entries.jsonl").read_bytes().splitlines(keepends=True)
    # The auditor's command: 2 jobs asked for, but an export this small (far
    # below 32 MB a worker) is replayed in one process, and says so.
    command = [sys.executable, "-m", "audit", "verify", str(good), "--jobs", "2", "--json"]
    run = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: ASYNC221
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert (answer["ok"], answer["entries"], answer["workers"]) == (True, 129, 1)

    for index in (0, 1, 29, 30, 63, 64, 65, 79, 80, 127, 128):
        bad = tmp_path / f"changed-{index}"
        shutil.copytree(good, bad)
        changed = lines[index].replace(b'"legal_basis":"consent"', b'"legal_basis":"contract"')
        assert changed != lines[index]
        (bad / "entries.jsonl").write_bytes(
            b"".join([*lines[:index], changed, *lines[index + 1 :]])
        )
        one, several = verdicts(bad)
        assert (
            findings(one)
            == findings(several)
            == [
                ("root_mismatch", None),
                ("entry_changed", index),
            ]
        )
        assert several.workers == 2
        # Without the stored leaf hashes, the earlier checkpoints bound it alike.
        (bad / "leaf-hashes").unlink()
        one, several = verdicts(bad)
        assert findings(one) == findings(several)
        assert findings(several)[0] == ("root_mismatch", None)
        assert findings(several)[-1][0] == "entry_changed"

    deleted = tmp_path / "deleted"
    shutil.copytree(good, deleted)
    (deleted / "entries.jsonl").write_bytes(b"".join(lines[:70] + lines[71:]))
    one, several = verdicts(deleted)
    assert (
        findings(one)
        == findings(several)
        == [
            ("entries_missing", None),
            ("entry_out_of_place", 70),
        ]
    )

    added = tmp_path / "added"
    shutil.copytree(good, added)
    (added / "entries.jsonl").write_bytes(b"".join([*lines, lines[5]]))
    one, several = verdicts(added)
    assert one.ok and several.ok and several.entries == one.entries == 130


def test_jobs_on_the_command_line(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "audit", "verify", str(tmp_path), "--jobs", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "--jobs" in refused.stderr
