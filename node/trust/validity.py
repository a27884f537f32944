"""When a published key or pinned certificate may be used: validity as data.

The federation directory carries each key's validity in the key's own JWK
(and each pinned certificate's entry), with the members OpenID Federation 1.0
uses for historical keys: ``nbf`` and ``exp`` as NumericDate (RFC 7519
section 2) and ``revoked: {"revoked_at": NumericDate, "reason": CRLReason}``
with the RFC 5280 reason names. All members are optional: a key without them
is valid from always to forever (docs/directory.md, "Key validity").

Pure functions: the caller supplies the times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

# RFC 5280 section 5.3.1 CRLReason names that make sense for a federation key.
REVOCATION_REASONS: Final = (
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
)
KEY_COMPROMISE: Final = "keyCompromise"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def from_numeric_date(value: int) -> dt.datetime:
    """A NumericDate (seconds since the epoch, RFC 7519) as an aware UTC datetime."""
    return _EPOCH + dt.timedelta(seconds=value)


def to_numeric_date(moment: dt.datetime) -> int:
    """An aware datetime as a NumericDate, whole seconds."""
    return int(moment.astimezone(dt.UTC).timestamp())


@dataclass(frozen=True)
class KeyValidity:
    """The published validity of one key or certificate."""

    not_before: dt.datetime | None = None
    expires: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None

    @classmethod
    def from_member(cls, member: Mapping[str, Any]) -> KeyValidity:
        """Read ``nbf``, ``exp`` and ``revoked`` from a schema-valid JWK or TLS entry.

        Raises ValueError when the window is empty (``exp`` not after ``nbf``).
        """
        revoked = member.get("revoked")
        validity = cls(
            not_before=_moment(member.get("nbf")),
            expires=_moment(member.get("exp")),
            revoked_at=_moment(revoked["revoked_at"]) if revoked else None,
            revocation_reason=str(revoked.get("reason", "unspecified")) if revoked else None,
        )
        if validity.not_before and validity.expires and validity.expires <= validity.not_before:
            raise ValueError("exp must be later than nbf")
        return validity

    def as_members(self) -> dict[str, Any]:
        """The JWK members that publish this validity (the inverse of :meth:`from_member`)."""
        members: dict[str, Any] = {}
        if self.not_before is not None:
            members["nbf"] = to_numeric_date(self.not_before)
        if self.expires is not None:
            members["exp"] = to_numeric_date(self.expires)
        if self.revoked_at is not None:
            members["revoked"] = {
                "revoked_at": to_numeric_date(self.revoked_at),
                "reason": self.revocation_reason or "unspecified",
            }
        return members

    @property
    def compromised(self) -> bool:
        return self.revoked_at is not None and self.revocation_reason == KEY_COMPROMISE

    def refusal(
        self, *, signed_at: dt.datetime, seen_at: dt.datetime, skew: dt.timedelta = dt.timedelta(0)
    ) -> str | None:
        """Why a signature is refused, or None when it stands.

        ``signed_at`` is the time the signer claims (a message's ``iat``, a
        receipt's ``received_at``); ``seen_at`` is when this node saw it (now,
        or the time recorded when it was stored). A revoked key refuses
        everything claimed at or after ``revoked_at``; when the reason is
        ``keyCompromise`` the thief could backdate the claim, so what counts is
        when the node saw it. ``skew`` forgives small clock differences at the
        edges of the window. Returns ``"revoked"``, ``"not_yet_valid"`` or
        ``"expired"``.
        """
        if self.revoked_at is not None:
            at = seen_at if self.revocation_reason == KEY_COMPROMISE else signed_at
            if at >= self.revoked_at:
                return "revoked"
        if self.not_before is not None and signed_at + skew < self.not_before:
            return "not_yet_valid"
        if self.expires is not None and signed_at >= self.expires + skew:
            return "expired"
        return None

    def in_force(self, now: dt.datetime) -> bool:
        """May the owner use this key now (inside its window, not revoked)?"""
        return self.refusal(signed_at=now, seen_at=now) is None

    def trusted(self, now: dt.datetime) -> bool:
        """May a peer trust this key or pin now? Before ``nbf`` too: it is published early."""
        if self.revoked_at is not None and now >= self.revoked_at:
            return False
        return self.expires is None or now < self.expires


ALWAYS_VALID: Final = KeyValidity()


def newest_in_force(candidates: Sequence[tuple[str, KeyValidity]], now: dt.datetime) -> str | None:
    """The id of the newest key in force at ``now``: the latest ``nbf``, then the last listed.

    This is how a sender picks a peer's encryption key and how a node picks
    which of its own keys to use: a key published with a future ``nbf`` waits,
    and an expired or revoked one is never chosen.
    """
    best: tuple[dt.datetime, int, str] | None = None
    for index, (key_id, validity) in enumerate(candidates):
        if not validity.in_force(now):
            continue
        rank = (validity.not_before or _EPOCH, index, key_id)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return best[2] if best else None


def _moment(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("a NumericDate is an integer number of seconds")
    try:
        return from_numeric_date(value)
    except OverflowError as exc:
        raise ValueError("NumericDate out of range") from exc
