"""Tables of cases, consents and case summaries (issue #5). Timestamps are aware UTC.

Kept apart from node/storage/models.py (which this imports ``Base`` from), and
imported by the Alembic environment and node/context.py so the metadata is
complete. Data keys themselves are NOT stored here: see node/datakeys.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import Index as SqlIndex
from sqlalchemy.orm import Mapped, mapped_column

from node.storage.models import Base, UtcDateTime


class CaseRow(Base):
    """A case as held by the interviewing node (schemas/case), encrypted at rest.

    The document (her answers, the interview) is kept only as AES-256-GCM
    ciphertext under the case's own data key, which lives outside the
    database (node.casework.at_rest); erasing the case destroys the key.
    ``case_ref`` stays in clear to find the case by: it is the authority's
    identifier, unique per authority, never content. ``document`` is only for
    a row written before encryption at rest, until the node seals it.
    """

    __tablename__ = "cases"

    case_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_ref: Mapped[str] = mapped_column(String(80))
    authority: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    document: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    data_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    document_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    erased_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    erasure_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (
        # A case reference is its authority's: two authorities may use the same one.
        UniqueConstraint("authority", "case_ref", name="uq_cases_authority_ref"),
    )


class ConsentRow(Base):
    """A consent record (schemas/consent), current scope and status."""

    __tablename__ = "consents"

    consent_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(16))
    valid_until: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    record: Mapped[dict[str, Any]] = mapped_column(JSON)


class ConsentHistoryRow(Base):
    """One change of a consent's status, in order (given, narrowed, withdrawn, lapsed)."""

    __tablename__ = "consent_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consent_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    entry: Mapped[dict[str, Any]] = mapped_column(JSON)


class CaseDisclosure(Base):
    """The terms of one outgoing case summary (a row of ``disclosures`` with the same id)."""

    __tablename__ = "case_disclosures"

    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(36), index=True)
    consent_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    purpose: Mapped[str] = mapped_column(String(40))
    legal_basis: Mapped[str] = mapped_column(String(20))
    policy_id: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(16))
    policy_sha256: Mapped[str] = mapped_column(String(64))
    agreements: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    categories: Mapped[list[str]] = mapped_column(JSON)
    retain_until: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    review_required: Mapped[bool] = mapped_column(Boolean)
    exception_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # The written life-in-danger justification stays here, for the auditors' review.
    justification: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class WithdrawalNotice(Base):
    """A consent withdrawal sent to one recipient (a row of ``disclosures`` with the same id)."""

    __tablename__ = "withdrawal_notices"

    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(36), index=True)
    recipient_node: Mapped[str] = mapped_column(String(2))
    recipient_authority: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    messages: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class ErasureReceiptRow(Base):
    """A recipient's signed erasure receipt answering one consent withdrawal."""

    __tablename__ = "erasure_receipts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    withdrawal_message_id: Mapped[str] = mapped_column(String(36), unique=True)
    consent_id: Mapped[str] = mapped_column(String(36), index=True)
    recipient_node: Mapped[str] = mapped_column(String(2))
    receipt_message_id: Mapped[str] = mapped_column(String(36))
    erased_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    erased: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    not_held: Mapped[list[str]] = mapped_column(JSON)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class SummaryKey(Base):
    """Bookkeeping of one per-summary data key. The key bytes live in the key store, not here."""

    __tablename__ = "summary_keys"

    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    destroyed_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ReceivedSummary(Base):
    """A received case summary, encrypted at rest under its own data key (crypto-shredding).

    Both the body and the evidence envelope are encrypted: the envelope opens
    with the node's long-term key, so keeping it in clear would defeat erasure.
    The envelope's digest and the receipt stay in ``received_messages``.
    """

    __tablename__ = "received_summaries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_message_id: Mapped[int] = mapped_column(
        ForeignKey("received_messages.id"), unique=True
    )
    sender_node: Mapped[str] = mapped_column(String(2))
    message_id: Mapped[str] = mapped_column(String(36))
    sender_authority: Mapped[str] = mapped_column(String(64))
    recipient_authority: Mapped[str] = mapped_column(String(64))
    doc_type: Mapped[str] = mapped_column(String(40))
    case_ref: Mapped[str] = mapped_column(String(80), index=True)
    consent_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    purpose: Mapped[str] = mapped_column(String(40))
    legal_basis: Mapped[str] = mapped_column(String(20))
    policy_id: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(16))
    review_required: Mapped[bool] = mapped_column(Boolean)
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    fields: Mapped[list[str]] = mapped_column(JSON)
    data_key_id: Mapped[str] = mapped_column(String(36))
    body_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    envelope_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    retain_until: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    erased_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    erasure_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (
        UniqueConstraint("sender_node", "message_id", name="uq_summary_sender_msg"),
        SqlIndex("ix_summaries_retention", "erased_at", "retain_until"),
    )


class ConsentNotice(Base):
    """What a recipient was told about a consent: withdrawn in full, or narrowed to a scope."""

    __tablename__ = "consent_notices"

    origin_node: Mapped[str] = mapped_column(String(2), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    remaining: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Every message id a withdrawal of this consent named: refused if it arrives later.
    messages: Mapped[list[str]] = mapped_column(JSON)
    withdrawal_message_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class CaseAddendum(Base):
    """What a recipient learned itself about a received case (interview answers and coverage)."""

    __tablename__ = "case_addenda"

    addendum_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_ref: Mapped[str] = mapped_column(String(80), index=True)
    origin_node: Mapped[str] = mapped_column(String(2))
    authority: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    interview: Mapped[dict[str, Any]] = mapped_column(JSON)
    shared_message_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
