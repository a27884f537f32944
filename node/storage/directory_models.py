"""The directory history: every federation directory this node has verified.

Receipts and envelopes must stay verifiable for years, long after the keys that
signed them were rotated out of the current directory; the directory that was
in force when they were made is here, exactly as signed.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from node.storage.models import Base, UtcDateTime


class DirectoryVersion(Base):
    """One verified directory version, its signed JSON exactly as received."""

    __tablename__ = "directory_history"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    federation: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))  # SHA-256 of the canonical document
    issued_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    first_seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    signed: Mapped[str] = mapped_column(Text)
