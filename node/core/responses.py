"""RFC 9457 problem details as aiohttp responses, for every port (the body: node.core.problems)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from node.core.problems import PROBLEM_CONTENT_TYPE, problem_body


def problem_response(status: int, reason: str, detail: str, **extra: Any) -> web.Response:
    """An ``application/problem+json`` response."""
    return web.Response(
        status=status,
        text=json.dumps(problem_body(status, reason, detail, **extra)),
        content_type=PROBLEM_CONTENT_TYPE,
    )
