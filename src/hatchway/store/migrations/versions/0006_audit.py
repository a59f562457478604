"""audit trail: hash-chained audit records and the chain's head

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("event_time", sa.Float(), nullable=False),
        sa.Column("event_name", sa.String(length=128), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("access_key_id", sa.String(length=32), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_event_time"), ["event_time"])
        batch_op.create_index(batch_op.f("ix_audit_events_event_name"), ["event_name"])
        batch_op.create_index(batch_op.f("ix_audit_events_username"), ["username"])
        batch_op.create_index(batch_op.f("ix_audit_events_access_key_id"), ["access_key_id"])
    op.create_table(
        "audit_event_resources",
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("sequence", "name"),
    )
    with op.batch_alter_table("audit_event_resources", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_resources_name"), ["name"])
    chain = op.create_table(
        "audit_chain",
        sa.Column("row_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("first_sequence", sa.BigInteger(), nullable=False),
        sa.Column("first_previous_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("row_id"),
    )
    op.bulk_insert(
        chain,
        [
            {
                "row_id": 1,
                "sequence": 0,
                "hash": GENESIS,
                "first_sequence": 1,
                "first_previous_hash": GENESIS,
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("audit_chain")
    with op.batch_alter_table("audit_event_resources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_resources_name"))
    op.drop_table("audit_event_resources")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_access_key_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_username"))
        batch_op.drop_index(batch_op.f("ix_audit_events_event_name"))
        batch_op.drop_index(batch_op.f("ix_audit_events_event_time"))
    op.drop_table("audit_events")
