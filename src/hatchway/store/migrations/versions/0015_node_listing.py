"""node and activation listings: the indexes DescribeInstanceInformation and
DescribeActivations page along

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 22:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keyset paging reads ``WHERE (registration_date, instance_id) > last ORDER BY both LIMIT n``
    # (``NodeRepository.page``): from this index, a page costs the same at any depth.
    op.create_index("ix_nodes_listing", "nodes", ["registration_date", "instance_id"])
    op.create_index("ix_activations_listing", "activations", ["created_date", "activation_id"])


def downgrade() -> None:
    op.drop_index("ix_activations_listing", table_name="activations")
    op.drop_index("ix_nodes_listing", table_name="nodes")
