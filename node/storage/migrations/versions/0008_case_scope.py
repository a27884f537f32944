"""Case references are scoped to their authority: unique on (authority, case_ref).

Two authorities of one node may use the same case reference; before, the
second was refused ``case_exists``, which told it that another authority
held that reference (an oracle between authorities, and a way to squat).

Revision ID: 0008_case_scope
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_case_scope"
down_revision = "0005"
branch_labels = None
depends_on = None

# SQLite keeps the column's UNIQUE without a name: batch mode names it by this convention.
_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _case_ref_unique(bind: sa.Connection) -> str | None:
    for constraint in sa.inspect(bind).get_unique_constraints("cases"):
        if constraint["column_names"] == ["case_ref"]:
            return constraint["name"] or "uq_cases_case_ref"
    return None


def upgrade() -> None:
    old = _case_ref_unique(op.get_bind())
    with op.batch_alter_table("cases", naming_convention=_NAMES) as batch:
        if old is not None:
            batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint("uq_cases_authority_ref", ["authority", "case_ref"])


def downgrade() -> None:
    with op.batch_alter_table("cases", naming_convention=_NAMES) as batch:
        batch.drop_constraint("uq_cases_authority_ref", type_="unique")
        batch.create_unique_constraint("uq_cases_case_ref", ["case_ref"])
