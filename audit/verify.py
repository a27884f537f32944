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

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from audit.directory import AuditKeys
from audit.errors import InputError, VerificationError
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
    witnesses_required: int = 0  # cosignatures the witness policy asks for
    witnesses_missing: list[str] = field(default_factory=list)  # who did not cosign
    keys_from: str = "export"  # where the keys came from: the export, the auditor, a directory

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def warnings(self) -> list[str]:
        """What is not wrong with the log but an auditor must know."""
        found = len(self.cosignatures)
        if found >= self.witnesses_required:
            return []
        return [
            f"witnessed by {found} of the {self.witnesses_required} the witness policy "
            f"requires; not cosigned by: {', '.join(self.witnesses_missing)}"
        ]

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
            if {p.reason for p in self.problems} == {"witnesses_missing"}:
                headline = "the log matches its checkpoint, but too few witnesses cosigned it."
            else:
                headline = "the log is not the one that was signed."
            lines = [f"FAILED: {name}: {headline}"]
            for problem in self.problems[:MAX_LISTED]:
                where = ""
                if problem.entry is not None:
                    where = f"entry {problem.entry} (line {problem.entry + 1}): "
                lines.append(f"  {problem.reason}: {where}{problem.detail}")
            if len(self.problems) > MAX_LISTED:
                lines.append(f"  … and {len(self.problems) - MAX_LISTED} more.")
        for cosig in self.cosignatures:
            lines.append(f"  witnessed by {cosig.cosigner} on {_date(cosig.timestamp)}")
        if self.ok:
            lines.extend(f"  WARNING: {warning}" for warning in self.warnings)
        if self.keys_from == "export":
            lines.append(
                "  note: the keys came from the export itself; check them against the signed "
                "federation directory (--directory and --trust-root)"
            )
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
                {"cosigner": c.cosigner, "timestamp": c.timestamp, "time": _date(c.timestamp)}
                for c in self.cosignatures
            ],
            "witnesses_required": self.witnesses_required,
            "witnesses_missing": self.witnesses_missing,
            "warnings": self.warnings,
            "keys_from": self.keys_from,
            "problems": [
                {"reason": p.reason, "detail": p.detail, "entry": p.entry} for p in self.problems
            ],
        }


def _date(timestamp: int) -> str:
    """A cosignature's time as a person reads it: UTC date and time."""
    try:
        moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"POSIX time {timestamp}"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


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


def _parse_keys(lines: Sequence[str], source: str) -> list[VerifierKey]:
    keys = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            keys.append(VerifierKey.parse(line))
        except VerificationError as exc:
            raise InputError(
                "bad_verifier_key", f"{source}, line {number}: not a verifier key ({exc.detail})"
            ) from exc
    return keys


def _read_keys(path: Path) -> list[VerifierKey]:
    if not path.exists():
        return []
    return _parse_keys(path.read_text("utf-8").splitlines(), str(path))


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise InputError(
            "not_an_export",
            f"{directory} has no {name}: give the folder `puente audit export --out DIR` wrote",
        )
    return path


def _origin_of(checkpoint: bytes) -> str:
    try:
        return parse_checkpoint(parse_note(checkpoint).text).origin
    except VerificationError as exc:
        raise InputError(
            "bad_checkpoint", f"the checkpoint file is unreadable: {exc.detail}"
        ) from exc


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
    keys: AuditKeys | None = None,
    require_witnesses: bool = False,
) -> Report:
    """Check an export. ``vkey`` / ``witness_keys`` override the files in the export.

    An auditor should take the keys from the signed federation directory
    (``keys``, from audit.directory.verify_directory), which also gives the
    witness policy; ``vkey`` and ``witness_keys`` are keys the auditor holds.
    Without either, the export's own files are used and every witness they
    list is expected. Fewer cosignatures than the policy asks for is a
    warning, or a problem with ``require_witnesses``. With ``jobs`` > 1, up
    to that many worker processes replay the entries, as ``split`` divides the
    file among them (audit/replay.py); the verdict is the same.

    :class:`InputError` when the folder or a key cannot be used at all.
    """
    if not directory.is_dir():
        raise InputError(
            "not_an_export", f"{directory} is not a folder: give the folder of an audit export"
        )
    checkpoint_bytes = _require(directory, CHECKPOINT).read_bytes()
    _require(directory, ENTRIES)
    report = Report()
    origin = _origin_of(checkpoint_bytes)
    witness_names: dict[str, str] = {}  # key name -> how the report names the witness
    if keys is not None:
        member = keys.member_for(origin)
        if member is None:
            report.problems.append(
                Problem("unknown_log", f"no member of the directory publishes the log {origin}")
            )
            return report
        log_key = member.verifier_key
        expected = keys.witnesses_for(origin)
        witnesses = [m.witness_key for m in expected if m.witness_key is not None]
        witness_names = {
            m.witness_key.name: f"{m.node} ({m.witness_key.name})"
            for m in expected
            if m.witness_key is not None
        }
        report.witnesses_required = keys.required_for(origin)
        report.keys_from = f"directory {keys.federation} v{keys.version}"
    else:
        source = "--vkey" if vkey else str(directory / VKEY)
        text = vkey if vkey is not None else _require(directory, VKEY).read_text("utf-8")
        found = _parse_keys(text.splitlines(), source)
        if len(found) != 1:
            raise InputError("bad_verifier_key", f"{source} holds {len(found)} keys, not one")
        log_key = found[0]
        witnesses = (
            _parse_keys(witness_keys, "--witnesses")
            if witness_keys is not None
            else _read_keys(directory / WITNESSES)
        )
        witness_names = {w.name: w.name for w in witnesses}
        report.witnesses_required = len(witnesses)
        report.keys_from = "auditor" if vkey is not None else "export"
    try:
        signed = open_checkpoint(checkpoint_bytes, log_key, witnesses)
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
    cosigned = {c.cosigner for c in signed.cosignatures}
    report.witnesses_missing = [
        label for name, label in witness_names.items() if name not in cosigned
    ]
    if require_witnesses and len(cosigned) < report.witnesses_required:
        report.problems.append(Problem("witnesses_missing", report.warnings[0]))
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
