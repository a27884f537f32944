"""Delivery: per-peer health and backoff, partial indexes for the queue and expiry.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from node.storage.models import UtcDateTime

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

PENDING_PREDICATE = "state IN ('queued', 'sending')"


def upgrade() -> None:
    op.create_table(
        "delivery_peers",
        sa.Column("peer_node", sa.String(2), primary_key=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("last_success_at", UtcDateTime(), nullable=True),
        sa.Column("last_failure_at", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
    )
    pending = sa.text(PENDING_PREDICATE)
    op.create_index(
        "ix_disclosures_peer_queue",
        "disclosures",
        ["recipient_node", "created_at", "message_id"],
        sqlite_where=pending,
        postgresql_where=pending,
    )
    op.create_index(
        "ix_disclosures_pending_expiry",
        "disclosures",
        ["expires_at"],
        sqlite_where=pending,
        postgresql_where=pending,
    )
    op.create_index("ix_disclosures_created", "disclosures", ["created_at", "message_id"])
    op.create_index(
        "ix_received_sender_digest", "received_messages", ["sender_node", "envelope_sha256"]
    )


def downgrade() -> None:
    op.drop_index("ix_received_sender_digest", table_name="received_messages")
    op.drop_index("ix_disclosures_created", table_name="disclosures")
    op.drop_index("ix_disclosures_pending_expiry", table_name="disclosures")
    op.drop_index("ix_disclosures_peer_queue", table_name="disclosures")
    op.drop_table("delivery_peers")
