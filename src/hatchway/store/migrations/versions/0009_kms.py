"""key service: KMS keys (material encrypted under the master key), aliases, and the wrapped
data key of each encrypted recording

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kms_keys",
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("arn", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("key_state", sa.String(length=32), nullable=False),
        sa.Column("key_usage", sa.String(length=32), nullable=False),
        sa.Column("key_spec", sa.String(length=32), nullable=False),
        sa.Column("material_encrypted", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("creation_date", sa.Float(), nullable=False),
        sa.Column("deletion_date", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "kms_aliases",
        sa.Column("alias_name", sa.String(length=256), nullable=False),
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("creation_date", sa.Float(), nullable=False),
        sa.Column("last_updated_date", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["kms_keys.key_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("alias_name"),
    )
    with op.batch_alter_table("kms_aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kms_aliases_key_id"), ["key_id"])
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kms_key_arn", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("wrapped_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_column("wrapped_key")
        batch_op.drop_column("kms_key_arn")
    with op.batch_alter_table("kms_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kms_aliases_key_id"))
    op.drop_table("kms_aliases")
    op.drop_table("kms_keys")
