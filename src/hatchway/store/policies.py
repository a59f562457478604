"""The policy repository: managed policies and their versions, their attachments to users
and groups, and inline policies.

Every change runs in :meth:`_Repository._change` (the IAM generation bumped first, as in
``store.identity``); the errors are IAM's, raised inside the transaction.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncConnection

from hatchway.errors import (
    Conflict,
    DeleteConflict,
    EntityAlreadyExists,
    LimitExceeded,
    NoSuchEntity,
    UnmodifiableEntity,
)
from hatchway.store import schema as t
from hatchway.store.identity import (
    count_of,
    group_id_named,
    no_policy,
    scalar_of,
    user_id_named,
)
from hatchway.store.records import ManagedPolicy, PolicyVersion
from hatchway.store.repositories import _Repository

POLICIES_PER_OWNER = 10
"""Managed policies attached to one user or group (IAM's default quota)."""
VERSIONS_PER_POLICY = 5


class Owner(StrEnum):
    """Who a policy is attached to or embedded in."""

    USER = "user"
    GROUP = "group"


class PolicyScope(StrEnum):
    """ListPolicies' ``Scope``: built-in (``AWS``), the installation's own (``Local``), or all."""

    ALL = "All"
    AWS = "AWS"
    LOCAL = "Local"


async def _owner_id(conn: AsyncConnection, owner: Owner, name: str) -> str:
    return await (user_id_named(conn, name) if owner is Owner.USER else group_id_named(conn, name))


def _attachments(owner: Owner) -> Table:
    return t.user_policy_attachments if owner is Owner.USER else t.group_policy_attachments


def _inline(owner: Owner) -> Table:
    return t.user_inline_policies if owner is Owner.USER else t.group_inline_policies


def _owner_column(table: Table, owner: Owner) -> Any:
    return table.c.user_id if owner is Owner.USER else table.c.group_id


class PolicyRepository(_Repository):
    """Managed policies and their versions, attachments, and inline policies."""

    @staticmethod
    def _policies() -> Any:
        p = t.policies.c
        attached = [
            select(func.count())
            .select_from(table)
            .where(table.c.policy_id == p.policy_id)
            .scalar_subquery()
            for table in (t.user_policy_attachments, t.group_policy_attachments)
        ]
        return select(
            p.policy_id,
            p.arn,
            p.name,
            p.path,
            p.description,
            p.default_version_id,
            p.builtin,
            p.created_at,
            p.updated_at,
            (attached[0] + attached[1]).label("attachment_count"),
        ).order_by(p.name, p.arn)

    @staticmethod
    def _policy(row: Any) -> ManagedPolicy:
        m = dict(row._mapping)
        m["attachment_count"] = int(m["attachment_count"])
        m["builtin"] = bool(m["builtin"])
        return ManagedPolicy(**m)

    async def get(self, arn: str) -> ManagedPolicy | None:
        rows = await self._fetch(self._policies().where(t.policies.c.arn == arn))
        return self._policy(rows[0]) if rows else None

    async def listing(
        self, *, scope: PolicyScope = PolicyScope.ALL, only_attached: bool = False
    ) -> list[ManagedPolicy]:
        """Managed policies by name: built-in ones (``AWS``), local ones, or all."""
        stmt = self._policies()
        if scope is PolicyScope.AWS:
            stmt = stmt.where(t.policies.c.builtin.is_(True))
        elif scope is PolicyScope.LOCAL:
            stmt = stmt.where(t.policies.c.builtin.is_(False))
        policies = [self._policy(r) for r in await self._fetch(stmt)]
        return [p for p in policies if p.attachment_count or not only_attached]

    async def create(self, policy: ManagedPolicy, document: str) -> None:
        """Insert the policy with ``document`` as its version ``v1`` (the default).

        Raises ``EntityAlreadyExists`` when the ARN is taken.
        """
        async with self._change() as conn:
            if await count_of(conn, t.policies, t.policies.c.arn == policy.arn):
                raise EntityAlreadyExists(
                    f"A policy called {policy.name} already exists. "
                    "Duplicate names are not allowed."
                )
            await self._insert(conn, policy, document)

    @staticmethod
    async def _insert(conn: AsyncConnection, policy: ManagedPolicy, document: str) -> None:
        await conn.execute(
            insert(t.policies).values(
                policy_id=policy.policy_id,
                arn=policy.arn,
                name=policy.name,
                path=policy.path,
                description=policy.description,
                default_version_id="v1",
                next_version=2,
                builtin=policy.builtin,
                created_at=policy.created_at,
                updated_at=policy.updated_at,
            )
        )
        await conn.execute(
            insert(t.policy_versions).values(
                policy_id=policy.policy_id,
                version_id="v1",
                document=document,
                created_at=policy.created_at,
            )
        )

    async def ensure_builtin(self, policy: ManagedPolicy, document: str, now: float) -> bool:
        """Insert a built-in policy, or bring its document up to this release's; returns
        whether anything changed (a change bumps the generation)."""
        p, v = t.policies.c, t.policy_versions.c
        current = await self._fetch(
            select(v.document)
            .join(t.policies, p.policy_id == v.policy_id)
            .where(p.arn == policy.arn, v.version_id == p.default_version_id)
        )
        if current and current[0][0] == document:
            return False
        try:
            async with self._change() as conn:
                policy_id = await scalar_of(conn, select(p.policy_id).where(p.arn == policy.arn))
                if policy_id is None:
                    await self._insert(conn, policy, document)
                    return True
                await conn.execute(
                    sql_update(t.policy_versions)
                    .where(v.policy_id == policy_id)
                    .values(document=document)
                )
                await conn.execute(
                    sql_update(t.policies)
                    .where(p.policy_id == policy_id)
                    .values(description=policy.description, updated_at=now)
                )
                return True
        except Conflict:  # another replica inserted it first
            return False

    async def delete(self, arn: str) -> None:
        """Delete a local policy and all its versions.

        Raises:
            NoSuchEntity: no such policy.
            UnmodifiableEntity: a built-in policy.
            DeleteConflict: it is attached to a user or group.
        """
        async with self._change() as conn:
            policy_id = await self._local_policy(conn, arn)
            for table in (t.user_policy_attachments, t.group_policy_attachments):
                if await count_of(conn, table, table.c.policy_id == policy_id):
                    raise DeleteConflict("Cannot delete a policy attached to entities.")
            await conn.execute(
                delete(t.policy_versions).where(t.policy_versions.c.policy_id == policy_id)
            )
            await conn.execute(delete(t.policies).where(t.policies.c.policy_id == policy_id))

    @staticmethod
    async def _policy_id(conn: AsyncConnection, arn: str) -> str:
        policy_id = await scalar_of(
            conn, select(t.policies.c.policy_id).where(t.policies.c.arn == arn)
        )
        if policy_id is None:
            raise no_policy(arn)
        return str(policy_id)

    @staticmethod
    async def _local_policy(conn: AsyncConnection, arn: str) -> str:
        p = t.policies.c
        row = (await conn.execute(select(p.policy_id, p.builtin).where(p.arn == arn))).first()
        if row is None:
            raise no_policy(arn)
        if row[1]:
            raise UnmodifiableEntity(f"Policy {arn} is built in and cannot be changed.")
        return str(row[0])

    # ---- versions ----------------------------------------------------------------------------

    async def versions(self, arn: str) -> list[PolicyVersion]:
        """The policy's versions, newest first. Raises ``NoSuchEntity``."""
        p, v = t.policies.c, t.policy_versions.c
        async with self._snapshot() as conn:
            row = (
                await conn.execute(select(p.policy_id, p.default_version_id).where(p.arn == arn))
            ).first()
            if row is None:
                raise no_policy(arn)
            policy_id, default = row
            rows = (
                await conn.execute(
                    select(v.version_id, v.document, v.created_at).where(v.policy_id == policy_id)
                )
            ).all()
        versions = [PolicyVersion(vid, doc, at, vid == default) for vid, doc, at in rows]
        return sorted(versions, key=lambda pv: int(pv.version_id[1:]), reverse=True)

    async def version(self, arn: str, version_id: str) -> PolicyVersion:
        """Raises ``NoSuchEntity`` (no such policy or version)."""
        for version in await self.versions(arn):
            if version.version_id == version_id:
                return version
        raise NoSuchEntity(
            f"Policy {arn} version {version_id} does not exist or is not attachable."
        )

    async def create_version(
        self, arn: str, document: str, *, set_default: bool, now: float
    ) -> PolicyVersion:
        """Add the next version (``v<n>``, never reused), the default one if ``set_default``.

        Raises:
            NoSuchEntity: no such policy.
            UnmodifiableEntity: a built-in policy.
            LimitExceeded: the policy has 5 versions already.
        """
        p, v = t.policies.c, t.policy_versions.c
        async with self._change() as conn:
            policy_id = await self._local_policy(conn, arn)
            if (
                await count_of(conn, t.policy_versions, v.policy_id == policy_id)
                >= VERSIONS_PER_POLICY
            ):
                raise LimitExceeded(
                    f"A managed policy can have up to {VERSIONS_PER_POLICY} versions. Before you "
                    "create a new version, you must delete an existing version."
                )
            number = int(
                await scalar_of(conn, select(p.next_version).where(p.policy_id == policy_id))
            )
            version_id = f"v{number}"
            values: dict[str, Any] = {"next_version": number + 1, "updated_at": now}
            if set_default:
                values["default_version_id"] = version_id
            await conn.execute(
                sql_update(t.policies).where(p.policy_id == policy_id).values(**values)
            )
            await conn.execute(
                insert(t.policy_versions).values(
                    policy_id=policy_id, version_id=version_id, document=document, created_at=now
                )
            )
        return PolicyVersion(version_id, document, now, set_default)

    async def set_default_version(self, arn: str, version_id: str, now: float) -> None:
        """Raises ``NoSuchEntity`` (policy or version) or ``UnmodifiableEntity`` (built-in)."""
        p, v = t.policies.c, t.policy_versions.c
        async with self._change() as conn:
            policy_id = await self._local_policy(conn, arn)
            if not await count_of(
                conn, t.policy_versions, v.policy_id == policy_id, v.version_id == version_id
            ):
                raise NoSuchEntity(f"Policy {arn} version {version_id} does not exist.")
            await conn.execute(
                sql_update(t.policies)
                .where(p.policy_id == policy_id)
                .values(default_version_id=version_id, updated_at=now)
            )

    async def delete_version(self, arn: str, version_id: str) -> None:
        """Raises ``NoSuchEntity``, ``UnmodifiableEntity`` (built-in) or ``DeleteConflict``
        (the default version, as IAM)."""
        p, v = t.policies.c, t.policy_versions.c
        async with self._change() as conn:
            policy_id = await self._local_policy(conn, arn)
            default = await scalar_of(
                conn, select(p.default_version_id).where(p.policy_id == policy_id)
            )
            if default == version_id:
                raise DeleteConflict("Cannot delete the default version of a policy.")
            stmt = delete(t.policy_versions).where(
                v.policy_id == policy_id, v.version_id == version_id
            )
            if (await conn.execute(stmt)).rowcount != 1:
                raise NoSuchEntity(f"Policy {arn} version {version_id} does not exist.")

    # ---- attachments --------------------------------------------------------------------------

    async def attach(self, owner: Owner, name: str, arn: str) -> None:
        """Attach the managed policy (no error if it is attached already).

        Raises:
            NoSuchEntity: no such user, group or policy.
            LimitExceeded: 10 managed policies are attached already.
        """
        table = _attachments(owner)
        column = _owner_column(table, owner)
        async with self._change() as conn:
            owner_id = await _owner_id(conn, owner, name)
            policy_id = await self._policy_id(conn, arn)
            if await count_of(conn, table, column == owner_id, table.c.policy_id == policy_id):
                return
            if await count_of(conn, table, column == owner_id) >= POLICIES_PER_OWNER:
                quota = "PoliciesPerUser" if owner is Owner.USER else "PoliciesPerGroup"
                raise LimitExceeded(f"Cannot exceed quota for {quota}: {POLICIES_PER_OWNER}")
            await conn.execute(
                insert(table).values({column.name: owner_id, "policy_id": policy_id})
            )

    async def detach(self, owner: Owner, name: str, arn: str) -> None:
        """Raises ``NoSuchEntity``: no such user, group or policy, or it is not attached."""
        table = _attachments(owner)
        column = _owner_column(table, owner)
        async with self._change() as conn:
            owner_id = await _owner_id(conn, owner, name)
            policy_id = await self._policy_id(conn, arn)
            stmt = delete(table).where(column == owner_id, table.c.policy_id == policy_id)
            if (await conn.execute(stmt)).rowcount != 1:
                raise NoSuchEntity(f"Policy {arn} was not found.")

    async def attached(self, owner: Owner, name: str) -> list[ManagedPolicy]:
        """The managed policies attached to the user or group, by name. ``NoSuchEntity``."""
        table = _attachments(owner)
        column = _owner_column(table, owner)
        async with self._snapshot() as conn:
            owner_id = await _owner_id(conn, owner, name)
            stmt = self._policies().where(
                t.policies.c.policy_id.in_(select(table.c.policy_id).where(column == owner_id))
            )
            return [self._policy(r) for r in (await conn.execute(stmt)).all()]

    # ---- inline policies ----------------------------------------------------------------------

    async def put_inline(self, owner: Owner, name: str, policy_name: str, document: str) -> None:
        """Create or replace an inline policy. Raises ``NoSuchEntity`` (no such owner)."""
        table = _inline(owner)
        column = _owner_column(table, owner)
        async with self._change() as conn:
            owner_id = await _owner_id(conn, owner, name)
            changed = await conn.execute(
                sql_update(table)
                .where(column == owner_id, table.c.name == policy_name)
                .values(document=document)
            )
            if changed.rowcount != 1:
                await conn.execute(
                    insert(table).values(
                        {column.name: owner_id, "name": policy_name, "document": document}
                    )
                )

    async def inline(self, owner: Owner, name: str, policy_name: str) -> str:
        """An inline policy's document. Raises ``NoSuchEntity``."""
        table = _inline(owner)
        column = _owner_column(table, owner)
        async with self._snapshot() as conn:
            owner_id = await _owner_id(conn, owner, name)
            document = await scalar_of(
                conn,
                select(table.c.document).where(column == owner_id, table.c.name == policy_name),
            )
        if document is None:
            raise NoSuchEntity(f"The {owner} policy with name {policy_name} cannot be found.")
        return str(document)

    async def delete_inline(self, owner: Owner, name: str, policy_name: str) -> None:
        """Raises ``NoSuchEntity``."""
        table = _inline(owner)
        column = _owner_column(table, owner)
        async with self._change() as conn:
            owner_id = await _owner_id(conn, owner, name)
            stmt = delete(table).where(column == owner_id, table.c.name == policy_name)
            if (await conn.execute(stmt)).rowcount != 1:
                raise NoSuchEntity(f"The {owner} policy with name {policy_name} cannot be found.")

    async def inline_names(self, owner: Owner, name: str) -> list[str]:
        """The names of the owner's inline policies, sorted. Raises ``NoSuchEntity``."""
        table = _inline(owner)
        column = _owner_column(table, owner)
        async with self._snapshot() as conn:
            owner_id = await _owner_id(conn, owner, name)
            rows = await conn.execute(
                select(table.c.name).where(column == owner_id).order_by(table.c.name)
            )
            return [str(r[0]) for r in rows.all()]


__all__ = ["Owner", "PolicyRepository", "PolicyScope"]
