"""Tables of the local API: users, their bearer tokens, and reception follow-up."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy import Index as SqlIndex
from sqlalchemy.orm import Mapped, mapped_column

from node.storage.models import Base, UtcDateTime


class User(Base):
    """A person using the local API. Belongs to exactly one authority, has one role."""

    __tablename__ = "api_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    authority: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ApiToken(Base):
    """A bearer token, stored only as its SHA-256 (tokens carry 256 random bits)."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("api_users.id"))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class InboxItem(Base):
    """A received return notice or handoff as a reception officer's work item.

    Holds only what the inbox must sort and filter by; the summary itself stays
    in ``received_messages``. Acknowledgement and outcome are the officer's.
    """

    __tablename__ = "inbox_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_id: Mapped[int] = mapped_column(Integer)
    authority: Mapped[str] = mapped_column(String(64))
    doc_type: Mapped[str] = mapped_column(String(40))
    sender_node: Mapped[str] = mapped_column(String(2))
    message_id: Mapped[str] = mapped_column(String(36))
    arrival_date: Mapped[str | None] = mapped_column(String(10), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(40), nullable=True)
    outcome_note: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        UniqueConstraint("received_id", name="uq_inbox_received"),
        SqlIndex("ix_inbox_authority_arrival", "authority", "arrival_date"),
    )
