"""Verifiable audit log: RFC 9162 Merkle tree, checkpoints, cosignatures, witness state.

Replaces the hash chain. Existing entries keep their bytes and become the
first leaves of the tree (their leaf hashes and complete subtrees are built
here), so an upgraded node's log stays verifiable from its first entry.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from node.auditlog import tree as audit_tree
from node.storage.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
APPEND_ONLY_TABLES = (
    "audit_log",
    "audit_tree",
    "audit_checkpoints",
    "audit_cosignatures",
    "witness_forks",
)


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("prev_hash")
        batch.drop_column("entry_hash")
        batch.add_column(sa.Column("case_ref", sa.String(64), nullable=True))
        batch.add_column(sa.Column("purpose", sa.String(64), nullable=True))
        batch.add_column(sa.Column("legal_basis", sa.String(64), nullable=True))
        batch.drop_index("ix_audit_counterparty_time")
        batch.create_index("ix_audit_counterparty_seq", ["counterparty", "seq"])
        batch.create_index("ix_audit_case_ref", ["case_ref", "seq"])
        batch.create_index("ix_audit_purpose_seq", ["purpose", "seq"])
        batch.create_index("ix_audit_legal_basis_seq", ["legal_basis", "seq"])
        batch.create_index("ix_audit_time", ["recorded_at", "seq"])
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(sa.Column("frontier", sa.LargeBinary(), nullable=True))
    op.create_table(
        "audit_tree",
        sa.Column("level", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("idx", _BIG, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", _BIG, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("signed_at", UtcDateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
    )
    op.create_table(
        "audit_cosignatures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tree_size", _BIG, nullable=False),
        sa.Column("witness_node", sa.String(2), nullable=False),
        sa.Column("cosigner", sa.String(200), nullable=False),
        sa.Column("cosigned_at", UtcDateTime(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_audit_cosignatures_size", "audit_cosignatures", ["tree_size", "witness_node"]
    )
    op.create_table(
        "witness_state",
        sa.Column("origin", sa.String(200), primary_key=True),
        sa.Column("node", sa.String(2), nullable=False),
        sa.Column("tree_size", _BIG, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "witness_forks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(200), nullable=False),
        sa.Column("node", sa.String(2), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detected_at", UtcDateTime(), nullable=False),
        sa.Column("reported_by", sa.String(2), nullable=True),
        sa.Column("cosigned_note", sa.Text(), nullable=False),
        sa.Column("presented_note", sa.Text(), nullable=False),
    )
    _build_tree_from_existing_entries()
    with op.batch_alter_table("audit_head") as batch:
        batch.alter_column("frontier", existing_type=sa.LargeBinary(), nullable=False)
    _forbid_changes()


def _build_tree_from_existing_entries() -> None:
    """Hash the entries written before this migration into the tree, in order."""
    bind = op.get_bind()
    tree = sa.table(
        "audit_tree", sa.column("level"), sa.column("idx"), sa.column("hash", sa.LargeBinary())
    )
    frontier: list[bytes] = []
    size = 0
    rows: list[dict[str, object]] = []
    for (entry,) in bind.execute(sa.text("SELECT entry FROM audit_log ORDER BY seq")):
        leaf = audit_tree.leaf_hash(entry.encode("utf-8"))
        for level, index, h in audit_tree.append_leaf(size, frontier, leaf):
            rows.append({"level": level, "idx": index, "hash": h})
        size += 1
    if rows:
        op.bulk_insert(tree, rows)
    bind.execute(
        sa.text("UPDATE audit_head SET size = :size, head_hash = :root, frontier = :frontier"),
        {
            "size": size,
            "root": audit_tree.fold(frontier).hex(),
            "frontier": audit_tree.pack(frontier),
        },
    )


def _forbid_changes() -> None:
    """Refuse UPDATE and DELETE on every log table, inside the database itself."""
    if op.get_bind().dialect.name == "sqlite":
        for table in APPEND_ONLY_TABLES:
            for action in ("UPDATE", "DELETE"):
                name = f"{table}_no_{action.lower()}"
                # audit_log's triggers went with the table SQLite rebuilt above.
                op.execute(f"DROP TRIGGER IF EXISTS {name}")
                op.execute(
                    f"CREATE TRIGGER {name} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )
        return
    op.execute(
        "CREATE FUNCTION puente_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
    )
    for table in APPEND_ONLY_TABLES[1:]:  # audit_log keeps its triggers from 0001
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION puente_log_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION puente_log_append_only()"
        )


def downgrade() -> None:
    raise NotImplementedError("the audit log is never dropped by a migration")
