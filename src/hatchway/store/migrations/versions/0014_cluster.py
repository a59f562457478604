"""scale-out: which replica relays each session, and which holds each node's control channel

Revision ID: 0014
Revises: 0012
Create Date: 2026-11-30 22:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("relay", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.create_index("ix_sessions_relay", ["relay"])
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("replica", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.create_index("ix_nodes_replica", ["replica"])


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index("ix_nodes_replica")
        batch_op.drop_column("replica")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_relay")
        batch_op.drop_column("relay")
