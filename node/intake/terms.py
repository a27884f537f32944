"""The recipient's check of a case summary against the terms it travels under. Pure.

The recipient loads the same policy by id and version from its own copy,
checks the digest, applies the bilateral agreements it knows between the two
states, and refuses any field outside what policy and consent allow
(``over_disclosure``). It also checks that it is itself a recipient and the
purpose one she consented to, and that the handling rules are the policy's.
Every refusal is an :class:`~node.core.errors.EnvelopeError` with a reason code,
answered as problem+json and audited like any other refused envelope.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from node.core.clock import parse_rfc3339
from node.core.errors import EnvelopeError
from node.rules.consent import RecipientRef, Scope
from node.rules.critical_route import ROUTE_DOCUMENTS, check_route_received
from node.rules.policy import EffectiveRule, PolicyError, PolicySet, effective_rule
from node.rules.safeguards import SafeguardRefused
from node.wire.envelope import MAX_CLOCK_SKEW, Message
from node.wire.fields import field_paths

# Case summaries: what may only ever travel as minimized, consent-bound projections.
CASE_SUMMARIES = frozenset({"return_notice", "case_handoff"}) | ROUTE_DOCUMENTS
# Document types that must carry terms. return_notice may still come without them
# from senders that predate disclosure terms (see docs/consent-and-policy.md).
TERMS_REQUIRED = frozenset({"case_handoff"}) | ROUTE_DOCUMENTS
MAX_LISTED_FIELDS = 10
# What a later authority learned, sent back to the holder of her case: rests on the
# consent's share_back agreement rather than on its purposes and recipients.
SHARE_BACK = "case_continuity"


class TermsRefused(EnvelopeError):
    """A case summary is refused on its terms. ``reason`` says which check failed."""

    reason = "terms_refused"
    http_status = 422


@dataclass(frozen=True)
class AcceptedTerms:
    """Terms that passed every check, as the recipient records them."""

    terms: Mapping[str, Any]
    rule: EffectiveRule
    fields: tuple[str, ...]
    retain_until: dt.datetime

    @property
    def purpose(self) -> str:
        return str(self.terms["purpose"])

    @property
    def legal_basis(self) -> str:
        return str(self.terms["legal_basis"])

    @property
    def consent_id(self) -> str | None:
        consent = self.terms.get("consent")
        return str(consent["id"]) if consent else None

    @property
    def review_required(self) -> bool:
        return self.legal_basis == "vital_interest"


def check_terms(
    message: Message,
    *,
    policies: PolicySet,
    recipient_kind: str,
    consent_withdrawn: bool = False,
) -> AcceptedTerms | None:
    """Check a received message's terms; None for a message that carries none (and may not).

    ``consent_withdrawn``: this node was told that the consent named was withdrawn.
    """
    terms = message.terms
    if message.doc_type not in CASE_SUMMARIES:
        if terms is not None:
            raise TermsRefused("terms_unexpected", f"a {message.doc_type} carries no case data")
        return None
    if terms is None:
        if message.doc_type in TERMS_REQUIRED:
            raise TermsRefused("terms_missing", f"a {message.doc_type} must carry its terms")
        return None
    issued = dt.datetime.fromtimestamp(message.issued_at, dt.UTC)
    policy_ref = terms["policy"]
    policy = policies.get(policy_ref["id"], policy_ref["version"])
    if policy is None:
        raise TermsRefused(
            "unknown_policy", f"no policy {policy_ref['id']} {policy_ref['version']} here"
        )
    if policy.sha256 != policy_ref["sha256"] or policy.doc_type != message.doc_type:
        raise TermsRefused("policy_mismatch", "the policy text differs from ours")
    for ref in terms["agreements"]:
        agreement = policies.agreement(ref["id"], ref["version"])
        if agreement is None:
            raise TermsRefused("unknown_policy", f"no agreement {ref['id']} {ref['version']} here")
        if agreement.sha256 != ref["sha256"]:
            raise TermsRefused("policy_mismatch", f"agreement {ref['id']} differs from ours")
    sender, own = message.sender.node, message.recipient.node
    try:
        rule = effective_rule(
            policy,
            purpose=terms["purpose"],
            recipient_kind=recipient_kind,
            agreements=policies.between(sender, own),
            sender_country=sender,
            recipient_country=own,
        )
    except PolicyError as exc:
        raise TermsRefused(exc.reason, exc.detail) from exc
    fields = tuple(field_paths(message.body))
    outside = [p for p in fields if not rule.allows(p)]
    if outside:
        raise TermsRefused("over_disclosure", "fields outside the agreed policy: " + _list(outside))
    handling = terms["handling"]
    retain_until = _time(handling["retain_until"])
    if (
        handling["onward_sharing"] != rule.rule.handling.onward_sharing
        or handling["delete_after_retention"] != rule.rule.handling.delete_after_retention
    ):
        raise TermsRefused("policy_mismatch", "handling rules differ from the policy's")
    if retain_until > issued + rule.retention + MAX_CLOCK_SKEW:
        raise TermsRefused("policy_mismatch", "retention longer than the policy allows")
    if terms["legal_basis"] == "consent":
        _check_consent_scope(message, terms, rule, fields, recipient_kind, issued)
        if consent_withdrawn:
            raise TermsRefused("consent_withdrawn", "this consent was withdrawn")
    try:
        # What the critical route's safeguards let reach this authority (docs/critical-route.md §7).
        check_route_received(
            message.body,
            doc_type=message.doc_type,
            own=RecipientRef(own, message.recipient.authority, recipient_kind),
        )
    except SafeguardRefused as exc:
        raise TermsRefused(exc.reason, exc.detail) from exc
    return AcceptedTerms(terms=terms, rule=rule, fields=fields, retain_until=retain_until)


def _check_consent_scope(
    message: Message,
    terms: Mapping[str, Any],
    rule: EffectiveRule,
    fields: tuple[str, ...],
    recipient_kind: str,
    issued: dt.datetime,
) -> None:
    try:
        scope = Scope.from_json(terms["consent"])
    except ValueError as exc:
        raise TermsRefused("malformed_message", "consent valid_until unreadable") from exc
    me = RecipientRef(message.recipient.node, message.recipient.authority, recipient_kind)
    if terms["purpose"] == SHARE_BACK:
        # Back to the authority holding her case, which checks its own record
        # (node.intake.documents).
        if not scope.share_back:
            raise TermsRefused("purpose_not_consented", "she did not agree to share-back")
    elif terms["purpose"] not in scope.purposes:
        raise TermsRefused("purpose_not_consented", "she did not consent to this purpose")
    elif not scope.permits_recipient(me):
        raise TermsRefused("recipient_not_consented", "she did not consent to this recipient")
    if issued >= scope.valid_until:
        raise TermsRefused("consent_expired", "sent after the consent's validity")
    unconsented = [p for p in fields if rule.policy.category_of(p) not in scope.categories]
    if unconsented:
        raise TermsRefused(
            "over_disclosure", "fields of categories she did not consent to: " + _list(unconsented)
        )


def _time(text: str) -> dt.datetime:
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise TermsRefused("malformed_message", "retain_until unreadable") from exc


def _list(paths: list[str]) -> str:
    # Field names only, never values: refusals are logged and audited.
    shown = ", ".join(paths[:MAX_LISTED_FIELDS])
    return shown + (f" (+{len(paths) - MAX_LISTED_FIELDS} more)" if len(paths) > 10 else "")
