"""recordings: one row per recorded session (asciicast v2, local or S3)

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("session_id", sa.String(length=96), nullable=False),
        sa.Column("storage", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=1024), nullable=False),
        sa.Column("spool_path", sa.String(length=1024), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("upload_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.session_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id"),
    )
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recordings_state"), ["state"])


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recordings_state"))
    op.drop_table("recordings")
