"""Local API: users, bearer tokens, reception inbox items.

Revision ID: 0006
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from node.storage.models import UtcDateTime

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("authority", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("disabled_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("api_users.id"), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("last_used_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "inbox_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("received_id", sa.Integer(), nullable=False),
        sa.Column("authority", sa.String(64), nullable=False),
        sa.Column("doc_type", sa.String(40), nullable=False),
        sa.Column("sender_node", sa.String(2), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("arrival_date", sa.String(10), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("acknowledged_at", UtcDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(40), nullable=True),
        sa.Column("outcome_note", sa.Text(), nullable=True),
        sa.UniqueConstraint("received_id", name="uq_inbox_received"),
    )
    op.create_index("ix_inbox_authority_arrival", "inbox_items", ["authority", "arrival_date"])


def downgrade() -> None:
    op.drop_table("inbox_items")
    op.drop_table("api_tokens")
    op.drop_table("api_users")
