"""RFC 8785 (JSON Canonicalization Scheme) bytes for everything signed or hashed.

Two implementations in two languages produce the same bytes for the same JSON
value, so a signature or digest made here can be checked anywhere.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import rfc8785


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value."""
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256, the digest form used in receipts and audit entries."""
    return hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), as JOSE uses it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; raises ValueError on bad input."""
    if any(c in text for c in "+/="):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
