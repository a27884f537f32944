"""Audit log: drop the index on message_id, which no query uses.

Every query an auditor can make (node/audit_queries.py) filters by case,
counterparty, purpose, legal basis or time; none by message id. Message ids
are random UUIDs, so the index took one insert at a random place per entry —
on SQLite about a quarter of the cost of a durable append at a million
entries (BENCHMARKS.md). The column stays, and a query by message id could
still be added with its index.

Revision ID: 0007
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_audit_message", table_name="audit_log")


def downgrade() -> None:
    op.create_index("ix_audit_message", "audit_log", ["message_id"])
