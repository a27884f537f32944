"""Policies and bilateral agreements: parsing, digests, narrowing that never widens.

Pure: no database, no network. The recipient-side checks of terms
(node.intake.terms) are table-driven here too.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from node.core.errors import EnvelopeError
from node.core.schemas import CASE_HANDOFF
from node.demo.synthetic_cases import consent_draft, interviewed_case
from node.intake.terms import CASE_SUMMARIES, check_terms
from node.rules.consent import RecipientRef, new_consent
from node.rules.planning import plan_disclosure
from node.rules.policy import (
    POLICY_ROOT,
    Agreement,
    PolicyError,
    build_policy_set,
    default_policy_set,
    effective_rule,
    load_policy_set,
    parse_agreement,
    parse_policy,
    path_matches,
)
from node.wire.envelope import Message, Party
from node.wire.fields import field_paths

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def shipped(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((POLICY_ROOT / name).read_text())
    return document


@pytest.mark.parametrize(
    ("pattern", "path", "allowed"),
    [
        ("arrival", "arrival.date", True),
        ("arrival", "arrival", True),
        ("accompanying_children", "accompanying_children[].age", True),
        ("accompanying_children[].age", "accompanying_children[].age", True),
        ("accompanying_children[].age", "accompanying_children[].given_names", False),
        ("person.given_names", "person.given_names_other", False),
        ("person", "personal_notes", False),
        ("interview", "interview.coverage[].topic", True),
        ("interview.coverage", "interview.identification_indicators", False),
    ],
)
def test_field_patterns_allow_a_field_and_what_is_beneath_it(
    pattern: str, path: str, allowed: bool
) -> None:
    assert path_matches(pattern, path) is allowed


def test_shipped_policies_parse_and_their_digest_is_sha256_of_rfc8785() -> None:
    policies = load_policy_set(POLICY_ROOT)
    for doc_type in sorted(CASE_SUMMARIES):
        document = shipped(f"{doc_type}.json")
        policy = policies.current(doc_type)
        assert policy is not None
        assert policy.sha256 == hashlib.sha256(rfc8785.dumps(document)).hexdigest()
        # Whitespace and member order do not change the digest; content does.
        reordered = json.loads(json.dumps(document, sort_keys=True, indent=7))
        assert parse_policy(reordered).sha256 == policy.sha256
        changed = copy.deepcopy(document)
        changed["rules"][0]["retention_days"] += 1
        assert parse_policy(changed).sha256 != policy.sha256
    assert sorted(a.agreement_id for a in policies.agreements) == [
        "bilateral.gt-mx",
        "bilateral.gt-mx.critical-route",
    ]


def test_a_newer_policy_version_becomes_current_and_the_old_one_still_resolves() -> None:
    old = shipped("case_handoff.json")
    new = copy.deepcopy(old)
    new["version"] = "1.10"
    policies = build_policy_set([old, new])
    current = policies.current("case_handoff")
    assert current is not None and current.version == "1.10"
    assert policies.get("puente.case-handoff", "1.0") is not None
    with pytest.raises(PolicyError) as twice:
        build_policy_set([old, copy.deepcopy(old)])
    assert twice.value.reason == "policy_invalid"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d["rules"].append(copy.deepcopy(d["rules"][0])), "policy_invalid"),
        (lambda d: d["rules"][0]["fields"].append("person.shoe_size"), "policy_invalid"),
        (lambda d: d.update(doc_type="diary"), "policy_invalid"),
        (lambda d: d["rules"][0].update(retention_days=0), "policy_invalid"),
        (lambda d: d["categories"].update(gossip=["interview"]), "policy_invalid"),
        (lambda d: d["rules"][0]["fields"].append("diary.entries"), "policy_invalid"),
    ],
)
def test_invalid_policies_are_refused(mutate: Any, reason: str) -> None:
    document = shipped("case_handoff.json")
    mutate(document)
    with pytest.raises(PolicyError) as refused:
        parse_policy(document)
    assert refused.value.reason == reason


def test_categories_take_the_longest_matching_pattern() -> None:
    policy = default_policy_set().current("case_handoff")
    assert policy is not None
    assert policy.category_of("interview.coverage[].topic") == "interview_coverage"
    assert policy.category_of("interview.persecution_grounds") == "interview_account"
    assert policy.category_of("person.languages") == "languages"
    assert policy.category_of("person.given_names") == "identity"
    assert policy.category_of("nothing.like.this") is None


def agreement(
    narrowings: list[dict[str, Any]], parties: tuple[str, str] = ("GT", "MX")
) -> Agreement:
    return parse_agreement(
        {
            "agreement_id": "bilateral.test",
            "version": "1.0",
            "parties": list(parties),
            "title": {"en": "test"},
            "narrowings": narrowings,
        }
    )


def test_an_agreement_narrows_fields_and_retention_between_its_parties_only() -> None:
    policy = default_policy_set().current("case_handoff")
    assert policy is not None
    narrowing = agreement(
        [
            {
                "doc_type": "case_handoff",
                "purpose": "protection_referral",
                "fields": ["case_ref", "interview", "person.given_names"],
                "exclude_fields": ["interview.persecution_grounds"],
                "retention_days": 10,
            }
        ]
    )
    rule = effective_rule(
        policy,
        purpose="protection_referral",
        recipient_kind="protection_agency",
        agreements=[narrowing],
        sender_country="MX",
        recipient_country="GT",
    )
    assert rule.retention == dt.timedelta(days=10)
    assert rule.allows("interview.coverage[].topic")
    assert not rule.allows("interview.persecution_grounds")
    assert not rule.allows("person.family_names")
    assert rule.agreement_removing("person.family_names") == narrowing
    elsewhere = effective_rule(
        policy,
        purpose="protection_referral",
        recipient_kind="protection_agency",
        agreements=[narrowing],
        sender_country="MX",
        recipient_country="HN",
    )
    assert elsewhere.allows("person.family_names") and elsewhere.retention.days == 365


def test_an_agreement_can_never_widen_a_policy() -> None:
    policy = default_policy_set().current("case_handoff")
    assert policy is not None
    widening = agreement(
        [
            {
                "doc_type": "case_handoff",
                "recipient_kinds": ["migration_authority"],
                # Fields the policy does not give a migration authority, and a longer retention.
                "fields": ["interview", "person", "arrival", "protection"],
                "retention_days": 3000,
            }
        ]
    )
    plain = effective_rule(
        policy,
        purpose="protection_referral",
        recipient_kind="migration_authority",
        agreements=[],
        sender_country="GT",
        recipient_country="MX",
    )
    narrowed = effective_rule(
        policy,
        purpose="protection_referral",
        recipient_kind="migration_authority",
        agreements=[widening],
        sender_country="GT",
        recipient_country="MX",
    )
    case = interviewed_case(case_ref="GT-TEST-000001", node="GT", authority="gt-c", asked_at=NOW)
    for path in field_paths(case):
        assert not (narrowed.allows(path) and not plain.allows(path)), path
    assert narrowed.retention == plain.retention == dt.timedelta(days=90)
    assert not narrowed.allows("interview.identification_indicators")


def test_no_rule_for_a_purpose_and_kind_is_a_refusal() -> None:
    policy = default_policy_set().current("return_notice")
    assert policy is not None
    with pytest.raises(PolicyError) as refused:
        effective_rule(
            policy,
            purpose="reception_on_return",
            recipient_kind="consulate",
            agreements=[],
            sender_country="MX",
            recipient_country="GT",
        )
    assert refused.value.reason == "purpose_not_in_policy"


def test_policies_can_be_loaded_from_another_directory(tmp_path: Path) -> None:
    (tmp_path / "bilateral").mkdir()
    (tmp_path / "only.json").write_text(json.dumps(shipped("return_notice.json")))
    policies = load_policy_set(tmp_path)
    assert policies.current("case_handoff") is None
    assert policies.agreements == ()
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(PolicyError):
        load_policy_set(tmp_path)


# Recipient side: a case summary checked against the terms it travels under.


COMAR = RecipientRef("MX", "mx-comar", "protection_agency")


def planned_handoff(recipient: RecipientRef = COMAR) -> tuple[Message, Any]:
    case = interviewed_case(
        case_ref="GT-TEST-000002", node="GT", authority="gt-consulado", asked_at=NOW
    )
    consent = new_consent(
        consent_draft(
            case_ref="GT-TEST-000002",
            node="GT",
            authority="gt-consulado",
            recipients=[{"country": "MX", "authority_kind": "protection_agency"}],
            valid_until=NOW + dt.timedelta(days=30),
        ),
        consent_id=str(uuid.uuid4()),
        now=NOW,
    )
    plan = plan_disclosure(
        case=case,
        doc_type="case_handoff",
        purpose="protection_referral",
        recipient=recipient,
        sender_country="GT",
        policies=default_policy_set(),
        consents=[consent],
        now=NOW,
    )
    assert plan.ok, plan.refusal
    message = Message(
        message_id=str(uuid.uuid4()),
        sender=Party("GT", "gt-consulado"),
        recipient=Party(recipient.node, recipient.authority),
        doc_type="case_handoff",
        schema=CASE_HANDOFF,
        issued_at=int(NOW.timestamp()),
        expires_at=int((NOW + dt.timedelta(hours=1)).timestamp()),
        body=dict(plan.summary.document),
        terms=dict(plan.terms or {}),
    )
    return message, plan


def with_changes(message: Message, *, body: Any = None, terms: Any = None) -> Message:
    return Message(
        message_id=message.message_id,
        sender=message.sender,
        recipient=message.recipient,
        doc_type=message.doc_type,
        schema=message.schema,
        issued_at=message.issued_at,
        expires_at=message.expires_at,
        body=body if body is not None else message.body,
        terms=terms,
    )


def test_the_recipient_accepts_exactly_what_the_plan_sends() -> None:
    message, plan = planned_handoff()
    accepted = check_terms(
        message, policies=default_policy_set(), recipient_kind="protection_agency"
    )
    assert accepted is not None
    assert accepted.fields == plan.summary.sent_fields
    assert accepted.consent_id == plan.consent.consent_id
    assert accepted.retain_until == plan.retain_until


def _terms_with(message: Message, change: Any) -> dict[str, Any]:
    terms = copy.deepcopy(dict(message.terms or {}))
    change(terms)
    return terms


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t["policy"].update(version="9.9"), "unknown_policy"),
        (lambda t: t["policy"].update(sha256="0" * 64), "policy_mismatch"),
        (lambda t: t["policy"].update(id="puente.return-notice"), "policy_mismatch"),
        (lambda t: t["handling"].update(onward_sharing=True), "policy_mismatch"),
        (lambda t: t["handling"].update(retain_until="2031-01-01T00:00:00Z"), "policy_mismatch"),
        (lambda t: t.update(purpose="consular_assistance"), "purpose_not_in_policy"),
        (lambda t: t["consent"].update(purposes=["consular_assistance"]), "purpose_not_consented"),
        (lambda t: t["consent"].update(recipients=[{"country": "HN"}]), "recipient_not_consented"),
        (lambda t: t["consent"].update(valid_until="2026-11-01T00:00:00Z"), "consent_expired"),
        (lambda t: t["consent"].update(categories=["case_reference"]), "over_disclosure"),
        (
            lambda t: t.update(
                agreements=[{"id": "bilateral.nowhere", "version": "1.0", "sha256": "0" * 64}]
            ),
            "unknown_policy",
        ),
    ],
)
def test_the_recipient_refuses_terms_that_do_not_hold(change: Any, reason: str) -> None:
    message, _ = planned_handoff()
    tampered = with_changes(message, terms=_terms_with(message, change))
    with pytest.raises(EnvelopeError) as refused:
        check_terms(tampered, policies=default_policy_set(), recipient_kind="protection_agency")
    assert refused.value.reason == reason


def test_a_field_outside_the_policy_is_over_disclosure() -> None:
    message, _ = planned_handoff()
    body = copy.deepcopy(dict(message.body))
    body["arrival"] = {"date": "2026-12-01", "place_of_entry": "X", "means": "air"}
    with pytest.raises(EnvelopeError) as refused:
        check_terms(
            with_changes(message, body=body, terms=message.terms),
            policies=default_policy_set(),
            recipient_kind="protection_agency",
        )
    assert refused.value.reason == "over_disclosure"
    assert "arrival.date" in refused.value.detail and "2026-12-01" not in refused.value.detail


def test_terms_are_required_for_a_handoff_and_refused_on_control_messages() -> None:
    message, _ = planned_handoff()
    with pytest.raises(EnvelopeError) as missing:
        check_terms(
            with_changes(message, terms=None),
            policies=default_policy_set(),
            recipient_kind="protection_agency",
        )
    assert missing.value.reason == "terms_missing"
    withdrawal = Message(
        message_id=message.message_id,
        sender=message.sender,
        recipient=message.recipient,
        doc_type="consent_withdrawal",
        schema="x",
        issued_at=message.issued_at,
        expires_at=message.expires_at,
        body={},
        terms=message.terms,
    )
    with pytest.raises(EnvelopeError) as unexpected:
        check_terms(withdrawal, policies=default_policy_set(), recipient_kind="protection_agency")
    assert unexpected.value.reason == "terms_unexpected"


def test_a_withdrawn_consent_refuses_what_still_arrives_under_it() -> None:
    message, _ = planned_handoff()
    with pytest.raises(EnvelopeError) as refused:
        check_terms(
            message,
            policies=default_policy_set(),
            recipient_kind="protection_agency",
            consent_withdrawn=True,
        )
    assert refused.value.reason == "consent_withdrawn"
