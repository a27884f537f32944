"""The critical route's schema examples (docs/examples/critical-route/examples.json).

Every entry of the manifest is checked against its schema with the verdict
it states — the valid ones (the worked example's cases and consents, one
document of each route type as the planner produced it) and the invalid
ones, each with exactly one defect — through both validators of
node.core.schemas: the compiled fast path may only ever be stricter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node.core import schemas
from node.rules.policy import PolicyError, parse_policy

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples" / "critical-route"
MANIFEST: list[dict[str, Any]] = json.loads((EXAMPLES / "examples.json").read_text())["examples"]


def _document(entry: dict[str, Any]) -> Any:
    return json.loads((EXAMPLES / entry["file"]).read_text(encoding="utf-8"))


def test_the_manifest_names_every_example_file_once() -> None:
    listed = sorted(entry["file"] for entry in MANIFEST)
    on_disk = sorted(
        str(p.relative_to(EXAMPLES))
        for p in EXAMPLES.rglob("*.json")
        if p.name not in ("examples.json", "expected-previews.json")
    )
    assert listed == on_disk
    assert len(MANIFEST) == 31


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: e["file"])
def test_each_example_has_the_verdict_its_manifest_states(entry: dict[str, Any]) -> None:
    document = _document(entry)
    assert schemas.is_valid(entry["schema"], document) is entry["valid"], entry["note"]
    assert schemas.validator(entry["schema"]).is_valid(document) is entry["valid"]
    if not entry["valid"]:
        # What the fast path refuses, the reference validator refuses too, by pointer.
        assert not schemas._fast_accepts(entry["schema"], document)
        with pytest.raises(Exception, match="does not conform"):
            schemas.validate(entry["schema"], document)


def test_a_policy_rule_for_the_police_cannot_be_written() -> None:
    entry = next(e for e in MANIFEST if e["file"].endswith("policy-rule-for-police.json"))
    with pytest.raises(PolicyError) as refused:
        parse_policy(_document(entry))
    assert refused.value.reason == "policy_invalid"
