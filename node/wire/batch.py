"""The batch wire format: many envelopes in one request, one answer for each.

A busy link carries its disclosures in batches, after Matrix federation
transactions (``PUT /_matrix/federation/v1/send/{txnId}``: up to 50 events
in one request, a result for each). Each envelope is exactly what
``POST /federation/v1/messages`` takes (a compact JWE, node.wire.envelope), so a
batch adds no cryptography of its own: every message is opened, checked,
stored and receipted as if it had come alone, and its answer is what it would
have got alone — a signed receipt or an RFC 9457 problem.

Request (``POST /federation/v1/batches``, ``application/json``)::

    {"messages": ["eyJhbGciOiJFQ0RILUVTIi...", "eyJhbGciOiJFQ0RILUVTIi..."]}

Answer (``200``, ``application/json``), one result per message, in order::

    {"results": [
        {"receipt": "eyJhbGciOiJFZERTQSIs...", "duplicate": false},
        {"type": "https://puente.int/problems/over_disclosure", "title": "...",
         "status": 422, "detail": "...", "reason": "over_disclosure"}
    ]}

The recipient stores a batch in order. After a refusal that may pass (its
copy of the directory or its clock behind the sender's) it leaves the rest
untouched and answers each ``not_processed`` (status 503), so the sender
retries them in order behind the refused one. A refusal of the whole request
(rate limit, malformed batch, unknown peer) is an ordinary problem answer.
docs/delivery.md has the full description.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from node.core.errors import PuenteError
from node.core.limits import MAX_BATCH_MESSAGES, MAX_ENVELOPE_BYTES
from node.core.problems import problem_body

BATCH_PATH = "/federation/v1/batches"
BATCH_CONTENT_TYPE = "application/json"
# At most this many bytes of envelopes in one batch (and MAX_BATCH_MESSAGES messages).
MAX_BATCH_BYTES = MAX_ENVELOPE_BYTES
# The JSON around the envelopes: the request body limit is MAX_BATCH_BYTES plus this.
BATCH_OVERHEAD_BYTES = 64 + 3 * MAX_BATCH_MESSAGES
# The reason code of a message left untouched behind a refusal that may pass.
NOT_PROCESSED = "not_processed"


class BatchMalformed(PuenteError):
    """The request is not a batch of compact JWE strings."""

    reason = "malformed_batch"
    http_status = 400


def encode_request(envelopes: Sequence[str]) -> bytes:
    """The request body for these envelopes (compact JWE strings, ASCII)."""
    return json.dumps({"messages": list(envelopes)}, separators=(",", ":")).encode("ascii")


def parse_request(raw: bytes) -> list[bytes]:
    """The envelopes of a batch request, or :class:`BatchMalformed`."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BatchMalformed(detail="the body is not JSON") from exc
    messages = document.get("messages") if isinstance(document, dict) else None
    if not isinstance(messages, list) or set(document) != {"messages"}:
        raise BatchMalformed(detail='send {"messages": [<compact JWE>, ...]}')
    if not 1 <= len(messages) <= MAX_BATCH_MESSAGES:
        raise BatchMalformed(detail=f"a batch holds 1 to {MAX_BATCH_MESSAGES} messages")
    if not all(isinstance(m, str) and m.isascii() for m in messages):
        raise BatchMalformed(detail="every message is a compact JWE string")
    envelopes = [m.encode("ascii") for m in messages]
    if sum(len(e) for e in envelopes) > MAX_BATCH_BYTES:
        raise BatchMalformed(detail=f"more than {MAX_BATCH_BYTES} bytes of envelopes")
    return envelopes


def answer(receipt: str | None, duplicate: bool, refusal: PuenteError | None) -> dict[str, Any]:
    """One message's result: its receipt, or its refusal as a problem object."""
    if refusal is not None:
        return problem_body(refusal.http_status, refusal.reason, refusal.detail)
    return {"receipt": receipt, "duplicate": duplicate}


def parse_answers(raw: bytes, count: int) -> list[dict[str, Any]] | None:
    """The per-message results of a batch answer; None if it is not one for ``count`` messages."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list) or len(results) != count:
        return None
    if not all(isinstance(result, dict) for result in results):
        return None
    return results


def pack(sizes: Sequence[int], *, max_messages: int) -> list[range]:
    """Split envelopes of these sizes, in order, into batches within both limits."""
    batches: list[range] = []
    start, total = 0, 0
    for index, size in enumerate(sizes):
        full = index - start >= max_messages or (index > start and total + size > MAX_BATCH_BYTES)
        if full:
            batches.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches
