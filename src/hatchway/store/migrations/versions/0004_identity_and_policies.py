"""identity and access control: groups, managed and inline policies, user tags and passwords

Every user that exists before this migration was an administrator (no operation checked who
called it), so each gets the built-in AdministratorAccess policy attached: nobody loses access
by upgrading.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 12:00:00.000000
"""

from __future__ import annotations

import hashlib
import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# AdministratorAccess as this release ships it (server/builtin_policies/AdministratorAccess.json);
# the server refreshes built-in documents at start, so a later release changes them there.
_ADMIN_NAME = "AdministratorAccess"
_ADMIN_ARN = "arn:aws:iam::aws:policy/AdministratorAccess"
_ADMIN_ID = "ANPA" + hashlib.sha256(_ADMIN_NAME.encode()).hexdigest()[:16].upper()
_ADMIN_DOCUMENT = """{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "Everything",
      "Effect": "Allow",
      "Action": "*",
      "Resource": "*"
    }
  ]
}
"""


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("path", sa.String(length=512), nullable=False, server_default="/")
        )
        batch_op.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("password_hash", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("password_last_used_at", sa.Float(), nullable=True))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner_id", sa.String(length=32), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("source_ip", sa.String(length=64), nullable=False, server_default="")
        )
    op.create_table(
        "iam_groups",
        sa.Column("group_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("group_id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["iam_groups.group_id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"]),
        sa.PrimaryKeyConstraint("group_id", "user_id"),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"])
    policies = op.create_table(
        "policies",
        sa.Column("policy_id", sa.String(length=32), nullable=False),
        sa.Column("arn", sa.String(length=1024), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("default_version_id", sa.String(length=16), nullable=False),
        sa.Column("next_version", sa.Integer(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("policy_id"),
        sa.UniqueConstraint("arn"),
    )
    versions = op.create_table(
        "policy_versions",
        sa.Column("policy_id", sa.String(length=32), nullable=False),
        sa.Column("version_id", sa.String(length=16), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["policy_id"], ["policies.policy_id"]),
        sa.PrimaryKeyConstraint("policy_id", "version_id"),
    )
    for owner, table in (("user", "users"), ("group", "iam_groups")):
        op.create_table(
            f"{owner}_policy_attachments",
            sa.Column(f"{owner}_id", sa.String(length=32), nullable=False),
            sa.Column("policy_id", sa.String(length=32), nullable=False),
            sa.ForeignKeyConstraint([f"{owner}_id"], [f"{table}.{owner}_id"]),
            sa.ForeignKeyConstraint(["policy_id"], ["policies.policy_id"]),
            sa.PrimaryKeyConstraint(f"{owner}_id", "policy_id"),
        )
        op.create_index(
            f"ix_{owner}_policy_attachments_policy_id",
            f"{owner}_policy_attachments",
            ["policy_id"],
        )
        op.create_table(
            f"{owner}_inline_policies",
            sa.Column(f"{owner}_id", sa.String(length=32), nullable=False),
            sa.Column("name", sa.String(length=128), nullable=False),
            sa.Column("document", sa.Text(), nullable=False),
            sa.ForeignKeyConstraint([f"{owner}_id"], [f"{table}.{owner}_id"]),
            sa.PrimaryKeyConstraint(f"{owner}_id", "name"),
        )
    generation = op.create_table(
        "iam_generation",
        sa.Column("row_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("row_id"),
    )
    op.bulk_insert(generation, [{"row_id": 1, "generation": 1}])

    now = time.time()
    op.bulk_insert(
        policies,
        [
            {
                "policy_id": _ADMIN_ID,
                "arn": _ADMIN_ARN,
                "name": _ADMIN_NAME,
                "path": "/",
                "description": "Full access to every Hatchway operation and node.",
                "default_version_id": "v1",
                "next_version": 2,
                "builtin": True,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    op.bulk_insert(
        versions,
        [
            {
                "policy_id": _ADMIN_ID,
                "version_id": "v1",
                "document": _ADMIN_DOCUMENT,
                "created_at": now,
            }
        ],
    )
    op.execute(
        sa.text(
            "INSERT INTO user_policy_attachments (user_id, policy_id) "
            "SELECT user_id, :policy_id FROM users"
        ).bindparams(policy_id=_ADMIN_ID)
    )


def downgrade() -> None:
    op.drop_table("iam_generation")
    for owner in ("group", "user"):
        op.drop_table(f"{owner}_inline_policies")
        op.drop_index(f"ix_{owner}_policy_attachments_policy_id", f"{owner}_policy_attachments")
        op.drop_table(f"{owner}_policy_attachments")
    op.drop_table("policy_versions")
    op.drop_table("policies")
    op.drop_index("ix_group_members_user_id", "group_members")
    op.drop_table("group_members")
    op.drop_table("iam_groups")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("source_ip")
        batch_op.drop_column("owner_id")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_last_used_at")
        batch_op.drop_column("password_hash")
        batch_op.drop_column("tags")
        batch_op.drop_column("path")
