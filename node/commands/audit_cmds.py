"""``puente audit``: the verifiable audit log for operators and auditors.

puente audit checkpoint [--new] [--size N] [--json]
puente audit proof inclusion --index I [--size N]     (JSON, RFC 9162 form)
puente audit proof consistency --old M [--new N]
puente audit entries [--start S] [--limit L] [--csv]
puente audit query [--case-ref REF] [--counterparty XX] [--purpose P]
                   [--legal-basis B] [--event E] [--since T] [--until T] [--csv]
puente audit subject-report --case-ref REF [--out FILE]
puente audit export --out DIR
puente audit verify                  (self-check, then the independent verifier)
puente audit witness                 (one witness round now)
puente audit witnessed | forks
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from node.commands import _util
from node.core.logs import configure_logging
from node.storage.context import NodeContext
from node.storage.migrate import upgrade_to_head


def with_node(data_dir: Path, work: Any) -> Any:
    """Open the node and run ``work``; log lines go to stderr so stdout stays parseable."""
    configure_logging("warning")
    return _util.with_node(data_dir, work)


def _emit(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


_TIME_HELP = "a date (2026-11-23: a whole day in the node's time zone) or an RFC 3339 time"


def register(sub: Any) -> None:
    audit_p = sub.add_parser("audit", help="the verifiable audit log")
    audit_sub = audit_p.add_subparsers(dest="audit_command", required=True)

    def command(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = audit_sub.add_parser(name, help=help_text)
        parser.add_argument("--dir", type=Path, required=True, help="the node's data directory")
        parser.set_defaults(handler=handler)
        return parser

    cp = command("checkpoint", "the latest signed checkpoint (C2SP signed note)", checkpoint_cmd)
    cp.add_argument("--new", action="store_true", help="sign one now if the log has grown")
    cp.add_argument("--size", type=int, help="an earlier checkpoint by tree size")
    cp.add_argument("--json", action="store_true")

    proof = audit_sub.add_parser("proof", help="inclusion and consistency proofs (RFC 9162)")
    proof_sub = proof.add_subparsers(dest="proof_kind", required=True)
    inc = proof_sub.add_parser("inclusion", help="that entry I is in the log")
    inc.add_argument("--dir", type=Path, required=True)
    inc.add_argument("--index", type=int, required=True)
    inc.add_argument("--size", type=int, help="a checkpoint's tree size (default: latest)")
    inc.set_defaults(handler=inclusion_cmd)
    con = proof_sub.add_parser("consistency", help="that the log of size M is a prefix of N")
    con.add_argument("--dir", type=Path, required=True)
    con.add_argument("--old", type=int, required=True)
    con.add_argument("--new", type=int, help="default: the latest checkpoint")
    con.set_defaults(handler=consistency_cmd)

    ent = command("entries", "entries by range, in log order", entries_cmd)
    ent.add_argument("--start", type=int, default=0)
    ent.add_argument("--limit", type=int, default=100)
    ent.add_argument("--csv", action="store_true")

    query = command("query", "entries by case, counterparty, purpose, legal basis, time", query_cmd)
    query.add_argument(
        "--case-ref",
        "--case-id",
        dest="case_ref",
        help="the case reference on the file, e.g. GT-2026-000123 (pseudonymised first)",
    )
    query.add_argument("--counterparty", help="a member's node id, e.g. GT")
    query.add_argument("--purpose", help="a purpose some policy allows, e.g. protection_referral")
    query.add_argument("--legal-basis", help="consent or vital_interest")
    query.add_argument("--event", help="an event name, e.g. disclosure.delivered")
    query.add_argument("--since", help=f"from: {_TIME_HELP}")
    query.add_argument("--until", help=f"before: {_TIME_HELP} (a date: to the end of that day)")
    query.add_argument("--start", type=int, default=0)
    query.add_argument("--limit", type=int, default=100)
    query.add_argument("--csv", action="store_true")

    report = command("subject-report", "every entry about one case, with proofs", report_cmd)
    report.add_argument(
        "--case-ref",
        "--case-id",
        dest="case_ref",
        required=True,
        help="the case reference on the file, e.g. GT-2026-000123 (or this node's case id)",
    )
    report.add_argument("--out", type=Path, help="write the JSON report here")

    export = command("export", "entries.jsonl, checkpoint and vkey for auditors", export_cmd)
    export.add_argument("--out", type=Path, required=True)

    command("verify", "check the stored log with the independent verifier", verify_cmd)
    command("witness", "sign a checkpoint and get it witnessed now", witness_cmd)
    command("witnessed", "which peers witnessed which tree size", witnessed_cmd)
    command("forks", "forks seen while witnessing peers' logs", forks_cmd)


def checkpoint_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.checkpoints import issue_checkpoint
    from node.auditlog.queries import checkpoint_document

    async def work(ctx: NodeContext) -> dict[str, Any]:
        await upgrade_to_head(ctx.engine)
        if args.new:
            await issue_checkpoint(ctx)
        return await checkpoint_document(ctx, args.size)

    doc = with_node(args.dir, work)
    if args.json:
        _emit(doc)
    else:
        print(doc["checkpoint"], end="")
    return 0


def inclusion_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.queries import inclusion_proof

    _emit(with_node(args.dir, lambda ctx: inclusion_proof(ctx, args.index, args.size)))
    return 0


def consistency_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.queries import consistency_proof

    _emit(with_node(args.dir, lambda ctx: consistency_proof(ctx, args.old, args.new)))
    return 0


def _print_entries(rows: list[Any], as_csv: bool) -> None:
    from node.auditlog.queries import entries_csv

    if as_csv:
        sys.stdout.write(entries_csv(rows))
        return
    for row in rows:
        print(row.entry)


def entries_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.queries import EntryQuery, query_entries

    query = EntryQuery(start=args.start, limit=args.limit)
    _print_entries(with_node(args.dir, lambda ctx: query_entries(ctx, query)), args.csv)
    return 0


def query_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.queries import EntryQuery, case_ref_for, query_entries, time_bound

    async def work(ctx: NodeContext) -> list[Any]:
        since, until = args.since, args.until
        query = EntryQuery(
            case_ref=case_ref_for(ctx, args.case_ref) if args.case_ref else None,
            counterparty=args.counterparty,
            purpose=args.purpose,
            legal_basis=args.legal_basis,
            event=args.event,
            since=time_bound(ctx, since, name="--since") if since else None,
            until=time_bound(ctx, until, name="--until", end=True) if until else None,
            start=args.start,
            limit=args.limit,
        )
        return await query_entries(ctx, query)

    _print_entries(with_node(args.dir, work), args.csv)
    return 0


def report_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.queries import subject_report

    report = with_node(args.dir, lambda ctx: subject_report(ctx, args.case_ref))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
        print(
            f"{len(report['entries'])} entries, {report['disclosures']} disclosures -> {args.out}"
        )
    else:
        _emit(report)
    return 0


def export_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.export import export_log

    summary = with_node(args.dir, lambda ctx: export_log(ctx, args.out))
    print(
        f"exported {summary.entries} entries (checkpoint of {summary.tree_size}) to {args.out}; "
        f"verify with: python -m audit verify {args.out}"
    )
    return 0


def verify_cmd(args: argparse.Namespace) -> int:
    from audit.verify import verify_export
    from node.auditlog import entries as audit
    from node.auditlog.export import export_log

    async def work(ctx: NodeContext) -> tuple[int | None, str, bool]:
        async with ctx.sessions() as session:
            damaged = await audit.first_damaged_entry(session)
        with tempfile.TemporaryDirectory(prefix="puente-audit-") as tmp:
            await export_log(ctx, Path(tmp))
            report = verify_export(Path(tmp))
            return damaged, report.verdict(), report.ok

    damaged, verdict, ok = with_node(args.dir, work)
    print(verdict)
    if damaged is not None:
        print(f"self-check: entry {damaged} does not match the stored Merkle tree")
    return 0 if ok and damaged is None else 1


def witness_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.witness_rounds import witness_round

    results = with_node(args.dir, witness_round)
    for r in results:
        extra = f" ({r.detail})" if r.detail else ""
        print(f"{r.witness}: {r.origin} size {r.tree_size}: {r.outcome}{extra}")
    return 0


def witnessed_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.queries import witnessed_sizes

    rows = with_node(args.dir, witnessed_sizes)
    for r in rows:
        print(
            f"size {r['tree_size']}: witnessed by {r['witness']} ({r['cosigner']}) at "
            f"{r['cosigned_at']}"
        )
    print(f"{len(rows)} cosignature(s)")
    return 0


def forks_cmd(args: argparse.Namespace) -> int:
    from node.auditlog.queries import forks

    rows = with_node(args.dir, forks)
    for f in rows:
        by = f" (reported by {f.reported_by})" if f.reported_by else ""
        print(f"FORK {f.detected_at.isoformat()} {f.node} {f.origin}: {f.reason}{by}")
    print(f"{len(rows)} fork(s) detected")
    return 1 if rows else 0
