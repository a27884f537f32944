"""Minimization: the case projected onto exactly what the policy and her consent allow.

Pure functions. Every leaf field of the case is either sent or withheld with
one reason code, so a caseworker's preview can say why each withheld field
stays home:

``not_in_policy``            the policy for this purpose and recipient does not need it
``narrowed_by_agreement``    a bilateral agreement between the two states removes it
``uncategorised``            no data category covers it, so no consent can
``category_not_consented``   she did not consent to share its data category

and a safeguard may withhold more of what would be sent (:func:`withhold`;
``withheld_for_safety``, node.rules.critical_route).

The summary keeps the case's field paths (docs/consent-and-policy.md), so
the recipient checks the same paths against the same policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node.rules.policy import EffectiveRule, path_matches
from node.wire.fields import field_paths

NOT_IN_POLICY = "not_in_policy"
NARROWED_BY_AGREEMENT = "narrowed_by_agreement"
UNCATEGORISED = "uncategorised"
CATEGORY_NOT_CONSENTED = "category_not_consented"

_MISSING = object()


@dataclass(frozen=True)
class Summary:
    """What would leave the node: the document, its field paths, and what stays and why."""

    document: Mapping[str, Any]
    sent_fields: tuple[str, ...]
    withheld: Mapping[str, str]

    def categories(self, rule: EffectiveRule) -> frozenset[str]:
        """The data categories the sent fields belong to."""
        return frozenset(
            c for c in (rule.policy.category_of(p) for p in self.sent_fields) if c is not None
        )


def withheld_reason(path: str, rule: EffectiveRule, consented: frozenset[str] | None) -> str | None:
    """Why ``path`` may not go, or None when policy, agreements and consent all allow it.

    ``consented`` is None for a disclosure without consent (the life-in-danger
    exception): the policy and agreements still apply.
    """
    if not rule.policy_allows(path):
        return NOT_IN_POLICY
    if rule.agreement_removing(path) is not None:
        return NARROWED_BY_AGREEMENT
    category = rule.policy.category_of(path)
    if category is None:
        return UNCATEGORISED
    if consented is not None and category not in consented:
        return CATEGORY_NOT_CONSENTED
    return None


def minimize(
    case: Mapping[str, Any], rule: EffectiveRule, consented: frozenset[str] | None
) -> Summary:
    """Project ``case`` onto the fields ``rule`` ∩ ``consented`` allow."""
    withheld: dict[str, str] = {}
    for path in field_paths(case):
        reason = withheld_reason(path, rule, consented)
        if reason is not None:
            withheld[path] = reason
    pruned = _prune(case, "", lambda p: p not in withheld)
    document: dict[str, Any] = pruned if isinstance(pruned, dict) else {}
    return Summary(document=document, sent_fields=tuple(field_paths(document)), withheld=withheld)


def withhold(summary: Summary, patterns: Sequence[str], reason: str) -> Summary:
    """The summary with every sent field under ``patterns`` withheld for ``reason``.

    A field already withheld keeps its first reason.
    """

    def hidden(path: str) -> bool:
        return any(path_matches(pattern, path) for pattern in patterns)

    moved = {path: reason for path in summary.sent_fields if hidden(path)}
    if not moved:
        return summary
    pruned = _prune(summary.document, "", lambda p: not hidden(p))
    document: dict[str, Any] = pruned if isinstance(pruned, dict) else {}
    return Summary(
        document=document,
        sent_fields=tuple(field_paths(document)),
        withheld={**summary.withheld, **moved},
    )


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _prune(value: Any, path: str, keep: Callable[[str], bool]) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, child in value.items():
            kept = _prune(child, _join(path, str(key)), keep)
            if kept is not _MISSING:
                out[key] = kept
        return out if out or not path else _MISSING
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        # An element of which nothing may go is dropped rather than sent empty.
        items = [
            kept for item in value if (kept := _prune(item, path + "[]", keep)) is not _MISSING
        ]
        return items or _MISSING
    return value if keep(path) else _MISSING
