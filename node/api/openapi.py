"""The OpenAPI 3.1 document and validation of request bodies against its schemas."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from node.core.errors import SchemaError
from node.core.schemas import SCHEMA_ROOT

OPENAPI_PATH: Path = SCHEMA_ROOT / "api" / "openapi.json"
_DOC_URI = "https://puente.int/api/v1/openapi.json"
MAX_REPORTED_ERRORS = 10


@cache
def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return document


@cache
def _validator(component: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        _DOC_URI, Resource.from_contents(openapi_document(), default_specification=_spec())
    )
    return Draft202012Validator(
        {"$ref": f"{_DOC_URI}#/components/schemas/{component}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _spec() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


def validate_body(component: str, body: Any) -> None:
    """Refuse a request body that does not match ``#/components/schemas/<component>``.

    The refusal names JSON pointers and keywords, never the submitted values.
    """
    errors = sorted(_validator(component).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        where = [
            f"{'/' + '/'.join(str(p) for p in e.absolute_path)} ({e.validator})"
            for e in errors[:MAX_REPORTED_ERRORS]
        ]
        raise SchemaError("invalid_request", f"request body: {'; '.join(where)}")
