"""The JSON Schemas in ``schemas/``: loading, cross-references, validation.

Every schema is JSON Schema 2020-12 with a versioned ``$id``. Validation errors
name the JSON pointer and the failed keyword, never the offending value: a
value may be case content, and refusals end up in logs and audit entries.

Validation takes a fast path first: ``jsonschema-rs`` (compiled) answers
"valid?", and only an instance it does not accept goes to the reference
``jsonschema`` validator, which has the last word and words the refusal.
``jsonschema-rs`` is given ``jsonschema``'s own format checkers, so the fast
path can only be stricter: what it accepts, ``jsonschema`` accepts too
(tests/test_schemas_fastpath.py), and every verdict and refusal is
``jsonschema``'s. Schema validation was most of the cost of opening an
envelope (BENCHMARKS.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache, partial
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from node.core.errors import SchemaError

SCHEMA_ROOT = Path(__file__).resolve().parents[2] / "schemas"

DIRECTORY = "https://puente.int/schemas/directory/1.0"
TRUST_ROOT = "https://puente.int/schemas/trust-root/1.0"
MESSAGE = "https://puente.int/schemas/message/1.0"
RECEIPT = "https://puente.int/schemas/receipt/1.0"
RETURN_NOTICE = "https://puente.int/schemas/return-notice/1.0"
CASE = "https://puente.int/schemas/case/1.0"
CASE_HANDOFF = "https://puente.int/schemas/case-handoff/1.0"
CONSENT = "https://puente.int/schemas/consent/1.0"
CONSENT_DRAFT = "https://puente.int/schemas/consent-draft/1.0"
POLICY = "https://puente.int/schemas/policy/1.0"
BILATERAL_AGREEMENT = "https://puente.int/schemas/bilateral-agreement/1.0"
DISCLOSURE_TERMS = "https://puente.int/schemas/disclosure-terms/1.0"
CONSENT_WITHDRAWAL = "https://puente.int/schemas/consent-withdrawal/1.0"
ERASURE_RECEIPT = "https://puente.int/schemas/erasure-receipt/1.0"
CRITICAL_ROUTE = "https://puente.int/schemas/critical-route/1.0"
IDENTIFICATION_RECORD = "https://puente.int/schemas/identification-record/1.0"
RISK_ASSESSMENT_SUMMARY = "https://puente.int/schemas/risk-assessment-summary/1.0"
PROTECTION_HANDOFF = "https://puente.int/schemas/protection-handoff/1.0"
RESETTLEMENT_REFERRAL = "https://puente.int/schemas/resettlement-referral/1.0"

# Document types a node accepts, and the schema each is validated against.
DOCUMENT_SCHEMAS: Mapping[str, str] = {
    "return_notice": RETURN_NOTICE,
    "case_handoff": CASE_HANDOFF,
    # The regional critical route's documents (docs/critical-route.md).
    "identification_record": IDENTIFICATION_RECORD,
    "risk_assessment_summary": RISK_ASSESSMENT_SUMMARY,
    "protection_handoff": PROTECTION_HANDOFF,
    "resettlement_referral": RESETTLEMENT_REFERRAL,
    "consent_withdrawal": CONSENT_WITHDRAWAL,
    "erasure_receipt": ERASURE_RECEIPT,
}

MAX_REPORTED_ERRORS = 10


@cache
def _all_schemas() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(SCHEMA_ROOT.glob("*/*.schema.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        found[schema["$id"]] = schema
    return found


@cache
def _registry() -> Registry[Any]:
    resources = [(sid, Resource.from_contents(s)) for sid, s in _all_schemas().items()]
    return Registry().with_resources(resources)


@cache
def validator(schema_id: str) -> Draft202012Validator:
    """A cached validator (with format checks) for one schema id."""
    try:
        schema = _all_schemas()[schema_id]
    except KeyError as exc:
        raise SchemaError("unknown_schema", f"no schema with id {schema_id}") from exc
    return Draft202012Validator(
        schema,
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


@cache
def _fast_registry() -> jsonschema_rs.Registry:
    return jsonschema_rs.Registry(list(_all_schemas().items()))


@cache
def _fast_validator(schema_id: str) -> jsonschema_rs.Validator:
    """The compiled validator for one schema id, with ``jsonschema``'s format checkers."""
    validator(schema_id)  # the same refusal for an unknown schema id
    checker = Draft202012Validator.FORMAT_CHECKER
    return jsonschema_rs.validator_for(
        _all_schemas()[schema_id],
        registry=_fast_registry(),
        validate_formats=True,
        # The same format semantics as the reference validator (jsonschema-rs's
        # own checkers differ at the edges, e.g. which UUID spellings pass).
        formats={name: partial(checker.conforms, format=name) for name in checker.checkers},
    )


def _fast_accepts(schema_id: str, instance: Any) -> bool:
    """True if the compiled validator accepts ``instance``; False means "ask jsonschema"."""
    try:
        return _fast_validator(schema_id).is_valid(instance)
    except ValueError:  # a value JSON has no type for (a tuple, a mapping proxy, ...)
        return False


def is_valid(schema_id: str, instance: Any) -> bool:
    """Whether ``instance`` conforms to the schema (the verdict :func:`validate` gives)."""
    if _fast_accepts(schema_id, instance):
        return True
    return validator(schema_id).is_valid(instance)


def schema_ids() -> list[str]:
    """Every schema id shipped in ``schemas/``."""
    return sorted(_all_schemas())


def schema_document(schema_id: str) -> dict[str, Any]:
    """The schema document itself."""
    return _all_schemas()[schema_id]


def validate(schema_id: str, instance: Any, *, reason: str = "schema_invalid") -> None:
    """Raise :class:`SchemaError` listing where and why ``instance`` fails."""
    if _fast_accepts(schema_id, instance):
        return
    errors = sorted(validator(schema_id).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        where = [
            f"{'/' + '/'.join(str(p) for p in e.absolute_path)} ({e.validator})"
            for e in errors[:MAX_REPORTED_ERRORS]
        ]
        raise SchemaError(reason, f"does not conform to {schema_id}: " + "; ".join(where))
