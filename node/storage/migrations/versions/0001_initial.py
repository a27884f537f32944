"""Initial schema: outbox, received messages, hash-chained append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from node.storage.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64
_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "disclosures",
        sa.Column("message_id", sa.String(36), primary_key=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sender_authority", sa.String(64), nullable=False),
        sa.Column("recipient_node", sa.String(2), nullable=False),
        sa.Column("recipient_authority", sa.String(64), nullable=False),
        sa.Column("doc_type", sa.String(40), nullable=False),
        sa.Column("schema_id", sa.String(200), nullable=False),
        sa.Column("case_ref", sa.String(80), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("envelope_sha256", sa.String(64), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("refusal_reason", sa.String(64), nullable=True),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.Column("receipt", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_disclosures_pending", "disclosures", ["state", "recipient_node", "next_attempt_at"]
    )
    op.create_table(
        "received_messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sender_node", sa.String(2), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("sender_authority", sa.String(64), nullable=False),
        sa.Column("recipient_authority", sa.String(64), nullable=False),
        sa.Column("doc_type", sa.String(40), nullable=False),
        sa.Column("schema_id", sa.String(200), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("envelope_sha256", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("receipt", sa.Text(), nullable=False),
        sa.UniqueConstraint("sender_node", "message_id", name="uq_received_sender_msg"),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", _BIG, primary_key=True, autoincrement=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=True),
        sa.Column("counterparty", sa.String(2), nullable=True),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_message", "audit_log", ["message_id"])
    op.create_index("ix_audit_counterparty_time", "audit_log", ["counterparty", "recorded_at"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("size", _BIG, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "size": 0, "head_hash": GENESIS_HASH}])
    _forbid_changes_to_audit_log()


def _forbid_changes_to_audit_log() -> None:
    """Refuse UPDATE and DELETE on the audit log inside the database itself."""
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{action.lower()} BEFORE {action} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )
        return
    op.execute(
        "CREATE FUNCTION puente_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION puente_audit_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION puente_audit_append_only()"
    )


def downgrade() -> None:
    raise NotImplementedError("the audit log is never dropped by a migration")
