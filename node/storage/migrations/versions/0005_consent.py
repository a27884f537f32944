"""Cases, consents, disclosure terms, encrypted received summaries, erasure receipts.

Also lets ``received_messages`` hold no clear body or envelope: a case summary
that arrives with disclosure terms is kept only encrypted under its own data
key (``received_summaries``), so that destroying the key erases it everywhere.

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from node.storage.models import UtcDateTime

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("received_messages") as batch:
        batch.alter_column("envelope", existing_type=sa.LargeBinary(), nullable=True)
        batch.alter_column("body", existing_type=sa.JSON(), nullable=True)
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String(36), primary_key=True),
        sa.Column("case_ref", sa.String(80), nullable=False, unique=True),
        sa.Column("authority", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
    )
    op.create_table(
        "consents",
        sa.Column("consent_id", sa.String(36), primary_key=True),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("valid_until", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
    )
    op.create_index("ix_consents_case_id", "consents", ["case_id"])
    op.create_table(
        "consent_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("consent_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("entry", sa.JSON(), nullable=False),
    )
    op.create_index("ix_consent_history_consent_id", "consent_history", ["consent_id"])
    op.create_table(
        "case_disclosures",
        sa.Column("message_id", sa.String(36), primary_key=True),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("consent_id", sa.String(36), nullable=True),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("legal_basis", sa.String(20), nullable=False),
        sa.Column("policy_id", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(16), nullable=False),
        sa.Column("policy_sha256", sa.String(64), nullable=False),
        sa.Column("agreements", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("retain_until", UtcDateTime(), nullable=False),
        sa.Column("review_required", sa.Boolean(), nullable=False),
        sa.Column("exception_id", sa.String(36), nullable=True),
        sa.Column("justification", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_case_disclosures_case_id", "case_disclosures", ["case_id"])
    op.create_index("ix_case_disclosures_consent_id", "case_disclosures", ["consent_id"])
    op.create_table(
        "withdrawal_notices",
        sa.Column("message_id", sa.String(36), primary_key=True),
        sa.Column("consent_id", sa.String(36), nullable=False),
        sa.Column("recipient_node", sa.String(2), nullable=False),
        sa.Column("recipient_authority", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_withdrawal_notices_consent_id", "withdrawal_notices", ["consent_id"])
    op.create_table(
        "erasure_receipts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("withdrawal_message_id", sa.String(36), nullable=False, unique=True),
        sa.Column("consent_id", sa.String(36), nullable=False),
        sa.Column("recipient_node", sa.String(2), nullable=False),
        sa.Column("receipt_message_id", sa.String(36), nullable=False),
        sa.Column("erased_at", UtcDateTime(), nullable=False),
        sa.Column("erased", sa.JSON(), nullable=False),
        sa.Column("not_held", sa.JSON(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_erasure_receipts_consent_id", "erasure_receipts", ["consent_id"])
    op.create_table(
        "summary_keys",
        sa.Column("key_id", sa.String(36), primary_key=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("destroyed_at", UtcDateTime(), nullable=True),
        sa.Column("destroyed_reason", sa.String(32), nullable=True),
    )
    op.create_table(
        "received_summaries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "received_message_id",
            sa.Integer(),
            sa.ForeignKey("received_messages.id"),
            nullable=False,
            unique=True,
        ),
        sa.Column("sender_node", sa.String(2), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("sender_authority", sa.String(64), nullable=False),
        sa.Column("recipient_authority", sa.String(64), nullable=False),
        sa.Column("doc_type", sa.String(40), nullable=False),
        sa.Column("case_ref", sa.String(80), nullable=False),
        sa.Column("consent_id", sa.String(36), nullable=True),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("legal_basis", sa.String(20), nullable=False),
        sa.Column("policy_id", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(16), nullable=False),
        sa.Column("review_required", sa.Boolean(), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("data_key_id", sa.String(36), nullable=False),
        sa.Column("body_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("envelope_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("retain_until", UtcDateTime(), nullable=False),
        sa.Column("erased_at", UtcDateTime(), nullable=True),
        sa.Column("erasure_reason", sa.String(32), nullable=True),
        sa.UniqueConstraint("sender_node", "message_id", name="uq_summary_sender_msg"),
    )
    op.create_index("ix_received_summaries_case_ref", "received_summaries", ["case_ref"])
    op.create_index("ix_received_summaries_consent_id", "received_summaries", ["consent_id"])
    op.create_index("ix_summaries_retention", "received_summaries", ["erased_at", "retain_until"])
    op.create_table(
        "consent_notices",
        sa.Column("origin_node", sa.String(2), primary_key=True),
        sa.Column("consent_id", sa.String(36), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("remaining", sa.JSON(), nullable=True),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("withdrawal_message_id", sa.String(36), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "case_addenda",
        sa.Column("addendum_id", sa.String(36), primary_key=True),
        sa.Column("case_ref", sa.String(80), nullable=False),
        sa.Column("origin_node", sa.String(2), nullable=False),
        sa.Column("authority", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("interview", sa.JSON(), nullable=False),
        sa.Column("shared_message_id", sa.String(36), nullable=True),
    )
    op.create_index("ix_case_addenda_case_ref", "case_addenda", ["case_ref"])


def downgrade() -> None:
    for index, table in (
        ("ix_case_addenda_case_ref", "case_addenda"),
        ("ix_summaries_retention", "received_summaries"),
        ("ix_received_summaries_consent_id", "received_summaries"),
        ("ix_received_summaries_case_ref", "received_summaries"),
        ("ix_erasure_receipts_consent_id", "erasure_receipts"),
        ("ix_withdrawal_notices_consent_id", "withdrawal_notices"),
        ("ix_case_disclosures_consent_id", "case_disclosures"),
        ("ix_case_disclosures_case_id", "case_disclosures"),
        ("ix_consent_history_consent_id", "consent_history"),
        ("ix_consents_case_id", "consents"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "case_addenda",
        "consent_notices",
        "received_summaries",
        "summary_keys",
        "erasure_receipts",
        "withdrawal_notices",
        "case_disclosures",
        "consent_history",
        "consents",
        "cases",
    ):
        op.drop_table(table)
