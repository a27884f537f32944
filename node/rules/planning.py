"""Planning one disclosure: legal basis, minimization, safeguards, terms. Pure.

``plan_disclosure`` is the single function behind both the caseworker's
preview and the send (node.casework.disclose), so the preview is by construction what
is sent. A plan always carries the summary that *would* go and every withheld
field with its reason; when something forbids the disclosure it also carries
the refusal (reason code and detail) and nothing is sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.core import schemas
from node.core.canonical import sha256_hex
from node.core.clock import rfc3339
from node.core.errors import SchemaError
from node.rules.consent import ConsentRecord, ConsentRefused, RecipientRef, Scope, choose
from node.rules.critical_route import WITHHELD_FOR_SAFETY, check_route, route_withheld
from node.rules.minimize import CATEGORY_NOT_CONSENTED, Summary, minimize, withhold
from node.rules.policy import EffectiveRule, PolicyError, PolicySet, effective_rule
from node.rules.safeguards import SafeguardRefused, check_all
from node.wire.fields import field_paths

MIN_JUSTIFICATION_CHARS = 40
# What a disclosure can rest on: her consent, or a life in danger (schemas/disclosure_terms).
LEGAL_BASES = ("consent", "vital_interest")
SHARE_BACK = "case_continuity"  # see plan_share_back


@dataclass(frozen=True)
class VitalInterest:
    """The life-in-danger exception: a disclosure without consent, justified in writing."""

    exception_id: str
    justification: str

    @property
    def justification_sha256(self) -> str:
        return sha256_hex(self.justification.encode("utf-8"))


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


@dataclass(frozen=True)
class Plan:
    """What would be sent to one recipient for one purpose, and whether it may be."""

    doc_type: str
    purpose: str
    recipient: RecipientRef
    summary: Summary
    refusal: Refusal | None
    legal_basis: str | None = None
    consent: ConsentRecord | None = None
    exception: VitalInterest | None = None
    rule: EffectiveRule | None = None
    retain_until: dt.datetime | None = None
    terms: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.refusal is None


def _empty(case: Mapping[str, Any], reason: str) -> Summary:
    return Summary(document={}, sent_fields=(), withheld=dict.fromkeys(field_paths(case), reason))


def plan_disclosure(
    *,
    case: Mapping[str, Any],
    doc_type: str,
    purpose: str,
    recipient: RecipientRef,
    sender_country: str,
    policies: PolicySet,
    consents: Sequence[ConsentRecord],
    now: dt.datetime,
    vital_interest: VitalInterest | None = None,
    consent_id: str | None = None,
) -> Plan:
    """Decide what may leave for ``recipient`` and under which terms."""

    def refused(reason: str, detail: str, summary: Summary, **known: Any) -> Plan:
        return Plan(doc_type, purpose, recipient, summary, Refusal(reason, detail), **known)

    schema_id = schemas.DOCUMENT_SCHEMAS.get(doc_type)
    policy = policies.current(doc_type)
    if schema_id is None or policy is None:
        return refused("no_policy", f"no policy for {doc_type}", _empty(case, "no_policy"))
    if purpose == SHARE_BACK:
        return refused(
            "share_back_only",
            "case_continuity is what a recipient shares back to the case's holder",
            _empty(case, "share_back_only"),
        )
    try:
        rule = effective_rule(
            policy,
            purpose=purpose,
            recipient_kind=recipient.kind,
            agreements=policies.between(sender_country, recipient.node),
            sender_country=sender_country,
            recipient_country=recipient.node,
        )
    except PolicyError as exc:
        return refused(exc.reason, exc.detail, _empty(case, "not_in_policy"))

    consent: ConsentRecord | None = None
    consented: frozenset[str] | None = None
    basis_refusal: Refusal | None = None
    if vital_interest is not None:
        legal_basis = "vital_interest"
        if len(vital_interest.justification.strip()) < MIN_JUSTIFICATION_CHARS:
            basis_refusal = Refusal(
                "justification_required",
                f"the life-in-danger exception needs a written justification of at least "
                f"{MIN_JUSTIFICATION_CHARS} characters",
            )
    else:
        legal_basis = "consent"
        try:
            consent = choose(
                consents, now=now, purpose=purpose, recipient=recipient, consent_id=consent_id
            )
            consented = consent.scope.categories
        except ConsentRefused as exc:
            basis_refusal = Refusal(exc.reason, exc.detail)
            consented = frozenset()

    summary = minimize(case, rule, consented)
    known: dict[str, Any] = {
        "legal_basis": legal_basis,
        "consent": consent,
        "exception": vital_interest,
        "rule": rule,
    }
    if basis_refusal is not None:
        # Nothing may go: every field the policy would allow is withheld for that reason.
        withheld = {}
        for path in field_paths(case):
            reason = summary.withheld.get(path)
            withheld[path] = (
                basis_refusal.reason if reason in (None, CATEGORY_NOT_CONSENTED) else str(reason)
            )
        blocked = Summary(document={}, sent_fields=(), withheld=withheld)
        return refused(basis_refusal.reason, basis_refusal.detail, blocked, **known)
    # Her location stays home where danger is named (docs/critical-route.md, S2).
    summary = withhold(summary, route_withheld(case, recipient=recipient), WITHHELD_FOR_SAFETY)
    try:
        check_all(
            case,
            summary.document,
            doc_type=doc_type,
            decides_for_minor=consent.grantor_decides_for_minor if consent else None,
            today=now.date(),
        )
        # The critical route's safeguards, after the others and under either legal basis.
        check_route(case, doc_type=doc_type, recipient=recipient, today=now.date())
    except SafeguardRefused as exc:
        return refused(exc.reason, exc.detail, summary, **known)
    try:
        schemas.validate(schema_id, summary.document, reason="summary_incomplete")
    except SchemaError as exc:
        policy_only = minimize(case, rule, None).document
        reason = "summary_incomplete"
        if consented is not None and _valid(schema_id, policy_only):
            reason = CATEGORY_NOT_CONSENTED
        return refused(reason, exc.detail, summary, **known)

    retain_until = (now + rule.retention).replace(microsecond=0)  # as the terms state it
    basis = (consent.consent_id, consent.scope) if consent is not None else None
    terms = _terms(purpose, legal_basis, basis, vital_interest, rule, retain_until)
    return Plan(
        doc_type,
        purpose,
        recipient,
        summary,
        None,
        retain_until=retain_until,
        terms=terms,
        **known,
    )


def plan_share_back(
    *,
    document: Mapping[str, Any],
    consent_id: str,
    scope: Scope,
    recipient: RecipientRef,
    sender_country: str,
    policies: PolicySet,
    now: dt.datetime,
) -> Plan:
    """Plan sharing back what a recipient learned, to the authority holding her case.

    Rests on her consent as it travelled with the summary (``scope``): she
    must have agreed to share-back, and the consent must still be valid. The
    policy's ``case_continuity`` rule and her consented categories apply.
    """
    purpose = "case_continuity"

    def refused(reason: str, detail: str, summary: Summary, **known: Any) -> Plan:
        return Plan("case_handoff", purpose, recipient, summary, Refusal(reason, detail), **known)

    policy = policies.current("case_handoff")
    if policy is None:
        return refused("no_policy", "no case_handoff policy", _empty(document, "no_policy"))
    try:
        rule = effective_rule(
            policy,
            purpose=purpose,
            recipient_kind=recipient.kind,
            agreements=policies.between(sender_country, recipient.node),
            sender_country=sender_country,
            recipient_country=recipient.node,
        )
    except PolicyError as exc:
        return refused(exc.reason, exc.detail, _empty(document, "not_in_policy"))
    known: dict[str, Any] = {"legal_basis": "consent", "rule": rule}
    if not scope.share_back:
        return refused(
            "purpose_not_consented",
            "she did not agree that what is learned is shared back",
            _empty(document, "purpose_not_consented"),
            **known,
        )
    if now >= scope.valid_until:
        return refused(
            "consent_expired",
            "the consent is no longer valid",
            _empty(document, "consent_expired"),
            **known,
        )
    summary = minimize(document, rule, scope.categories)
    try:
        schemas.validate(schemas.CASE_HANDOFF, summary.document, reason="summary_incomplete")
    except SchemaError as exc:
        return refused("summary_incomplete", exc.detail, summary, **known)
    retain_until = (now + rule.retention).replace(microsecond=0)
    terms = _terms(purpose, "consent", (consent_id, scope), None, rule, retain_until)
    return Plan(
        "case_handoff",
        purpose,
        recipient,
        summary,
        None,
        retain_until=retain_until,
        terms=terms,
        **known,
    )


def _valid(schema_id: str, document: Mapping[str, Any]) -> bool:
    return not any(schemas.validator(schema_id).iter_errors(document))


def _terms(
    purpose: str,
    legal_basis: str,
    consent: tuple[str, Scope] | None,
    exception: VitalInterest | None,
    rule: EffectiveRule,
    retain_until: dt.datetime,
) -> dict[str, Any]:
    terms: dict[str, Any] = {
        "purpose": purpose,
        "legal_basis": legal_basis,
        "policy": rule.policy.ref.as_json(),
        "agreements": [a.ref.as_json() for a in rule.agreements],
        "handling": {
            "onward_sharing": rule.rule.handling.onward_sharing,
            "delete_after_retention": rule.rule.handling.delete_after_retention,
            "retain_until": rfc3339(retain_until),
        },
    }
    if consent is not None:
        terms["consent"] = {"id": consent[0], **consent[1].as_json()}
    if exception is not None:
        terms["exception"] = {
            "id": exception.exception_id,
            "justification_sha256": exception.justification_sha256,
            "review_required": True,
        }
    schemas.validate(schemas.DISCLOSURE_TERMS, terms)
    return terms
