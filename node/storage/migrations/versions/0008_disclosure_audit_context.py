"""Disclosures: the members every later audit entry about one repeats.

A disclosure's later entries (delivered, refused, expired, withdrawn) are
written by the deliverer or a withdrawal, far from the caseworker who sent
it. ``audit_context`` keeps, from the moment it was queued, what those
entries must name for the audit trail to answer "who disclosed what to
whom" on every row: the case's pseudonym, purpose, legal basis, the sending
user and authority, the recipient authority and the document type
(docs/audit-log.md). Rows queued before this migration have none, and their
later entries stay as they were.

Revision ID: 0008_audit_context
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_audit_context"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("disclosures", sa.Column("audit_context", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("disclosures", "audit_context")
