"""Property: no disclosure ever holds a field outside policy ∩ consent, and preview == sent.

Hypothesis generates cases (schema-valid by construction), consents, policies
and bilateral agreements. The planner's summary must only hold fields the
effective policy rule allows and her consented categories cover; the
recipient's independent check of the terms must accept exactly those fields;
more consent can only ever send more. On real nodes (SQLite and PostgreSQL),
the envelope the outbox sealed, opened with the recipient's key, carries
exactly the previewed document and terms.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from node.casework.cases import create_case
from node.casework.consents import record_consent
from node.casework.disclose import disclose, preview_disclosure, send_preview
from node.core import schemas
from node.core.clock import rfc3339
from node.delivery.outbox import DisclosureRefused
from node.demo.synthetic_cases import consent_draft
from node.intake.terms import check_terms
from node.rules.consent import CATEGORIES, PURPOSES, RecipientRef, new_consent
from node.rules.planning import VitalInterest, plan_disclosure
from node.rules.policy import POLICY_ROOT, PolicySet, build_policy_set, path_matches
from node.storage.models import Disclosure
from node.wire.envelope import Message, Party, open_envelope
from node.wire.fields import field_paths
from tests.support.cases import CASE_SPECS, CONSULATE
from tests.support.nodes import DatabaseFactory, LiveNode, live_federation

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
KINDS = ("consulate", "reception_centre", "migration_authority", "protection_agency")
TOPICS = (
    "identity",
    "languages",
    "health",
    "persecution",
    "fear_of_return",
    "violence_fled",
    "children",
    "gender_based_violence",
    "immediate_needs",
)
INDICATORS = {
    "fear_of_return": "fear_of_return",
    "persecution": "persecution",
    "health_condition": "health",
    "fled_pervasive_violence": "violence_fled",
}
NEEDS = ("food", "medical_care", "psychological_care", "shelter", "interpretation")
# What a summary needs to be valid, often (not always) given by a generated rule.
REQUIRED = {
    "return_notice": [(), *[("case_ref", "person", "arrival")] * 5],
    "case_handoff": [(), *[("case_ref", "interview.coverage"), ("case_ref", "interview")] * 3],
}
RETURN_NOTICE_ROOTS = ("case_ref", "person", "arrival", "accompanying", "immediate", "priority")
# Patterns a generated policy may allow: the catalogue's, coarser ones and finer ones.
PATTERNS = (
    "case_ref",
    "person",
    "person.given_names",
    "person.family_names",
    "person.date_of_birth",
    "person.age_status",
    "person.nationality",
    "person.identity_document",
    "person.languages",
    "arrival",
    "arrival.date",
    "accompanying_children",
    "accompanying_children[].given_names",
    "accompanying_children[].age",
    "immediate_needs",
    "priority_flags",
    "interview",
    "interview.identification_indicators",
    "interview.persecution_grounds",
    "interview.vulnerability_conditions",
    "interview.coverage",
    "protection",
    "services_given",
    "referrals_recommended",
    "risk_assessment",
)
# Fields of the document type (a policy naming others is refused when it is read).
PATTERNS_OF = {
    "case_handoff": PATTERNS,
    "return_notice": tuple(p for p in PATTERNS if p.startswith(RETURN_NOTICE_ROOTS)),
}


def _categories() -> dict[str, list[str]]:
    import json

    document = json.loads((POLICY_ROOT / "case_handoff.json").read_text())
    categories: dict[str, list[str]] = document["categories"]
    return categories


CATEGORY_MAP = _categories()


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    person: dict[str, Any] = {}
    for name, strategy in (
        ("given_names", st.sampled_from(["Ana", "Rosa Elena", "Juana"])),
        ("family_names", st.sampled_from(["Ejemplo", "Prueba Ficticia"])),
        (
            "date_of_birth",
            st.sampled_from(["1990-02-01", "2001-12-31", "1985-07-04", "2010-06-15"]),
        ),
        ("age_status", st.sampled_from(["adult"] * 4 + ["minor", "age_in_doubt"])),
        ("nationality", st.just("GT")),
        ("identity_document", st.just({"kind": "passport", "number": "DEMO-1"})),
        ("languages", st.sampled_from([["es"], ["mam", "es"]])),
    ):
        if draw(st.integers(0, 9)) > 0:
            person[name] = draw(strategy)
    case: dict[str, Any] = {"case_ref": f"GT-PROP-{uuid.uuid4().hex[:12]}", "person": person}
    children = draw(
        st.lists(
            st.fixed_dictionaries(
                {"given_names": st.sampled_from(["Luis", "Camila"]), "age": st.integers(0, 17)}
            ),
            max_size=2,
        )
    )
    if children and draw(st.booleans()):  # type: ignore[arg-type]
        case["accompanying_children"] = children
    if draw(st.integers(0, 3)) > 0:
        case["arrival"] = {"date": "2026-12-01", "place_of_entry": "Frontera", "means": "land"}
    needs = draw(st.lists(st.sampled_from(NEEDS), unique=True, max_size=3))
    if needs:
        case["immediate_needs"] = needs
    flags = draw(st.lists(st.sampled_from(["pregnant", "disability", "pregnant"]), unique=True))
    if flags:
        case["priority_flags"] = flags
    indicators = draw(st.lists(st.sampled_from(sorted(INDICATORS)), unique=True, max_size=2))
    if draw(st.integers(0, 2)) > 0:
        indicators = [i for i in indicators if i not in ("fear_of_return", "persecution")]
    asked = set(draw(st.lists(st.sampled_from(TOPICS), unique=True, min_size=1, max_size=5)))
    asked |= {INDICATORS[i] for i in indicators}
    if asked:
        case["interview"] = {
            "coverage": [
                {
                    "topic": topic,
                    "asked_at": rfc3339(NOW),
                    "node": "GT",
                    "authority": CONSULATE,
                    "language": "es",
                    "interpreter": draw(st.booleans()),
                }
                for topic in sorted(asked)
            ]
        }
        if indicators:
            case["interview"]["identification_indicators"] = indicators
    if draw(st.booleans()):
        case["protection"] = {
            "screening": {
                "outcome": draw(st.sampled_from(["no_protection_needs", "claim_pending"])),
                "decided_at": rfc3339(NOW),
                "node": "GT",
                "authority": CONSULATE,
            }
        }
    if draw(st.booleans()):
        case["services_given"] = [{"service": "shelter", "date": "2026-11-20"}]
    if draw(st.booleans()):
        case["risk_assessment"] = {"level": "high", "assessed_at": rfc3339(NOW)}
    schemas.validate(schemas.CASE, case)
    return case


@st.composite
def policy_sets(draw: st.DrawFn) -> PolicySet:
    documents = []
    for doc_type in ("return_notice", "case_handoff"):
        rules = []
        seen: set[tuple[str, str]] = set()
        for _ in range(draw(st.integers(1, 4))):
            purpose = draw(st.sampled_from(PURPOSES))
            kinds = [
                k
                for k in draw(st.lists(st.sampled_from(KINDS), min_size=1, unique=True))
                if (purpose, k) not in seen
            ]
            if not kinds:
                continue
            seen |= {(purpose, k) for k in kinds}
            rules.append(
                {
                    "purpose": purpose,
                    "recipient_kinds": kinds,
                    "fields": sorted(
                        set(
                            draw(
                                st.lists(
                                    st.sampled_from(PATTERNS_OF[doc_type]), min_size=1, unique=True
                                )
                            )
                        )
                        | set(draw(st.sampled_from(REQUIRED[doc_type])))
                    ),
                    "retention_days": draw(st.integers(1, 400)),
                    "handling": {"onward_sharing": False, "delete_after_retention": True},
                }
            )
        documents.append(
            {
                "policy_id": f"test.{doc_type.replace('_', '-')}",
                "version": "1.0",
                "doc_type": doc_type,
                "title": {"en": "generated"},
                "categories": CATEGORY_MAP,
                "rules": rules
                or [
                    {
                        "purpose": "protection_referral",
                        "recipient_kinds": ["protection_agency"],
                        "fields": ["case_ref"],
                        "retention_days": 1,
                        "handling": {"onward_sharing": False, "delete_after_retention": True},
                    }
                ],
            }
        )
    agreements = []
    if draw(st.booleans()):
        narrowing: dict[str, Any] = {
            "doc_type": draw(st.sampled_from(["case_handoff", "return_notice"]))
        }
        if draw(st.integers(0, 3)) == 0:
            narrowing["fields"] = draw(st.lists(st.sampled_from(PATTERNS), unique=True))
        if draw(st.booleans()):
            narrowing["exclude_fields"] = draw(st.lists(st.sampled_from(PATTERNS), unique=True))
        narrowing["retention_days"] = draw(st.integers(1, 400))
        agreements.append(
            {
                "agreement_id": "bilateral.generated",
                "version": "1.0",
                "parties": ["GT", draw(st.sampled_from(["MX", "HN"]))],
                "title": {"en": "generated"},
                "narrowings": [narrowing],
            }
        )
    return build_policy_set(documents, agreements)


matchers = st.one_of(
    st.fixed_dictionaries({"country": st.sampled_from(["MX", "HN"])}),
    st.fixed_dictionaries({"authority_kind": st.sampled_from(KINDS)}),
    st.fixed_dictionaries(
        {"country": st.sampled_from(["MX", "HN"]), "authority_kind": st.sampled_from(KINDS)}
    ),
)


@st.composite
def consent_drafts(draw: st.DrawFn, case_ref: str) -> dict[str, Any]:
    return consent_draft(
        case_ref=case_ref,
        node="GT",
        authority=CONSULATE,
        purposes=draw(st.lists(st.sampled_from(PURPOSES), min_size=1, unique=True)),
        recipients=draw(st.lists(matchers, min_size=1, max_size=3)),
        categories=draw(
            st.one_of(
                st.lists(st.sampled_from(CATEGORIES), min_size=1, unique=True),
                st.just(list(CATEGORIES)),
                st.lists(st.sampled_from(CATEGORIES), min_size=8, unique=True),
            )
        ),
        valid_until=NOW + dt.timedelta(days=draw(st.integers(1, 400))),
        grantor_role=draw(st.sampled_from(["self", *["guardian"] * 5])),
    )


@settings(max_examples=400, deadline=None)
@given(data=st.data(), case=cases(), policies=policy_sets())
def test_no_summary_holds_a_field_outside_policy_and_consent(
    data: st.DataObject, case: dict[str, Any], policies: PolicySet
) -> None:
    doc_type = data.draw(st.sampled_from(["return_notice", "case_handoff"]))
    current = policies.current(doc_type)
    assert current is not None
    # Mostly a purpose and kind the policy has a rule for; sometimes anything.
    rule_pairs = [(r.purpose, k) for r in current.rules for k in sorted(r.recipient_kinds)]
    if data.draw(st.integers(0, 4)) > 0:
        purpose, kind = data.draw(st.sampled_from(rule_pairs))
    else:
        purpose, kind = data.draw(st.tuples(st.sampled_from(PURPOSES), st.sampled_from(KINDS)))
    recipient = RecipientRef(data.draw(st.sampled_from(["MX", "HN"])), "authority-x", kind)
    exception = data.draw(st.sampled_from([None, None, None, "x" * 60]))
    draft = data.draw(consent_drafts(case["case_ref"]))
    if data.draw(st.integers(0, 4)) > 0:  # mostly a consent that covers the request
        draft["purposes"] = sorted({*draft["purposes"], purpose})
        draft["recipients"].append({"country": recipient.node})
    consent = new_consent(draft, consent_id=str(uuid.uuid4()), now=NOW)
    plan = plan_disclosure(
        case=case,
        doc_type=doc_type,
        purpose=purpose,
        recipient=recipient,
        sender_country="GT",
        policies=policies,
        consents=[consent],
        now=NOW,
        vital_interest=VitalInterest(str(uuid.uuid4()), exception) if exception else None,
    )
    summary = plan.summary
    event(f"refusal: {plan.refusal.reason}" if plan.refusal else f"sent via {plan.legal_basis}")
    assert summary.sent_fields == tuple(field_paths(summary.document))
    leaves = set(field_paths(case))
    assert set(summary.sent_fields) <= leaves
    assert not set(summary.sent_fields) & set(summary.withheld)
    if not plan.ok:
        assert plan.terms is None
    if plan.rule is None or plan.legal_basis is None:
        assert summary.document == {}, "no policy rule: nothing can go"
        return
    rule = plan.rule
    assert rule.policy == current
    # Whether it may go or a safeguard stops it, the summary itself never holds more.
    for path in summary.sent_fields:
        # Independently of the planner: some pattern of the policy rule allows it...
        assert any(path_matches(p, path) for p in rule.rule.fields), path
        # ...no agreement between the two states removes it...
        for _agreement, narrowings in rule.narrowed_by:
            for narrowing in narrowings:
                assert not any(path_matches(p, path) for p in narrowing.exclude_fields), path
                if narrowing.fields is not None:
                    assert any(path_matches(p, path) for p in narrowing.fields), path
        # ...and, when she consented, its category is one she agreed to.
        if plan.legal_basis == "consent":
            assert current.category_of(path) in consent.scope.categories, path
    # Every leaf of the case is sent or withheld with a reason.
    non_empty = {p for p in leaves if p not in summary.sent_fields}
    assert non_empty <= set(summary.withheld)
    if not plan.ok:
        return
    schemas.validate(schemas.DOCUMENT_SCHEMAS[doc_type], summary.document)

    # The recipient's own check (same policy files) accepts exactly these fields.
    message = Message(
        message_id=str(uuid.uuid4()),
        sender=Party("GT", CONSULATE),
        recipient=Party(recipient.node, recipient.authority),
        doc_type=doc_type,
        schema=schemas.DOCUMENT_SCHEMAS[doc_type],
        issued_at=int(NOW.timestamp()),
        expires_at=int((NOW + dt.timedelta(hours=1)).timestamp()),
        body=summary.document,
        terms=plan.terms,
    )
    accepted = check_terms(message, policies=policies, recipient_kind=recipient.kind)
    assert accepted is not None and accepted.fields == summary.sent_fields

    # More consent never sends less: with every category, the summary is a superset.
    if plan.legal_basis == "consent":
        wider = new_consent(
            {
                **data.draw(consent_drafts(case["case_ref"])),
                "categories": list(CATEGORIES),
                "purposes": [purpose],
                "recipients": [{"country": recipient.node}],
                "grantor": {"role": "guardian"},
            },
            consent_id=str(uuid.uuid4()),
            now=NOW,
        )
        more = plan_disclosure(
            case=case,
            doc_type=doc_type,
            purpose=purpose,
            recipient=recipient,
            sender_country="GT",
            policies=policies,
            consents=[wider],
            now=NOW,
        )
        assert set(summary.sent_fields) <= set(more.summary.sent_fields)


@pytest.fixture
async def federation(
    tmp_path: Path, database_factory: DatabaseFactory
) -> AsyncIterator[dict[str, LiveNode]]:
    async with live_federation(tmp_path, database_factory, CASE_SPECS) as nodes:
        yield nodes


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), case=cases())
async def test_the_preview_is_exactly_what_is_sealed_and_sent(
    federation: dict[str, LiveNode], data: st.DataObject, case: dict[str, Any]
) -> None:
    gt = federation["GT"]
    await create_case(gt.ctx, authority=CONSULATE, document=case)
    doc_type, purpose, node, authority = data.draw(
        st.sampled_from(
            [
                ("case_handoff", "protection_referral", "MX", "mx-comar"),
                ("case_handoff", "protection_referral", "MX", "mx-inm"),
                ("case_handoff", "protection_referral", "HN", "hn-protection"),
                ("return_notice", "reception_on_return", "HN", "hn-reception"),
            ]
        )
    )
    draft = data.draw(consent_drafts(case["case_ref"]))
    draft["valid_until"] = rfc3339(gt.ctx.now() + dt.timedelta(days=30))
    if data.draw(st.integers(0, 3)) > 0:  # mostly a consent that covers the request
        draft["purposes"] = sorted({*draft["purposes"], purpose})
        draft["recipients"].append({"country": node})
        dropped = data.draw(st.lists(st.sampled_from(CATEGORIES), max_size=2))
        draft["categories"] = sorted(set(CATEGORIES) - set(dropped)) or ["case_reference"]
    await record_consent(gt.ctx, draft)
    request = {
        "case": case["case_ref"],
        "doc_type": doc_type,
        "purpose": purpose,
        "recipient_node": node,
        "recipient_authority": authority,
    }
    preview = await preview_disclosure(gt.ctx, **request)
    event(f"refusal: {preview.plan.refusal.reason}" if preview.plan.refusal else "sent")
    if not preview.ok:
        with pytest.raises(DisclosureRefused) as refused:
            await disclose(gt.ctx, **request)
        assert preview.plan.refusal is not None
        assert refused.value.reason == preview.plan.refusal.reason
        return
    sent = await send_preview(gt.ctx, preview)
    async with gt.ctx.sessions() as session:
        row = await session.get(Disclosure, sent.message_id)
    assert row is not None
    recipient = federation[node]
    opened = open_envelope(
        row.envelope.encode("ascii"),
        own_node=node,
        own_encryption_keys=recipient.ctx.keys.encryption,
        directory=recipient.ctx.directory,
        now=recipient.ctx.now(),
    )
    assert opened.message.body == dict(preview.document)
    assert opened.message.terms == dict(preview.plan.terms or {})
    assert row.fields == list(preview.sent_fields)
    assert not set(row.fields) & set(preview.withheld)
