"""Directory history: every verified federation directory, as signed.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from node.storage.models import UtcDateTime

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_history",
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("federation", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("first_seen_at", UtcDateTime(), nullable=False),
        sa.Column("signed", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("directory_history")
