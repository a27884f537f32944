"""Cases, consents and disclosures: ``puente case``, ``puente consent``, ``puente disclose``.

Thin wrappers over the service functions (node.casework.cases, node.casework.consents,
node.casework.disclose, node.casework.shareback, node.intake.retention); every refusal is a
``puente: <reason>: <detail>`` line with exit code 2 (node.commands.cli).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from node.casework.cases import ERASURE_REASONS
from node.commands._util import with_node
from node.core.errors import ConfigError
from node.intake.terms import CASE_SUMMARIES
from node.storage.context import NodeContext
from node.storage.migrate import upgrade_to_head


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("bad_document", f"{path}: not readable JSON") from exc


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _recipient(text: str) -> tuple[str, str]:
    node, sep, authority = text.partition("/")
    if not sep or not node or not authority:
        raise argparse.ArgumentTypeError("use NODE/AUTHORITY, e.g. MX/mx-comar")
    return node, authority


def _officer(text: str) -> tuple[str, str]:
    authority, sep, officer = text.partition(":")
    if not sep or not authority or not officer:
        raise argparse.ArgumentTypeError("use AUTHORITY:OFFICER, e.g. gt-consulado:officer-17")
    return authority, officer


def register(sub: Any) -> None:
    _register_case(sub)
    _register_consent(sub)
    _register_disclose(sub)


def _register_case(sub: Any) -> None:
    case = sub.add_parser("case", help="cases, interviews and interview coverage")
    case_sub = case.add_subparsers(dest="case_command", required=True)

    create = case_sub.add_parser("create", help="record a case (schemas/case)")
    create.add_argument("--dir", type=Path, required=True)
    create.add_argument("--authority", required=True, help="the interviewing authority")
    create.add_argument("--file", type=Path, required=True)
    create.set_defaults(handler=case_create)

    show = case_sub.add_parser("show", help="a case this node holds")
    show.add_argument("--dir", type=Path, required=True)
    show.add_argument("case", help="case id or case_ref")
    show.add_argument("--authority", help="the authority holding it (if two use the case_ref)")
    show.set_defaults(handler=case_show)

    interview = case_sub.add_parser("interview", help="add answers and the topics asked")
    interview.add_argument("--dir", type=Path, required=True)
    interview.add_argument("case", help="case id or case_ref")
    interview.add_argument("--authority", required=True)
    interview.add_argument("--file", type=Path, required=True, help="an interview section")
    interview.set_defaults(handler=case_interview)

    coverage = case_sub.add_parser("coverage", help="interview topics covered and missing")
    coverage.add_argument("--dir", type=Path, required=True)
    coverage.add_argument("case_ref")
    coverage.add_argument("--authority", help="only what this authority holds")
    coverage.add_argument("--json", action="store_true")
    coverage.set_defaults(handler=case_coverage)

    received = case_sub.add_parser("received", help="case summaries received (decrypted)")
    received.add_argument("--dir", type=Path, required=True)
    received.add_argument("--case", dest="case_ref")
    received.add_argument("--authority", help="only what was sent to this authority")
    received.set_defaults(handler=case_received)

    addendum = case_sub.add_parser("addendum", help="record what this node learned")
    addendum.add_argument("--dir", type=Path, required=True)
    addendum.add_argument("case_ref")
    addendum.add_argument("--origin", required=True, help="node that sent the case")
    addendum.add_argument("--authority", required=True)
    addendum.add_argument("--file", type=Path, required=True, help="an interview section")
    addendum.set_defaults(handler=case_addendum)

    share = case_sub.add_parser("share-back", help="send an addendum's new topics back")
    share.add_argument("--dir", type=Path, required=True)
    share.add_argument("addendum_id")
    share.set_defaults(handler=case_share_back)

    erase = case_sub.add_parser("erase", help="crypto-shred a case: destroy its data key")
    erase.add_argument("--dir", type=Path, required=True)
    erase.add_argument("case", help="case id or case_ref")
    erase.add_argument("--authority", required=True, help="the authority holding it")
    erase.add_argument("--reason", required=True, choices=list(ERASURE_REASONS))
    erase.set_defaults(handler=case_erase)

    purge = case_sub.add_parser("purge", help="run the retention purge and consent lapse now")
    purge.add_argument("--dir", type=Path, required=True)
    purge.set_defaults(handler=case_purge)


def _register_consent(sub: Any) -> None:
    consent = sub.add_parser("consent", help="consent records: record, narrow, withdraw, show")
    consent_sub = consent.add_subparsers(dest="consent_command", required=True)

    record = consent_sub.add_parser("record", help="record a consent (schemas/consent-draft)")
    record.add_argument("--dir", type=Path, required=True)
    record.add_argument("--file", type=Path, required=True)
    record.set_defaults(handler=consent_record)

    show = consent_sub.add_parser("show", help="a consent, its disclosures and erasures")
    show.add_argument("--dir", type=Path, required=True)
    show.add_argument("consent_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=consent_show)

    narrow = consent_sub.add_parser("narrow", help="narrow a consent (never widen)")
    narrow.add_argument("--dir", type=Path, required=True)
    narrow.add_argument("consent_id")
    narrow.add_argument("--officer", type=_officer, required=True, help="AUTHORITY:OFFICER")
    narrow.add_argument("--purposes", nargs="+")
    narrow.add_argument("--categories", nargs="+")
    narrow.add_argument("--recipients-file", type=Path, help="JSON list of recipient matchers")
    narrow.add_argument("--valid-until")
    narrow.add_argument("--no-share-back", action="store_true")
    narrow.set_defaults(handler=consent_narrow)

    withdraw = consent_sub.add_parser("withdraw", help="withdraw a consent: stop and erase")
    withdraw.add_argument("--dir", type=Path, required=True)
    withdraw.add_argument("consent_id")
    withdraw.add_argument("--officer", type=_officer, required=True, help="AUTHORITY:OFFICER")
    withdraw.set_defaults(handler=consent_withdraw)


def _register_disclose(sub: Any) -> None:
    disclose = sub.add_parser("disclose", help="preview and send case summaries")
    disclose_sub = disclose.add_subparsers(dest="disclose_command", required=True)
    for name, handler, text in (
        ("preview", disclose_preview, "what would be sent, and why each other field is not"),
        ("send", disclose_send, "queue the previewed summary for delivery"),
    ):
        command = disclose_sub.add_parser(name, help=text)
        command.add_argument("--dir", type=Path, required=True)
        command.add_argument("--case", required=True, help="case id or case_ref")
        command.add_argument(
            "--type", dest="doc_type", required=True, choices=sorted(CASE_SUMMARIES)
        )
        command.add_argument("--purpose", required=True)
        command.add_argument("--to", type=_recipient, required=True, help="NODE/AUTHORITY")
        command.add_argument("--from", dest="sender", help="sending authority (default: case's)")
        command.add_argument("--consent", dest="consent_id")
        command.add_argument(
            "--vital-interest",
            metavar="JUSTIFICATION",
            help="disclose without consent because a life is in danger (reviewed by auditors)",
        )
        command.add_argument("--json", action="store_true")
        command.set_defaults(handler=handler)
    exceptions = disclose_sub.add_parser("exceptions", help="disclosures without consent")
    exceptions.add_argument("--dir", type=Path, required=True)
    exceptions.set_defaults(handler=disclose_exceptions)


EXIT_REFUSED = 2  # as node.commands.cli


def _run(data_dir: Path, work: Any) -> Any:
    from node.casework.at_rest import seal_clear_cases

    async def migrated(ctx: NodeContext) -> Any:
        await upgrade_to_head(ctx.engine)
        await seal_clear_cases(ctx)  # cases written before encryption at rest
        return await work(ctx)

    return with_node(data_dir, migrated)


def case_create(args: argparse.Namespace) -> int:
    from node.casework.cases import create_case

    document = _json_file(args.file)

    async def work(ctx: NodeContext) -> Any:
        return await create_case(ctx, authority=args.authority, document=document)

    case = _run(args.dir, work)
    print(f"case {case.case_id} ({case.case_ref}) recorded for {case.authority}")
    return 0


def case_show(args: argparse.Namespace) -> int:
    from node.casework.cases import find_case

    async def work(ctx: NodeContext) -> Any:
        return await find_case(ctx, args.case, authority=args.authority)

    _print_json(_run(args.dir, work).as_json())
    return 0


def case_erase(args: argparse.Namespace) -> int:
    from node.casework.cases import erase_case

    async def work(ctx: NodeContext) -> str:
        return await erase_case(ctx, args.case, authority=args.authority, reason=args.reason)

    print(f"case {_run(args.dir, work)} erased: its data key is destroyed")
    return 0


def case_interview(args: argparse.Namespace) -> int:
    from node.casework.cases import record_interview

    interview = _json_file(args.file)

    async def work(ctx: NodeContext) -> Any:
        return await record_interview(ctx, args.case, authority=args.authority, interview=interview)

    case = _run(args.dir, work)
    print(f"interview recorded on case {case.case_ref}")
    return 0


def case_coverage(args: argparse.Namespace) -> int:
    from node.casework.cases import coverage

    async def work(ctx: NodeContext) -> Any:
        return await coverage(ctx, args.case_ref, authority=args.authority)

    report = _run(args.dir, work)
    if args.json:
        _print_json(report.as_json())
        return 0
    print(f"interview coverage of {args.case_ref}:")
    for topic, entries in report.covered.items():
        first = entries[0]
        print(
            f"  covered  {topic:<36} {first.asked_at.date()} {first.node}/{first.authority} "
            f"in {first.language}{' with interpreter' if first.interpreter else ''}"
            + (f" (+{len(entries) - 1} more)" if len(entries) > 1 else "")
        )
    for topic in report.missing:
        print(f"  missing  {topic}")
    print(f"{len(report.covered)} covered, {len(report.missing)} still to ask")
    return 0


def case_received(args: argparse.Namespace) -> int:
    import getpass

    from node.intake.summaries import read_received

    async def work(ctx: NodeContext) -> Any:
        return await read_received(
            ctx,
            args.case_ref,
            viewer=f"cli:{getpass.getuser()}",
            recipient_authority=args.authority,
        )

    _print_json([s.as_json() for s in _run(args.dir, work)])
    return 0


def case_addendum(args: argparse.Namespace) -> int:
    from node.casework.cases import add_addendum

    interview = _json_file(args.file)

    async def work(ctx: NodeContext) -> Any:
        return await add_addendum(
            ctx,
            case_ref=args.case_ref,
            origin_node=args.origin,
            authority=args.authority,
            interview=interview,
        )

    addendum = _run(args.dir, work)
    print(f"addendum {addendum.addendum_id} recorded for {addendum.case_ref}")
    return 0


def case_share_back(args: argparse.Namespace) -> int:
    from node.casework.shareback import share_back

    async def work(ctx: NodeContext) -> Any:
        return await share_back(ctx, args.addendum_id)

    shared = _run(args.dir, work)
    print(f"queued {shared.message_id}: topics {', '.join(shared.topics)} shared back")
    return 0


def case_purge(args: argparse.Namespace) -> int:
    from node.intake.retention import sweep

    async def work(ctx: NodeContext) -> Any:
        return await sweep(ctx)

    result = _run(args.dir, work)
    print(
        f"purged {result.purged} summary(ies) and {result.cases_purged} case(s) past retention; "
        f"{result.lapsed} consent(s) lapsed; "
        f"{result.orphan_keys} stray data key(s) removed"
    )
    return 0


def consent_record(args: argparse.Namespace) -> int:
    from node.casework.consents import record_consent

    draft = _json_file(args.file)

    async def work(ctx: NodeContext) -> Any:
        return await record_consent(ctx, draft)

    record = _run(args.dir, work)
    print(f"consent {record.consent_id} recorded for case {record.case_ref}")
    return 0


def consent_show(args: argparse.Namespace) -> int:
    from node.casework.consents import consent_status

    async def work(ctx: NodeContext) -> Any:
        return await consent_status(ctx, args.consent_id)

    status = _run(args.dir, work)
    if args.json:
        _print_json(status.as_json())
        return 0
    record = status.consent
    print(f"consent {record.consent_id} for case {record.case_ref}: {status.effective_status}")
    for entry in record.history:
        print(f"  {entry.at.isoformat()}  {entry.status}")
    for d in status.disclosures:
        print(f"  disclosure {d.message_id} {d.doc_type} -> {d.recipient} ({d.purpose}): {d.state}")
    for e in status.erasures:
        confirmed = (
            f"erasure confirmed {e.confirmed_at.isoformat()}" if e.confirmed_at else "awaiting"
        )
        print(f"  {e.scope} withdrawal to {e.node}/{e.authority}: {confirmed}")
    return 0


def _officer_of(ctx: NodeContext, pair: tuple[str, str]) -> Any:
    from node.rules.consent import Officer

    return Officer(ctx.node_id, pair[0], pair[1])


def consent_narrow(args: argparse.Namespace) -> int:
    from node.casework.consents import get_consent, narrow_consent
    from node.core.clock import parse_rfc3339
    from node.rules.consent import RecipientMatcher, Scope

    recipients = _json_file(args.recipients_file) if args.recipients_file else None

    async def work(ctx: NodeContext) -> Any:
        current = (await get_consent(ctx, args.consent_id)).scope
        try:
            valid_until = (
                parse_rfc3339(args.valid_until) if args.valid_until else current.valid_until
            )
        except ValueError as exc:
            raise ConfigError("bad_document", "--valid-until is not RFC 3339") from exc
        scope = Scope(
            purposes=frozenset(args.purposes) if args.purposes else current.purposes,
            recipients=(
                tuple(RecipientMatcher.from_json(m) for m in recipients)
                if isinstance(recipients, list)
                else current.recipients
            ),
            categories=frozenset(args.categories) if args.categories else current.categories,
            valid_until=valid_until,
            share_back=current.share_back and not args.no_share_back,
        )
        return await narrow_consent(ctx, args.consent_id, scope, by=_officer_of(ctx, args.officer))

    outcome = _run(args.dir, work)
    print(
        f"consent {outcome.consent.consent_id} narrowed; {len(outcome.stopped)} queued "
        f"disclosure(s) stopped; {len(outcome.notices)} recipient(s) told to erase"
    )
    return 0


def consent_withdraw(args: argparse.Namespace) -> int:
    from node.casework.consents import withdraw_consent

    async def work(ctx: NodeContext) -> Any:
        return await withdraw_consent(ctx, args.consent_id, by=_officer_of(ctx, args.officer))

    outcome = _run(args.dir, work)
    print(
        f"consent {outcome.consent.consent_id} withdrawn; {len(outcome.stopped)} queued "
        f"disclosure(s) stopped; withdrawal sent to {len(outcome.notices)} recipient(s), "
        "each will return a signed erasure receipt"
    )
    return 0


def _disclosure_args(args: argparse.Namespace) -> Mapping[str, Any]:
    node, authority = args.to
    return {
        "case": args.case,
        "doc_type": args.doc_type,
        "purpose": args.purpose,
        "recipient_node": node,
        "recipient_authority": authority,
        "sender_authority": args.sender,
        "consent_id": args.consent_id,
        "vital_interest": args.vital_interest,
    }


def print_preview(preview: Any) -> None:
    """The caseworker's view of a preview: what goes, what stays and why."""
    plan = preview.plan
    recipient = plan.recipient
    print(
        f"{plan.doc_type} for {plan.purpose}: {preview.sender_authority} -> "
        f"{recipient.node}/{recipient.authority} ({recipient.kind})"
    )
    if plan.rule is not None:
        print(f"  policy {plan.rule.policy.policy_id} {plan.rule.policy.version}", end="")
        agreements = ", ".join(a.agreement_id for a in plan.rule.agreements)
        print(f"; narrowed by {agreements}" if agreements else "")
    basis = plan.legal_basis or "-"
    if plan.consent is not None:
        basis += f" {plan.consent.consent_id}"
    print(f"  legal basis: {basis}")
    print(f"  sent ({len(preview.sent_fields)}):")
    for path in preview.sent_fields:
        print(f"    + {path}")
    print(f"  withheld ({len(preview.withheld)}):")
    for path, reason in sorted(preview.withheld.items()):
        print(f"    - {path:<44} {reason}")
    if plan.refusal is not None:
        print(f"  REFUSED: {plan.refusal.reason}")


def disclose_preview(args: argparse.Namespace) -> int:
    from node.casework.disclose import preview_disclosure

    async def work(ctx: NodeContext) -> Any:
        return await preview_disclosure(ctx, **_disclosure_args(args))

    preview = _run(args.dir, work)
    if args.json:
        _print_json(preview.as_json())
    else:
        print_preview(preview)
    if preview.plan.refusal is not None:
        refusal = preview.plan.refusal
        print(f"puente: {refusal.reason}: {refusal.detail}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def disclose_send(args: argparse.Namespace) -> int:
    import getpass

    from node.casework.disclose import disclose

    async def work(ctx: NodeContext) -> Any:
        return await disclose(ctx, **_disclosure_args(args), user=f"cli:{getpass.getuser()}")

    sent = _run(args.dir, work)
    if args.json:
        _print_json({"message_id": sent.message_id, **sent.preview.as_json()})
    else:
        print_preview(sent.preview)
        print(f"queued {sent.message_id}; the running node delivers it (see `puente status`)")
    return 0


def disclose_exceptions(args: argparse.Namespace) -> int:
    from node.casework.disclose import exceptions_for_review

    async def work(ctx: NodeContext) -> Any:
        return await exceptions_for_review(ctx)

    _print_json([e.as_json() for e in _run(args.dir, work)])
    return 0
