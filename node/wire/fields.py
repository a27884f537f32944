"""Field names of a document, for audit entries and previews (never values)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def field_paths(document: Mapping[str, Any]) -> list[str]:
    """Sorted dotted paths of the leaves; list items share one ``[]`` path.

    ``{"person": {"given_names": "…"}, "children": [{"age": 3}]}`` gives
    ``["children[].age", "person.given_names"]``.
    """
    found: set[str] = set()
    _walk(document, "", found)
    return sorted(found)


def _walk(value: Any, prefix: str, found: set[str]) -> None:
    if isinstance(value, Mapping):
        if not value and prefix:
            found.add(prefix)
        for key, child in value.items():
            _walk(child, f"{prefix}.{key}" if prefix else str(key), found)
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for item in value:
            _walk(item, f"{prefix}[]", found)
    elif prefix:
        found.add(prefix)
