"""session connections: what each port session carried

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 14:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_connections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=96), nullable=False),
        sa.Column("destination", sa.String(length=300), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.session_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("session_connections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_session_connections_session_id"), ["session_id"])


def downgrade() -> None:
    with op.batch_alter_table("session_connections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_connections_session_id"))
    op.drop_table("session_connections")
