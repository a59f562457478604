"""live log streams: log groups, one stream per session, and their events (CloudWatch Logs' role)

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# 64-bit ids on PostgreSQL; SQLite's INTEGER PRIMARY KEY (its rowid) is 64-bit already, and only
# that spelling autoincrements there.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "log_groups",
        sa.Column("group_id", _ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("group_id"),
        sa.UniqueConstraint("name", name="uq_log_groups_name"),
    )
    op.create_table(
        "log_streams",
        sa.Column("stream_id", _ID, autoincrement=True, nullable=False),
        sa.Column("group_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("first_event_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_event_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_ingestion_ms", sa.BigInteger(), nullable=True),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
        sa.Column("dropped_bytes", sa.BigInteger(), nullable=False),
        sa.Column("next_sequence", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["group_id"], ["log_groups.group_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stream_id"),
        sa.UniqueConstraint("group_id", "name", name="uq_log_streams_group_name"),
    )
    with op.batch_alter_table("log_streams", schema=None) as batch_op:
        batch_op.create_index("ix_log_streams_open", ["ended_at"])
    op.create_table(
        "log_events",
        sa.Column("event_id", _ID, autoincrement=True, nullable=False),
        sa.Column("group_id", _ID, nullable=False),
        sa.Column("stream_id", _ID, nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("ingestion_ms", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["log_groups.group_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["stream_id"], ["log_streams.stream_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("log_events", schema=None) as batch_op:
        batch_op.create_index("ix_log_events_stream", ["stream_id", "event_id"])
        batch_op.create_index("ix_log_events_group", ["group_id", "event_id"])
        batch_op.create_index("ix_log_events_age", ["group_id", "timestamp_ms"])


def downgrade() -> None:
    with op.batch_alter_table("log_events", schema=None) as batch_op:
        batch_op.drop_index("ix_log_events_age")
        batch_op.drop_index("ix_log_events_group")
        batch_op.drop_index("ix_log_events_stream")
    op.drop_table("log_events")
    with op.batch_alter_table("log_streams", schema=None) as batch_op:
        batch_op.drop_index("ix_log_streams_open")
    op.drop_table("log_streams")
    op.drop_table("log_groups")
