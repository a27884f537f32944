"""The origin's own cases at rest: encrypted under a data key each, erased by destroying it.

Adds the ciphertext, the data key's id and the erasure bookkeeping to
``cases``, and lets ``document`` (the clear JSON) be NULL. Rows written
before this keep their clear document until the node seals them
(node.casework.at_rest.seal_clear_cases, run by ``puente migrate`` and
when ``puente serve`` starts): sealing needs the key store, which is
outside the database and so outside what a migration sees.

Revision ID: 0009_cases_at_rest
Revises: 0008_case_scope
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from node.storage.models import UtcDateTime

revision = "0009_cases_at_rest"
down_revision = "0008_case_scope"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.alter_column("document", existing_type=sa.JSON(), nullable=True)
        batch.add_column(sa.Column("data_key_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("document_ciphertext", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("erased_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("erasure_reason", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        for column in ("erasure_reason", "erased_at", "document_ciphertext", "data_key_id"):
            batch.drop_column(column)
        batch.alter_column("document", existing_type=sa.JSON(), nullable=False)
