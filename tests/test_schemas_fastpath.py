"""The compiled fast path of node.core.schemas never accepts what jsonschema refuses.

``schemas.validate`` asks jsonschema-rs first and jsonschema only when the
fast path does not accept. That is behaviour-preserving only if the fast path
is never looser: checked here on every shipped example and on many mutations
of them (hypothesis), including the format and pattern edges where the two
libraries are known to differ.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.workload import ROUTES, planned_message
from node.core import schemas
from node.core.errors import SchemaError
from node.demo.synthetic import return_notice
from node.demo.synthetic_cases import consent_draft, interviewed_case
from node.rules.policy import POLICY_ROOT

NOW = dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)


def _examples() -> list[tuple[str, dict[str, Any]]]:
    import random

    case = interviewed_case(
        case_ref="GT-FAST-2026-000001", node="GT", authority="gt-c", asked_at=NOW
    )
    draft = consent_draft(
        case_ref="GT-FAST-2026-000001",
        node="GT",
        authority="gt-c",
        valid_until=NOW + dt.timedelta(days=30),
    )
    notice = return_notice(random.Random(7), destination="GT", today=NOW.date(), serial=1)
    planned = {name: planned_message(route, NOW) for name, route in ROUTES.items()}
    policy = json.loads((POLICY_ROOT / "case_handoff.json").read_text(encoding="utf-8"))
    return [
        (schemas.CASE, case),
        (schemas.CONSENT_DRAFT, draft),
        (schemas.RETURN_NOTICE, notice),
        (schemas.POLICY, policy),
        (schemas.RETURN_NOTICE, planned["return_notice"].body),
        (schemas.CASE_HANDOFF, planned["case_handoff"].body),
        (schemas.DISCLOSURE_TERMS, planned["case_handoff"].terms),
    ]


EXAMPLES = _examples()
TERMS = EXAMPLES[-1][1]


def _reference_ok(schema_id: str, instance: Any) -> bool:
    return not any(schemas.validator(schema_id).iter_errors(instance))


def _verdicts(schema_id: str, instance: Any) -> tuple[bool, str | None]:
    try:
        schemas.validate(schema_id, instance)
    except SchemaError as refusal:
        return False, refusal.detail
    return True, None


@pytest.mark.parametrize(("schema_id", "document"), EXAMPLES, ids=lambda v: str(v)[-20:])
def test_shipped_examples_are_accepted_by_both(schema_id: str, document: dict[str, Any]) -> None:
    assert schemas._fast_accepts(schema_id, document)
    assert _reference_ok(schema_id, document)


# Values that stress the places the two libraries disagree on: format checkers
# (UUID spellings, lower-case RFC 3339, dates), regex anchors before a newline,
# numbers that are integers or not, and types JSON does not have.
AWKWARD: st.SearchStrategy[Any] = st.sampled_from(
    [
        "12345678123412341234123456789abc",
        "{12345678-1234-1234-1234-123456789abc}",
        "urn:uuid:12345678-1234-1234-1234-123456789abc",
        "12345678-1234-1234-1234-123456789ABC",
        "2026-12-02t10:00:00z",
        "2026-12-02T10:00:00",
        "2026-12-02T25:00:00Z",
        "2026-02-30",
        "20261202",
        "2026-12-02\n",
        "GT\n",
        "es\n",
        "MX-INM-2026-000001\n",
        "",
        "x" * 300,
        1.0,
        2.5,
        -1,
        2**64,
        True,
        None,
        [],
        {},
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | AWKWARD,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    schema_id, original = draw(st.sampled_from(EXAMPLES))
    document: Any = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        else:
            parent.append(draw(JSON_VALUES))
    return schema_id, document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_the_fast_path_is_never_looser_and_validate_is_jsonschemas(
    case: tuple[str, Any],
) -> None:
    schema_id, document = case
    reference = _reference_ok(schema_id, document)
    if schemas._fast_accepts(schema_id, document):
        assert reference, "jsonschema-rs accepted what jsonschema refuses"
    ok, detail = _verdicts(schema_id, document)
    assert ok == reference
    assert schemas.is_valid(schema_id, document) == reference
    if not ok:
        assert detail is not None and detail.startswith(f"does not conform to {schema_id}: ")


@pytest.mark.parametrize(
    "spelling",
    [
        "12345678123412341234123456789abc",
        "{12345678-1234-1234-1234-123456789abc}",
        "urn:uuid:12345678-1234-1234-1234-123456789abc",
    ],
)
def test_uuid_spellings_jsonschema_refuses_are_refused(spelling: str) -> None:
    # jsonschema-rs's own uuid check accepts some of these; the node must not.
    terms = copy.deepcopy(TERMS)
    terms["consent"]["id"] = spelling
    assert _verdicts(schemas.DISCLOSURE_TERMS, terms)[0] is False
    assert not _reference_ok(schemas.DISCLOSURE_TERMS, terms)


def test_values_json_has_no_type_for_fall_back_to_jsonschema() -> None:
    schema_id, document = EXAMPLES[0]
    proxy = MappingProxyType(document)
    assert not schemas._fast_accepts(schema_id, proxy)
    # jsonschema's word, whatever it is (it does not count a mapping proxy as an object).
    assert _verdicts(schema_id, proxy)[0] == _reference_ok(schema_id, proxy)


def test_an_unknown_schema_is_the_same_refusal() -> None:
    with pytest.raises(SchemaError) as refused:
        schemas.validate("https://puente.int/schemas/nothing/1.0", {})
    assert refused.value.reason == "unknown_schema"
