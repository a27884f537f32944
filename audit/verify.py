"""Verify an audit-log export: replay every entry and check it against the signed checkpoint.

An export (``puente audit export --out DIR``) is a directory:

- ``entries.jsonl``  every entry exactly as hashed, one a line, in log order;
- ``checkpoint``     the latest signed checkpoint with the witnesses' cosignatures;
- ``vkey``           the log's verifier key;
- ``witnesses``      (optional) the witnesses' verifier keys, one a line;
- ``leaf-hashes``    (optional) the leaf hashes the node stored, 32 bytes each;
- ``checkpoints/``   (optional) earlier signed checkpoints, one file per tree size.

Only the first three are needed to say whether the log is intact. The
optional files let the verifier say *which* entry is wrong when it is not:
stored leaf hashes are trusted only if they themselves hash to the signed root.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from audit.errors import VerificationError
from audit.merkle import TreeBuilder, leaf_hash, root_of_leaf_hashes
from audit.note import (
    Cosignature,
    VerifiedCheckpoint,
    VerifierKey,
    open_checkpoint,
    parse_checkpoint,
    parse_note,
    verify_note,
)
from audit.replay import DEFAULT_SPLIT, Split, replay_file

ENTRIES = "entries.jsonl"
CHECKPOINT = "checkpoint"
VKEY = "vkey"
WITNESSES = "witnesses"
LEAF_HASHES = "leaf-hashes"
CHECKPOINTS = "checkpoints"
MAX_LISTED = 20  # problems named one by one before the report summarises


@dataclass(frozen=True)
class Problem:
    """One thing wrong, with the entry it concerns (its index, = its line number - 1)."""

    reason: str
    detail: str
    entry: int | None = None


@dataclass
class Report:
    """What the verifier found. ``ok`` is the verdict."""

    origin: str = ""
    size: int = 0
    root: bytes = b""
    entries: int = 0
    cosignatures: list[Cosignature] = field(default_factory=list)
    checkpoints_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    workers: int = 1  # processes that hashed the entries

    @property
    def ok(self) -> bool:
        return not self.problems

    def verdict(self) -> str:
        """A few lines a person can read."""
        if self.ok:
            lines = [
                f"OK: {self.origin}: all {self.size} entries match the signed checkpoint "
                f"(root {self.root.hex()[:16]}…)."
            ]
            extra = self.entries - self.size
            if extra:
                lines.append(f"  {extra} later entries are not yet covered by a checkpoint.")
            if self.checkpoints_checked:
                lines.append(f"  {self.checkpoints_checked} earlier checkpoints also match.")
        else:
            name = self.origin or "the export"
            lines = [f"FAILED: {name}: the log is not the one that was signed."]
            for problem in self.problems[:MAX_LISTED]:
                where = ""
                if problem.entry is not None:
                    where = f"entry {problem.entry} (line {problem.entry + 1}): "
                lines.append(f"  {problem.reason}: {where}{problem.detail}")
            if len(self.problems) > MAX_LISTED:
                lines.append(f"  … and {len(self.problems) - MAX_LISTED} more.")
        for cosig in self.cosignatures:
            lines.append(f"  witnessed by {cosig.cosigner} at POSIX time {cosig.timestamp}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "origin": self.origin,
            "tree_size": self.size,
            "root_hash": self.root.hex(),
            "entries": self.entries,
            "checkpoints_checked": self.checkpoints_checked,
            "workers": self.workers,
            "cosignatures": [
                {"cosigner": c.cosigner, "timestamp": c.timestamp} for c in self.cosignatures
            ],
            "problems": [
                {"reason": p.reason, "detail": p.detail, "entry": p.entry} for p in self.problems
            ],
        }


def _entry_lines(path: Path) -> Iterator[bytes]:
    """The lines of a file without their newline, read in large chunks (the fast path)."""
    with path.open("rb") as handle:
        rest = b""
        while chunk := handle.read(1 << 24):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


def _read_keys(path: Path) -> list[VerifierKey]:
    if not path.exists():
        return []
    lines = path.read_text("utf-8").splitlines()
    return [VerifierKey.parse(line) for line in lines if line.strip()]


def _earlier_checkpoints(directory: Path, log_key: VerifierKey) -> dict[int, bytes]:
    """size -> root of every earlier checkpoint that the log key signed."""
    roots: dict[int, bytes] = {}
    folder = directory / CHECKPOINTS
    if not folder.is_dir():
        return roots
    for file in sorted(folder.iterdir()):
        note = parse_note(file.read_bytes())
        verify_note(note, [log_key])
        checkpoint = parse_checkpoint(note.text)
        if checkpoint.origin == log_key.name:
            roots[checkpoint.size] = checkpoint.root
    return roots


def verify_export(
    directory: Path,
    *,
    vkey: str | None = None,
    witness_keys: list[str] | None = None,
    jobs: int = 1,
    split: Split = DEFAULT_SPLIT,
) -> Report:
    """Check an export. ``vkey`` / ``witness_keys`` override the files in the export.

    An auditor should pass the keys published in the federation directory
    rather than trust the copies inside the export. With ``jobs`` > 1, up to
    that many worker processes replay the entries, as ``split`` divides the
    file among them (audit/replay.py); the verdict is the same.
    """
    report = Report()
    try:
        log_key = VerifierKey.parse(vkey or (directory / VKEY).read_text("utf-8"))
        witnesses = (
            [VerifierKey.parse(k) for k in witness_keys]
            if witness_keys is not None
            else _read_keys(directory / WITNESSES)
        )
        signed = open_checkpoint((directory / CHECKPOINT).read_bytes(), log_key, witnesses)
        earlier = _earlier_checkpoints(directory, log_key)
    except VerificationError as exc:
        report.problems.append(Problem(exc.reason, exc.detail))
        return report
    except OSError as exc:
        report.problems.append(Problem("export_incomplete", str(exc)))
        return report
    checkpoint = signed.checkpoint
    report.origin, report.size, report.root = checkpoint.origin, checkpoint.size, checkpoint.root
    report.cosignatures = list(signed.cosignatures)
    _replay(directory, signed, earlier, report, jobs=jobs, split=split)
    return report


def _replay(
    directory: Path,
    signed: VerifiedCheckpoint,
    earlier: dict[int, bytes],
    report: Report,
    *,
    jobs: int,
    split: Split,
) -> None:
    size = signed.checkpoint.size
    wanted = {s: r for s, r in earlier.items() if s <= size}
    try:
        replayed = replay_file(directory / ENTRIES, [size, *wanted], jobs=jobs, split=split)
    except OSError as exc:
        report.problems.append(Problem("export_incomplete", str(exc)))
        return
    except VerificationError as exc:
        report.problems.append(Problem(exc.reason, exc.detail))
        return
    count, roots = replayed.count, replayed.roots
    report.entries, report.workers = count, replayed.workers
    if count < size:
        report.problems.append(
            Problem("entries_missing", f"the checkpoint covers {size} entries, the file {count}")
        )
        _locate_by_sequence(directory, report)
        return
    bad_checkpoints = [s for s in sorted(wanted) if roots.get(s) != wanted[s]]
    report.checkpoints_checked = len(wanted) - len(bad_checkpoints)
    if roots[size] == signed.checkpoint.root:
        for s in bad_checkpoints:
            report.problems.append(
                Problem("checkpoint_mismatch", f"the signed checkpoint of size {s} does not match")
            )
        return
    report.problems.append(
        Problem("root_mismatch", "the entries do not hash to the root the log signed")
    )
    _locate(directory, size, signed.checkpoint.root, wanted, report)


def _locate(
    directory: Path, size: int, root: bytes, earlier: dict[int, bytes], report: Report
) -> None:
    """Name the entries that differ from what the log signed, as precisely as possible."""
    if _locate_by_stored_leaves(directory, size, root, report):
        return
    if _locate_by_sequence(directory, report):
        return
    _locate_by_checkpoints(directory, earlier, report)


def _locate_by_stored_leaves(directory: Path, size: int, root: bytes, report: Report) -> bool:
    path = directory / LEAF_HASHES
    if not path.exists():
        return False
    stored = path.read_bytes()
    if len(stored) < 32 * size:
        return False
    leaves = [stored[i * 32 : (i + 1) * 32] for i in range(size)]
    if root_of_leaf_hashes(leaves) != root:
        report.problems.append(
            Problem("stored_tree_altered", "the stored leaf hashes do not match the root either")
        )
        return False
    for index, line in enumerate(_entry_lines(directory / ENTRIES)):
        if index >= size:
            break
        if leaf_hash(line) != leaves[index]:
            report.problems.append(
                Problem("entry_changed", "this entry is not the one that was logged", index)
            )
    return True


def _locate_by_sequence(directory: Path, report: Report) -> bool:
    """A deleted, inserted or reordered entry shows as a ``seq`` out of place."""
    for index, line in enumerate(_entry_lines(directory / ENTRIES)):
        try:
            seq = json.loads(line).get("seq")
        except (ValueError, AttributeError):
            report.problems.append(Problem("entry_unreadable", "not a JSON object", index))
            return True
        if seq != index:
            report.problems.append(
                Problem("entry_out_of_place", f"line holds entry seq {seq}", index)
            )
            return True
    return False


def _locate_by_checkpoints(directory: Path, earlier: dict[int, bytes], report: Report) -> None:
    sizes = sorted(earlier)
    builder = TreeBuilder()
    good = 0
    targets = iter(sizes)
    target = next(targets, None)
    for line in _entry_lines(directory / ENTRIES):
        if target is None:
            break
        builder.add_entry(line)
        if builder.size == target:
            if builder.root() != earlier[target]:
                report.problems.append(
                    Problem(
                        "entry_changed",
                        f"an entry from {good} to {target - 1} was changed "
                        f"(the checkpoint of size {target} no longer matches)",
                        good,
                    )
                )
                return
            good = target
            target = next(targets, None)
    report.problems.append(
        Problem("entry_changed", f"an entry at or after {good} was changed", good)
    )
