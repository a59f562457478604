"""document versions and the preferences a session ran with

Revision ID: 0012
Revises: 0008
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("default_version", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column("latest_version", sa.Integer(), nullable=False, server_default="1")
        )
    op.create_table(
        "document_versions",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document_format", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_date", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["name"], ["documents.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    # The documents there are (the built-in ones, perhaps edited) become their version 1.
    bind = op.get_bind()
    documents = sa.table(
        "documents",
        sa.column("name", sa.String),
        sa.column("document_format", sa.String),
        sa.column("content", sa.Text),
        sa.column("created_date", sa.Float),
    )
    versions = sa.table(
        "document_versions",
        sa.column("name", sa.String),
        sa.column("version", sa.Integer),
        sa.column("document_format", sa.String),
        sa.column("content", sa.Text),
        sa.column("content_hash", sa.String),
        sa.column("created_date", sa.Float),
    )
    rows = bind.execute(sa.select(documents)).all()
    if rows:
        op.bulk_insert(
            versions,
            [
                {
                    "name": r.name,
                    "version": 1,
                    "document_format": r.document_format,
                    "content": r.content,
                    "content_hash": hashlib.sha256(r.content.encode()).hexdigest(),
                    "created_date": r.created_date,
                }
                for r in rows
            ],
        )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("preferences", sa.JSON(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("preferences")
    op.drop_table("document_versions")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("latest_version")
        batch_op.drop_column("default_version")
