"""Disclosure policies and bilateral agreements: which fields may go, to whom, for how long.

Pure model and rules over parsed documents; ``load_policy_set`` is the only
function that reads files. A policy (``policies/*.json``, schema
``schemas/policy``) says, for one document type, which data category each
field belongs to, and per purpose and kind of recipient authority the allowed
fields, the retention at the recipient and the handling rules. A bilateral
agreement (``policies/bilateral/*.json``) between two states narrows matching
rules for disclosures between them: fields are intersected and retention
takes the minimum, so by construction it can never widen a policy.

A document's identity is (id, version) plus the SHA-256 of its RFC 8785
canonical JSON; each disclosure carries all three and the recipient checks
them against its own copy (the policy files are shipped federation-wide).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from node.core import schemas
from node.core.canonical import canonical_json, sha256_hex
from node.core.errors import PuenteError, SchemaError

POLICY_ROOT = Path(__file__).resolve().parents[2] / "policies"


class PolicyError(PuenteError):
    """A policy or agreement file is invalid, or no policy covers a request."""

    reason = "policy_invalid"
    http_status = 422


def path_matches(pattern: str, path: str) -> bool:
    """Whether a field pattern allows a field path: the field itself or anything beneath it.

    ``arrival`` matches ``arrival.date``; ``accompanying_children`` matches
    ``accompanying_children[].age``; ``person.given_names`` does not match
    ``person.given_names_extra``.
    """
    return path == pattern or path.startswith((pattern + ".", pattern + "[]"))


def document_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the RFC 8785 canonical JSON of a policy or agreement."""
    return sha256_hex(canonical_json(document))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class DocumentRef:
    """How a disclosure names a policy or agreement: id, version and digest."""

    id: str
    version: str
    sha256: str

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class Handling:
    """Rules that travel with the data to the recipient."""

    onward_sharing: bool
    delete_after_retention: bool


@dataclass(frozen=True)
class Rule:
    """What one purpose, for some kinds of recipient, may receive, and for how long."""

    purpose: str
    recipient_kinds: frozenset[str]
    fields: tuple[str, ...]
    retention: dt.timedelta
    handling: Handling

    def allows(self, path: str) -> bool:
        return any(path_matches(p, path) for p in self.fields)


@dataclass(frozen=True)
class Policy:
    """A parsed, validated policy document."""

    policy_id: str
    version: str
    doc_type: str
    categories: Mapping[str, tuple[str, ...]]
    rules: tuple[Rule, ...]
    sha256: str
    document: Mapping[str, Any] = field(repr=False)

    @property
    def ref(self) -> DocumentRef:
        return DocumentRef(self.policy_id, self.version, self.sha256)

    def rule_for(self, purpose: str, recipient_kind: str) -> Rule | None:
        for rule in self.rules:
            if rule.purpose == purpose and recipient_kind in rule.recipient_kinds:
                return rule
        return None

    def category_of(self, path: str) -> str | None:
        """The category of the longest pattern matching ``path``, or None."""
        best: tuple[int, str] | None = None
        for category, patterns in self.categories.items():
            for pattern in patterns:
                if path_matches(pattern, path) and (best is None or len(pattern) > best[0]):
                    best = (len(pattern), category)
        return best[1] if best else None


@dataclass(frozen=True)
class Narrowing:
    """One restriction an agreement puts on matching policy rules."""

    doc_type: str
    purpose: str | None
    recipient_kinds: frozenset[str] | None
    fields: tuple[str, ...] | None
    exclude_fields: tuple[str, ...]
    retention: dt.timedelta | None

    def applies(self, doc_type: str, purpose: str, recipient_kind: str) -> bool:
        return (
            self.doc_type == doc_type
            and self.purpose in (None, purpose)
            and (self.recipient_kinds is None or recipient_kind in self.recipient_kinds)
        )

    def removes(self, path: str) -> bool:
        if any(path_matches(p, path) for p in self.exclude_fields):
            return True
        return self.fields is not None and not any(path_matches(p, path) for p in self.fields)


@dataclass(frozen=True)
class Agreement:
    """A parsed bilateral agreement between two member states."""

    agreement_id: str
    version: str
    parties: frozenset[str]
    narrowings: tuple[Narrowing, ...]
    sha256: str
    document: Mapping[str, Any] = field(repr=False)

    @property
    def ref(self) -> DocumentRef:
        return DocumentRef(self.agreement_id, self.version, self.sha256)

    def binds(self, country_a: str, country_b: str) -> bool:
        return self.parties == frozenset({country_a, country_b})


@dataclass(frozen=True)
class EffectiveRule:
    """A policy rule after every applicable bilateral narrowing: what may actually go."""

    policy: Policy
    rule: Rule
    narrowed_by: tuple[tuple[Agreement, tuple[Narrowing, ...]], ...]
    retention: dt.timedelta

    @property
    def agreements(self) -> tuple[Agreement, ...]:
        return tuple(agreement for agreement, _ in self.narrowed_by)

    def policy_allows(self, path: str) -> bool:
        return self.rule.allows(path)

    def agreement_removing(self, path: str) -> Agreement | None:
        """The first agreement that removes a field the policy allows, or None."""
        for agreement, narrowings in self.narrowed_by:
            if any(n.removes(path) for n in narrowings):
                return agreement
        return None

    def allows(self, path: str) -> bool:
        return self.policy_allows(path) and self.agreement_removing(path) is None


def effective_rule(
    policy: Policy,
    *,
    purpose: str,
    recipient_kind: str,
    agreements: Iterable[Agreement],
    sender_country: str,
    recipient_country: str,
) -> EffectiveRule:
    """The policy's rule for this purpose and recipient, narrowed by the two states' agreements.

    Raises :class:`PolicyError` ``purpose_not_in_policy`` when the policy has no rule for it.
    """
    rule = policy.rule_for(purpose, recipient_kind)
    if rule is None:
        raise PolicyError(
            "purpose_not_in_policy",
            f"{policy.policy_id} {policy.version} allows no {purpose} to a {recipient_kind}",
        )
    applied: list[tuple[Agreement, tuple[Narrowing, ...]]] = []
    retention = rule.retention
    for agreement in agreements:
        if not agreement.binds(sender_country, recipient_country):
            continue
        matching = tuple(
            n for n in agreement.narrowings if n.applies(policy.doc_type, purpose, recipient_kind)
        )
        if not matching:
            continue
        applied.append((agreement, matching))
        for narrowing in matching:
            if narrowing.retention is not None:
                retention = min(retention, narrowing.retention)
    return EffectiveRule(policy, rule, tuple(applied), retention)


def _document_fields(doc_type: str) -> frozenset[str]:
    """The top-level members the document type's schema allows."""
    schema = schemas.schema_document(schemas.DOCUMENT_SCHEMAS[doc_type])
    return frozenset(schema.get("properties", {}))


def parse_policy(document: Mapping[str, Any]) -> Policy:
    """Validate and parse a policy document; raises :class:`PolicyError`."""
    try:
        schemas.validate(schemas.POLICY, document, reason="policy_invalid")
    except SchemaError as exc:
        raise PolicyError("policy_invalid", exc.detail) from exc
    categories = {name: tuple(patterns) for name, patterns in document["categories"].items()}
    roots = _document_fields(document["doc_type"])
    rules = []
    seen: set[tuple[str, str]] = set()
    for raw in document["rules"]:
        for kind in raw["recipient_kinds"]:
            if (raw["purpose"], kind) in seen:
                raise PolicyError(
                    "policy_invalid", f"two rules for purpose {raw['purpose']} and {kind}"
                )
            seen.add((raw["purpose"], kind))
        for pattern in raw["fields"]:
            root = pattern.split(".")[0].removesuffix("[]")
            if root not in roots:
                raise PolicyError(
                    "policy_invalid", f"{document['doc_type']} has no field {root} ({pattern})"
                )
            if not any(
                path_matches(c, pattern) or path_matches(pattern, c)
                for patterns in categories.values()
                for c in patterns
            ):
                raise PolicyError("policy_invalid", f"field {pattern} belongs to no category")
        rules.append(
            Rule(
                purpose=raw["purpose"],
                recipient_kinds=frozenset(raw["recipient_kinds"]),
                fields=tuple(raw["fields"]),
                retention=dt.timedelta(days=raw["retention_days"]),
                handling=Handling(
                    onward_sharing=raw["handling"]["onward_sharing"],
                    delete_after_retention=raw["handling"]["delete_after_retention"],
                ),
            )
        )
    return Policy(
        policy_id=document["policy_id"],
        version=document["version"],
        doc_type=document["doc_type"],
        categories=categories,
        rules=tuple(rules),
        sha256=document_digest(document),
        document=document,
    )


def parse_agreement(document: Mapping[str, Any]) -> Agreement:
    """Validate and parse a bilateral agreement; raises :class:`PolicyError`."""
    try:
        schemas.validate(schemas.BILATERAL_AGREEMENT, document, reason="agreement_invalid")
    except SchemaError as exc:
        raise PolicyError("agreement_invalid", exc.detail) from exc
    narrowings = tuple(
        Narrowing(
            doc_type=raw["doc_type"],
            purpose=raw.get("purpose"),
            recipient_kinds=frozenset(raw["recipient_kinds"]) if "recipient_kinds" in raw else None,
            fields=tuple(raw["fields"]) if "fields" in raw else None,
            exclude_fields=tuple(raw.get("exclude_fields", ())),
            retention=(
                dt.timedelta(days=raw["retention_days"]) if "retention_days" in raw else None
            ),
        )
        for raw in document["narrowings"]
    )
    return Agreement(
        agreement_id=document["agreement_id"],
        version=document["version"],
        parties=frozenset(document["parties"]),
        narrowings=narrowings,
        sha256=document_digest(document),
        document=document,
    )


@dataclass(frozen=True)
class PolicySet:
    """Every policy version and agreement a node knows."""

    policies: Mapping[tuple[str, str], Policy]
    agreements: tuple[Agreement, ...]

    def current(self, doc_type: str) -> Policy | None:
        """The newest policy version for a document type."""
        candidates = [p for p in self.policies.values() if p.doc_type == doc_type]
        if not candidates:
            return None
        return max(candidates, key=lambda p: (_version_key(p.version), p.policy_id))

    def get(self, policy_id: str, version: str) -> Policy | None:
        return self.policies.get((policy_id, version))

    def agreement(self, agreement_id: str, version: str) -> Agreement | None:
        for agreement in self.agreements:
            if (agreement.agreement_id, agreement.version) == (agreement_id, version):
                return agreement
        return None

    def between(self, country_a: str, country_b: str) -> tuple[Agreement, ...]:
        return tuple(a for a in self.agreements if a.binds(country_a, country_b))


def build_policy_set(
    policies: Sequence[Mapping[str, Any]], agreements: Sequence[Mapping[str, Any]] = ()
) -> PolicySet:
    """A policy set from parsed JSON documents (refuses duplicate id/version)."""
    by_key: dict[tuple[str, str], Policy] = {}
    for document in policies:
        policy = parse_policy(document)
        key = (policy.policy_id, policy.version)
        if key in by_key:
            raise PolicyError("policy_invalid", f"policy {key[0]} {key[1]} defined twice")
        by_key[key] = policy
    parsed = tuple(parse_agreement(a) for a in agreements)
    keys = [(a.agreement_id, a.version) for a in parsed]
    if len(set(keys)) != len(keys):
        raise PolicyError("agreement_invalid", "an agreement id and version is defined twice")
    return PolicySet(policies=by_key, agreements=parsed)


def _read(path: Path) -> Mapping[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PolicyError("policy_invalid", f"{path.name}: not readable JSON") from exc
    if not isinstance(document, dict):
        raise PolicyError("policy_invalid", f"{path.name}: not a JSON object")
    return document


def load_policy_set(root: Path) -> PolicySet:
    """Read ``root/*.json`` (policies) and ``root/bilateral/*.json`` (agreements)."""
    return build_policy_set(
        [_read(p) for p in sorted(root.glob("*.json"))],
        [_read(p) for p in sorted((root / "bilateral").glob("*.json"))],
    )


@cache
def default_policy_set() -> PolicySet:
    """The policies shipped with Puente (``policies/``), read once per process."""
    return load_policy_set(POLICY_ROOT)
