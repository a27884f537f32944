"""Consent records and their status: what she agreed to, and whether it still holds.

Pure model and rules (no I/O). A consent names purposes, permitted recipients
(countries, kinds of authority, named authorities), data categories and a
validity period; who granted it (she, or for a girl a guardian or legal
representative, with a best-interest determination reference); how and in
which language she was informed; who recorded it, with a digest of the
evidence. Its history says given, narrowed, withdrawn, lapsed. A consent can
only ever be narrowed, never widened: a wider one is a new consent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from node.core import schemas
from node.core.clock import parse_rfc3339, rfc3339
from node.core.errors import PuenteError, SchemaError

ACTIVE_STATUSES = frozenset({"given", "narrowed"})


def _enum(name: str) -> tuple[str, ...]:
    return tuple(schemas.schema_document(schemas.CONSENT)["$defs"][name]["enum"])


PURPOSES: tuple[str, ...] = _enum("purpose")
CATEGORIES: tuple[str, ...] = _enum("category")


class ConsentError(PuenteError):
    """A consent record or a change to it is refused."""

    reason = "consent_invalid"
    http_status = 422


class ConsentRefused(PuenteError):
    """No consent covers this disclosure. ``reason`` says which condition fails."""

    reason = "no_consent"
    http_status = 422


@dataclass(frozen=True)
class RecipientRef:
    """A concrete recipient: a node (its country), one of its authorities and that one's kind."""

    node: str
    authority: str
    kind: str


@dataclass(frozen=True)
class RecipientMatcher:
    """A permitted recipient as consented: every member present must match."""

    country: str | None = None
    authority_kind: str | None = None
    authority: str | None = None

    def matches(self, recipient: RecipientRef) -> bool:
        return (
            self.country in (None, recipient.node)
            and self.authority_kind in (None, recipient.kind)
            and self.authority in (None, recipient.authority)
        )

    def covers(self, other: RecipientMatcher) -> bool:
        """Whether every recipient ``other`` matches is also matched by this one."""
        return all(
            mine is None or mine == theirs
            for mine, theirs in (
                (self.country, other.country),
                (self.authority_kind, other.authority_kind),
                (self.authority, other.authority),
            )
        )

    def as_json(self) -> dict[str, str]:
        out = {"country": self.country, "authority_kind": self.authority_kind}
        out["authority"] = self.authority
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecipientMatcher:
        return cls(data.get("country"), data.get("authority_kind"), data.get("authority"))


@dataclass(frozen=True)
class Scope:
    """What a consent covers: purposes, recipients, categories, until when, share-back."""

    purposes: frozenset[str]
    recipients: tuple[RecipientMatcher, ...]
    categories: frozenset[str]
    valid_until: dt.datetime
    share_back: bool

    def permits_recipient(self, recipient: RecipientRef) -> bool:
        return any(m.matches(recipient) for m in self.recipients)

    def is_within(self, wider: Scope) -> bool:
        """Whether this scope is equal to or narrower than ``wider`` in every respect."""
        return (
            self.purposes <= wider.purposes
            and self.categories <= wider.categories
            and self.valid_until <= wider.valid_until
            and (wider.share_back or not self.share_back)
            and all(any(w.covers(m) for w in wider.recipients) for m in self.recipients)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "purposes": sorted(self.purposes),
            "recipients": [m.as_json() for m in self.recipients],
            "categories": sorted(self.categories),
            "valid_until": rfc3339(self.valid_until),
            "share_back": self.share_back,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scope:
        return cls(
            purposes=frozenset(data["purposes"]),
            recipients=tuple(RecipientMatcher.from_json(m) for m in data["recipients"]),
            categories=frozenset(data["categories"]),
            valid_until=parse_rfc3339(data["valid_until"]),
            share_back=bool(data.get("share_back", False)),
        )


@dataclass(frozen=True)
class Officer:
    """Who recorded or changed a consent: node, authority and staff identifier."""

    node: str
    authority: str
    officer: str

    def as_json(self) -> dict[str, str]:
        return {"node": self.node, "authority": self.authority, "officer": self.officer}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Officer:
        return cls(data["node"], data["authority"], data["officer"])


@dataclass(frozen=True)
class HistoryEntry:
    status: str
    at: dt.datetime
    by: Officer | None = None
    scope: Scope | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "at": rfc3339(self.at)}
        if self.by is not None:
            out["by"] = self.by.as_json()
        if self.scope is not None:
            out["scope"] = self.scope.as_json()
        return out


@dataclass(frozen=True)
class ConsentRecord:
    """A consent as recorded, with its current scope and its whole history."""

    consent_id: str
    case_ref: str
    grantor_role: str
    best_interest_determination: str | None
    scope: Scope
    valid_from: dt.datetime
    informed: Mapping[str, Any]
    recorded_by: Officer
    recorded_at: dt.datetime
    evidence: Mapping[str, Any] | None
    history: tuple[HistoryEntry, ...]

    @property
    def status(self) -> str:
        return self.history[-1].status

    def effective_status(self, now: dt.datetime) -> str:
        """The status at ``now``: a given or narrowed consent past its validity has lapsed."""
        if self.status in ACTIVE_STATUSES and now >= self.scope.valid_until:
            return "lapsed"
        return self.status

    @property
    def grantor_decides_for_minor(self) -> bool:
        """A guardian or legal representative consented, or a best-interest determination exists."""
        return (
            self.grantor_role in ("guardian", "legal_representative")
            or self.best_interest_determination is not None
        )

    def as_document(self) -> dict[str, Any]:
        """The record as ``schemas/consent`` (what ``puente consent show --json`` prints)."""
        grantor: dict[str, Any] = {"role": self.grantor_role}
        if self.best_interest_determination is not None:
            grantor["best_interest_determination"] = self.best_interest_determination
        scope = self.scope.as_json()
        document: dict[str, Any] = {
            "consent_id": self.consent_id,
            "case_ref": self.case_ref,
            "grantor": grantor,
            "purposes": scope["purposes"],
            "recipients": scope["recipients"],
            "categories": scope["categories"],
            "valid_from": rfc3339(self.valid_from),
            "valid_until": scope["valid_until"],
            "informed": dict(self.informed),
            "recorded_by": self.recorded_by.as_json(),
            "recorded_at": rfc3339(self.recorded_at),
            "share_back": self.scope.share_back,
            "status": self.status,
            "history": [h.as_json() for h in self.history],
        }
        if self.evidence is not None:
            document["evidence"] = dict(self.evidence)
        return document

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ConsentRecord:
        """Parse a stored record (validated against ``schemas/consent``)."""
        try:
            schemas.validate(schemas.CONSENT, document, reason="consent_invalid")
        except SchemaError as exc:
            raise ConsentError("consent_invalid", exc.detail) from exc
        return cls(
            consent_id=document["consent_id"],
            case_ref=document["case_ref"],
            grantor_role=document["grantor"]["role"],
            best_interest_determination=document["grantor"].get("best_interest_determination"),
            scope=Scope.from_json(document),
            valid_from=parse_rfc3339(document["valid_from"]),
            informed=dict(document["informed"]),
            recorded_by=Officer.from_json(document["recorded_by"]),
            recorded_at=parse_rfc3339(document["recorded_at"]),
            evidence=document.get("evidence"),
            history=tuple(
                HistoryEntry(
                    status=h["status"],
                    at=parse_rfc3339(h["at"]),
                    by=Officer.from_json(h["by"]) if "by" in h else None,
                    scope=Scope.from_json(h["scope"]) if "scope" in h else None,
                )
                for h in document["history"]
            ),
        )


def new_consent(draft: Mapping[str, Any], *, consent_id: str, now: dt.datetime) -> ConsentRecord:
    """A consent as an officer records it (``schemas/consent-draft``), status ``given``."""
    try:
        schemas.validate(schemas.CONSENT_DRAFT, draft, reason="consent_invalid")
    except SchemaError as exc:
        raise ConsentError("consent_invalid", exc.detail) from exc
    try:
        valid_from = parse_rfc3339(draft["valid_from"]) if "valid_from" in draft else now
        scope = Scope.from_json(draft)
    except ValueError as exc:
        raise ConsentError("consent_invalid", "a date-time is not readable") from exc
    if scope.valid_until <= valid_from:
        raise ConsentError("consent_invalid", "valid_until must be after valid_from")
    by = Officer.from_json(draft["recorded_by"])
    return ConsentRecord(
        consent_id=consent_id,
        case_ref=draft["case_ref"],
        grantor_role=draft["grantor"]["role"],
        best_interest_determination=draft["grantor"].get("best_interest_determination"),
        scope=scope,
        valid_from=valid_from,
        informed=dict(draft["informed"]),
        recorded_by=by,
        recorded_at=now,
        evidence=draft.get("evidence"),
        history=(HistoryEntry("given", now, by, scope),),
    )


def narrow(record: ConsentRecord, scope: Scope, *, at: dt.datetime, by: Officer) -> ConsentRecord:
    """The record with a narrower scope; refuses a wider one (``not_narrower``)."""
    if record.effective_status(at) not in ACTIVE_STATUSES:
        raise ConsentError("consent_not_active", f"consent is {record.effective_status(at)}")
    if not scope.is_within(record.scope):
        raise ConsentError("not_narrower", "a consent can be narrowed, never widened")
    if not scope.purposes or not scope.recipients or not scope.categories:
        raise ConsentError("not_narrower", "nothing left: withdraw the consent instead")
    entry = HistoryEntry("narrowed", at, by, scope)
    return replace(record, scope=scope, history=(*record.history, entry))


def withdraw(record: ConsentRecord, *, at: dt.datetime, by: Officer) -> ConsentRecord:
    """The record withdrawn in full. Withdrawing twice is refused (``consent_not_active``)."""
    if record.status == "withdrawn":
        raise ConsentError("consent_not_active", "consent is already withdrawn")
    return replace(record, history=(*record.history, HistoryEntry("withdrawn", at, by)))


def lapse(record: ConsentRecord, *, at: dt.datetime) -> ConsentRecord:
    """The record marked lapsed (its validity ended)."""
    return replace(record, history=(*record.history, HistoryEntry("lapsed", at)))


def check(
    record: ConsentRecord, *, now: dt.datetime, purpose: str, recipient: RecipientRef
) -> None:
    """Raise :class:`ConsentRefused` unless the record covers this purpose and recipient now."""
    status = record.effective_status(now)
    if status == "withdrawn":
        raise ConsentRefused("consent_withdrawn", f"consent {record.consent_id} was withdrawn")
    if status == "lapsed" or now < record.valid_from:
        raise ConsentRefused("consent_expired", f"consent {record.consent_id} is not valid now")
    if purpose not in record.scope.purposes:
        raise ConsentRefused("purpose_not_consented", f"she did not consent to {purpose}")
    if not record.scope.permits_recipient(recipient):
        raise ConsentRefused(
            "recipient_not_consented",
            f"she did not consent to {recipient.node}/{recipient.authority}",
        )


# When no consent fits, the refusal names the condition that came closest to holding.
_REFUSAL_ORDER = (
    "recipient_not_consented",
    "purpose_not_consented",
    "consent_expired",
    "consent_withdrawn",
)


def choose(
    records: Sequence[ConsentRecord],
    *,
    now: dt.datetime,
    purpose: str,
    recipient: RecipientRef,
    consent_id: str | None = None,
) -> ConsentRecord:
    """The consent this disclosure rests on (the named one, or the newest that fits)."""
    candidates: Iterable[ConsentRecord] = records
    if consent_id is not None:
        candidates = [r for r in records if r.consent_id == consent_id]
        if not candidates:
            raise ConsentRefused("no_consent", f"no consent {consent_id} for this case")
    refusals: list[ConsentRefused] = []
    for record in sorted(candidates, key=lambda r: r.recorded_at, reverse=True):
        try:
            check(record, now=now, purpose=purpose, recipient=recipient)
        except ConsentRefused as refused:
            refusals.append(refused)
            continue
        return record
    if not refusals:
        raise ConsentRefused("no_consent", "no consent is recorded for this case")
    raise min(refusals, key=lambda r: _REFUSAL_ORDER.index(r.reason))
