"""event notifications: webhook subscriptions, the event outbox and the delivery log

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-30 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_subscriptions",
        sa.Column("subscription_id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id"),
    )
    op.create_table(
        "event_outbox",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "event_deliveries",
        sa.Column("delivery_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=True),
        sa.Column("last_attempt_at", sa.Float(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=512), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["event_subscriptions.subscription_id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["event_id"], ["event_outbox.event_id"]),
        sa.PrimaryKeyConstraint("delivery_id"),
    )
    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_event_deliveries_event_id", ["event_id"])
        batch_op.create_index(
            "ix_event_deliveries_queue", ["status", "subscription_id", "delivery_id"]
        )
        batch_op.create_index(
            "ix_event_deliveries_subscription", ["subscription_id", "delivery_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_event_deliveries_subscription")
        batch_op.drop_index("ix_event_deliveries_queue")
        batch_op.drop_index("ix_event_deliveries_event_id")
    op.drop_table("event_deliveries")
    op.drop_table("event_outbox")
    op.drop_table("event_subscriptions")
