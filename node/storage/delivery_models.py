"""Delivery tables and indexes: each peer's health and backoff, and the queue indexes.

The outbox rows themselves are ``disclosures`` (node.storage.models). This
module adds what the deliverer needs to work from the database alone, with
bounded memory: one row per peer holding its backoff (so a restart does not
reset it) and partial indexes that hold only pending disclosures, so finding
the oldest few for one peer, or the overdue ones, never scans delivered rows.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index as SqlIndex
from sqlalchemy import Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from node.storage.models import Base, Disclosure, ReceivedMessage, UtcDateTime

PENDING_STATES = ("queued", "sending")
# The same predicate text for both backends, and for the queries that use it.
PENDING_PREDICATE = "state IN ('queued', 'sending')"


class DeliveryPeer(Base):
    """One destination node as the deliverer sees it: its health.

    ``consecutive_failures`` (reset by any answer from the peer) is the exponent
    of the backoff; the time of the next attempt is the ``next_attempt_at`` of
    the peer's oldest pending disclosure, which holds back those behind it.
    """

    __tablename__ = "delivery_peers"

    peer_node: Mapped[str] = mapped_column(String(2), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_failure_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)


# The oldest pending disclosures of one peer, already in queue order.
QUEUE_INDEX = SqlIndex(
    "ix_disclosures_peer_queue",
    Disclosure.recipient_node,
    Disclosure.created_at,
    Disclosure.message_id,
    sqlite_where=text(PENDING_PREDICATE),
    postgresql_where=text(PENDING_PREDICATE),
)
# Pending disclosures by expiry, for the sweep that expires them.
EXPIRY_INDEX = SqlIndex(
    "ix_disclosures_pending_expiry",
    Disclosure.expires_at,
    sqlite_where=text(PENDING_PREDICATE),
    postgresql_where=text(PENDING_PREDICATE),
)
# The newest disclosures first, for status pages.
CREATED_INDEX = SqlIndex("ix_disclosures_created", Disclosure.created_at, Disclosure.message_id)
# A retry of the exact bytes is recognised before the envelope is opened.
RECEIVED_DIGEST_INDEX = SqlIndex(
    "ix_received_sender_digest", ReceivedMessage.sender_node, ReceivedMessage.envelope_sha256
)
