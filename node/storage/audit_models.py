"""Tables of the verifiable audit log beyond the entries themselves.

All but ``witness_state`` are append-only (database triggers refuse UPDATE
and DELETE, as on ``audit_log``): the tree's hashes, the checkpoints this node
signed, the cosignatures its witnesses returned, and the evidence of forks it
saw as a witness. ``witness_state`` is the one mutable row per peer log that
the witness protocol asks for: the latest checkpoint this node cosigned.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy import Index as SqlIndex
from sqlalchemy.orm import Mapped, mapped_column

from node.storage.models import Base, UtcDateTime

_BIG = BigInteger().with_variant(Integer, "sqlite")


class AuditTreeNode(Base):
    """The hash of one complete subtree: leaves [index·2^level, (index+1)·2^level).

    Level 0 holds the leaf hashes. With every complete subtree stored, a root
    or a proof at any size is O(log n) lookups, never a recomputation.
    """

    __tablename__ = "audit_tree"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column("idx", _BIG, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditCheckpoint(Base):
    """A checkpoint this node signed (C2SP tlog-checkpoint in a signed note)."""

    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(_BIG, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    signed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    note: Mapped[str] = mapped_column(Text)


class AuditCosignature(Base):
    """A witness's tlog-cosignature/v1 line on one of this node's checkpoints."""

    __tablename__ = "audit_cosignatures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(_BIG)
    witness_node: Mapped[str] = mapped_column(String(2))
    cosigner: Mapped[str] = mapped_column(String(200))
    cosigned_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    line: Mapped[str] = mapped_column(Text)

    __table_args__ = (SqlIndex("ix_audit_cosignatures_size", "tree_size", "witness_node"),)


class WitnessState(Base):
    """The latest checkpoint this node cosigned for one peer's log (by origin)."""

    __tablename__ = "witness_state"

    origin: Mapped[str] = mapped_column(String(200), primary_key=True)
    node: Mapped[str] = mapped_column(String(2))
    tree_size: Mapped[int] = mapped_column(_BIG)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class WitnessFork(Base):
    """Evidence of a fork: two checkpoints of one log that cannot both be honest."""

    __tablename__ = "witness_forks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    origin: Mapped[str] = mapped_column(String(200))
    node: Mapped[str] = mapped_column(String(2))
    reason: Mapped[str] = mapped_column(String(64))
    detected_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    reported_by: Mapped[str | None] = mapped_column(String(2), nullable=True)
    cosigned_note: Mapped[str] = mapped_column(Text)
    presented_note: Mapped[str] = mapped_column(Text)
