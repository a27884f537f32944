"""Tables, one class each. Timestamps are timezone-aware UTC."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import Index as SqlIndex
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on both backends (SQLite has no time zone type)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Disclosure(Base):
    """A case summary leaving this node: the outbox row and its delivery state.

    The envelope is sealed when the disclosure is queued, so every retry sends
    the same bytes and the receipt always refers to what was committed.
    """

    __tablename__ = "disclosures"

    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    sender_authority: Mapped[str] = mapped_column(String(64))
    recipient_node: Mapped[str] = mapped_column(String(2))
    recipient_authority: Mapped[str] = mapped_column(String(64))
    doc_type: Mapped[str] = mapped_column(String(40))
    schema_id: Mapped[str] = mapped_column(String(200))
    case_ref: Mapped[str] = mapped_column(String(80))
    fields: Mapped[list[str]] = mapped_column(JSON)
    envelope: Mapped[str] = mapped_column(Text)
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    refusal_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    receipt: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What every later audit entry about this disclosure repeats (case pseudonym,
    # purpose, legal basis, user, authorities, document type); None before 0008.
    audit_context: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        SqlIndex("ix_disclosures_pending", "state", "recipient_node", "next_attempt_at"),
    )


class ReceivedMessage(Base):
    """An accepted envelope, kept byte for byte as evidence, with its receipt."""

    __tablename__ = "received_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sender_node: Mapped[str] = mapped_column(String(2))
    message_id: Mapped[str] = mapped_column(String(36))
    sender_authority: Mapped[str] = mapped_column(String(64))
    recipient_authority: Mapped[str] = mapped_column(String(64))
    doc_type: Mapped[str] = mapped_column(String(40))
    schema_id: Mapped[str] = mapped_column(String(200))
    # NULL for a case summary with disclosure terms: body and envelope are then kept
    # only encrypted under the summary's own data key (consent_models.ReceivedSummary).
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    issued_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    receipt: Mapped[str] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("sender_node", "message_id", name="uq_received_sender_msg"),)


class AuditEntry(Base):
    """One entry of the append-only audit log (database triggers refuse changes).

    ``entry`` holds the RFC 8785 canonical JSON exactly as hashed into the
    Merkle tree (leaf ``seq``); the other columns are copies for querying.
    ``case_ref`` is the keyed-hash pseudonym of a case, never the case id.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    recorded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    event: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    counterparty: Mapped[str | None] = mapped_column(String(2), nullable=True)
    case_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    purpose: Mapped[str | None] = mapped_column(String(64), nullable=True)
    legal_basis: Mapped[str | None] = mapped_column(String(64), nullable=True)
    entry: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        # (column, seq): a query walks one value's entries in log order and stops at its limit.
        SqlIndex("ix_audit_counterparty_seq", "counterparty", "seq"),
        SqlIndex("ix_audit_case_ref", "case_ref", "seq"),
        SqlIndex("ix_audit_purpose_seq", "purpose", "seq"),
        SqlIndex("ix_audit_legal_basis_seq", "legal_basis", "seq"),
        # recorded_at never decreases along seq, so a time bound is one lookup here.
        SqlIndex("ix_audit_time", "recorded_at", "seq"),
    )


class AuditHead(Base):
    """The single row naming the log's size, root hash and right edge.

    ``frontier`` is the concatenated hashes of the complete subtrees that make
    up the tree (largest first), so an append never reads the tree table.
    Updating the row takes a row lock, which serialises appenders on
    PostgreSQL; on SQLite every write transaction is already exclusive.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    head_hash: Mapped[str] = mapped_column(String(64))
    frontier: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
