"""Every schema is valid JSON Schema 2020-12 with a versioned id; every shipped policy validates."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from node.core import schemas
from node.demo.synthetic import return_notice
from node.demo.synthetic_cases import consent_draft, interviewed_case
from node.intake.terms import CASE_SUMMARIES
from node.rules.consent import CATEGORIES, PURPOSES
from node.rules.interview import INDICATOR_TOPICS, TOPICS, VULNERABILITY_TOPICS
from node.rules.policy import POLICY_ROOT

SCHEMA_FILES = sorted(schemas.SCHEMA_ROOT.glob("*/*.schema.json"))
POLICY_FILES = sorted(POLICY_ROOT.glob("*.json"))
AGREEMENT_FILES = sorted((POLICY_ROOT / "bilateral").glob("*.json"))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.parent.name)
def test_every_schema_checks_against_the_2020_12_metaschema(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    # A versioned id that names the file it lives in: schemas/<name>/<version>.schema.json.
    match = re.fullmatch(r"https://puente\.int/schemas/([a-z-]+)/(\d+\.\d+)", schema["$id"])
    assert match is not None, schema["$id"]
    assert match[1] == path.parent.name.replace("_", "-")
    assert path.name == f"{match[2]}.schema.json"
    # Every reference resolves (the validator compiles them lazily; force it).
    schemas.validator(schema["$id"]).is_valid({})


def test_every_document_type_has_a_schema() -> None:
    for schema_id in schemas.DOCUMENT_SCHEMAS.values():
        assert schema_id in schemas.schema_ids()


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_shipped_policies_validate(path: Path) -> None:
    schemas.validate(schemas.POLICY, json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", AGREEMENT_FILES, ids=lambda p: p.name)
def test_shipped_agreements_validate(path: Path) -> None:
    schemas.validate(schemas.BILATERAL_AGREEMENT, json.loads(path.read_text(encoding="utf-8")))


def test_shipped_policies_cover_every_summary() -> None:
    doc_types = {json.loads(p.read_text())["doc_type"] for p in POLICY_FILES}
    assert doc_types == {
        "return_notice",
        "case_handoff",
        # The critical route's documents (docs/critical-route.md).
        "identification_record",
        "risk_assessment_summary",
        "protection_handoff",
        "resettlement_referral",
    }
    assert doc_types == CASE_SUMMARIES
    agreements = {json.loads(p.read_text())["agreement_id"] for p in AGREEMENT_FILES}
    assert agreements == {"bilateral.gt-mx", "bilateral.gt-mx.critical-route"}


def test_the_interview_vocabulary_is_one_in_code_and_schema() -> None:
    common = schemas.schema_document("https://puente.int/schemas/case-common/1.0")["$defs"]
    interview = common["interview"]["properties"]
    assert set(INDICATOR_TOPICS) == set(interview["identification_indicators"]["items"]["enum"])
    assert set(VULNERABILITY_TOPICS) == set(interview["vulnerability_conditions"]["items"]["enum"])
    assert set(INDICATOR_TOPICS.values()) | set(VULNERABILITY_TOPICS.values()) <= set(TOPICS)
    assert "immediate_needs" in TOPICS and "identity" in TOPICS
    assert set(PURPOSES) == {
        "reception_on_return",
        "protection_referral",
        "consular_assistance",
        "case_continuity",
    }
    assert "case_reference" in CATEGORIES


def test_synthetic_documents_are_schema_valid() -> None:
    import random

    now = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    schemas.validate(
        schemas.CASE,
        interviewed_case(case_ref="GT-TEST-000900", node="GT", authority="gt-c", asked_at=now),
    )
    schemas.validate(
        schemas.CONSENT_DRAFT,
        consent_draft(case_ref="GT-TEST-000900", node="GT", authority="gt-c", valid_until=now),
    )
    notice = return_notice(random.Random(1), destination="GT", today=now.date(), serial=1)
    schemas.validate(schemas.RETURN_NOTICE, notice)
