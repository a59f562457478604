"""Identity and policy repositories: users, groups, access keys, managed and inline policies.

Every change runs in :meth:`_Repository._change`: it bumps the IAM generation first, so these
changes take turns (on every replica) and each one's checks — a user's key count, a group's
members, a policy's attachments — hold until it commits. The errors are IAM's
(``NoSuchEntity``, ``EntityAlreadyExists``, ``DeleteConflict``, ``LimitExceeded``,
``UnmodifiableEntity``), raised inside the transaction so nothing is half done.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import Table, and_, delete, func, insert, literal_column, select, union_all
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
from hatchway.store.records import (
    AccessKey,
    Group,
    KeyStatus,
    ManagedPolicy,
    PolicyVersion,
    StoredPolicy,
    User,
)
from hatchway.store.repositories import _Repository

ACCESS_KEYS_PER_USER = 2
"""IAM's quota, counting inactive keys too."""
GROUPS_PER_USER = 10
POLICIES_PER_OWNER = 10
"""Managed policies attached to one user or group (IAM's default quota)."""
TAGS_PER_USER = 50
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


def _user(row: Any) -> User:
    m = dict(row._mapping)
    m["tags"] = dict(m["tags"] or {})
    return User(**m)


def _group(row: Any) -> Group:
    return Group(**row._mapping)


def _no_user(name: str) -> NoSuchEntity:
    return NoSuchEntity(f"The user with name {name} cannot be found.")


def _no_group(name: str) -> NoSuchEntity:
    return NoSuchEntity(f"The group with name {name} cannot be found.")


def _no_policy(arn: str) -> NoSuchEntity:
    return NoSuchEntity(f"Policy {arn} does not exist or is not attachable.")


async def _scalar(conn: AsyncConnection, stmt: Any) -> Any:
    row = (await conn.execute(stmt)).first()
    return None if row is None else row[0]


async def _count(conn: AsyncConnection, table: Table, *where: Any) -> int:
    return int(await _scalar(conn, select(func.count()).select_from(table).where(*where)) or 0)


async def _user_id(conn: AsyncConnection, name: str) -> str:
    user_id = await _scalar(conn, select(t.users.c.user_id).where(t.users.c.name == name))
    if user_id is None:
        raise _no_user(name)
    return str(user_id)


async def _group_id(conn: AsyncConnection, name: str) -> str:
    group_id = await _scalar(
        conn, select(t.iam_groups.c.group_id).where(t.iam_groups.c.name == name)
    )
    if group_id is None:
        raise _no_group(name)
    return str(group_id)


async def _owner_id(conn: AsyncConnection, owner: Owner, name: str) -> str:
    return await (_user_id(conn, name) if owner is Owner.USER else _group_id(conn, name))


def _attachments(owner: Owner) -> Table:
    return t.user_policy_attachments if owner is Owner.USER else t.group_policy_attachments


def _inline(owner: Owner) -> Table:
    return t.user_inline_policies if owner is Owner.USER else t.group_inline_policies


def _owner_column(table: Table, owner: Owner) -> Any:
    return table.c.user_id if owner is Owner.USER else table.c.group_id


class IdentityRepository(_Repository):
    """Users (with tags and passwords), groups and memberships, access keys; what applies to
    a user (:meth:`policies_for`) and the IAM generation."""

    # ---- users ----------------------------------------------------------------------------

    async def user_by_name(self, name: str) -> User | None:
        rows = await self._fetch(select(t.users).where(t.users.c.name == name))
        return _user(rows[0]) if rows else None

    async def user(self, user_id: str) -> User | None:
        rows = await self._fetch(select(t.users).where(t.users.c.user_id == user_id))
        return _user(rows[0]) if rows else None

    async def users(self) -> list[User]:
        """Every user, by name."""
        return [_user(r) for r in await self._fetch(select(t.users).order_by(t.users.c.name))]

    async def create_user(self, user: User, *, attach: Collection[str] = ()) -> None:
        """Insert the user with the managed policies ``attach`` (ARNs), in one transaction.

        Raises:
            EntityAlreadyExists: the name is taken.
            NoSuchEntity: a policy of ``attach`` does not exist (nothing is written).
        """
        try:
            async with self._change() as conn:
                if await _count(conn, t.users, t.users.c.name == user.name):
                    raise EntityAlreadyExists(f"User with name {user.name} already exists.")
                values = {name: getattr(user, name) for name in User.__slots__}
                await conn.execute(insert(t.users).values(**values))
                for arn in attach:
                    policy_id = await _scalar(
                        conn, select(t.policies.c.policy_id).where(t.policies.c.arn == arn)
                    )
                    if policy_id is None:
                        raise _no_policy(arn)
                    await conn.execute(
                        insert(t.user_policy_attachments).values(
                            user_id=user.user_id, policy_id=policy_id
                        )
                    )
        except EntityAlreadyExists:
            raise
        except Conflict as exc:  # the same id (or name) inserted by a racing non-IAM writer
            raise EntityAlreadyExists(f"User with name {user.name} already exists.") from exc

    async def delete_user(self, name: str) -> None:
        """Delete a user that holds nothing, as IAM does.

        Raises:
            NoSuchEntity: no such user.
            DeleteConflict: the user still has access keys, a password (login profile), group
                memberships, or attached or inline policies.
        """
        async with self._change() as conn:
            user_id = await _user_id(conn, name)
            if await _count(conn, t.access_keys, t.access_keys.c.user_id == user_id):
                raise DeleteConflict("Cannot delete entity, must delete access keys first.")
            if await _scalar(
                conn, select(t.users.c.password_hash).where(t.users.c.user_id == user_id)
            ):
                raise DeleteConflict("Cannot delete entity, must delete login profile first.")
            if await _count(conn, t.group_members, t.group_members.c.user_id == user_id):
                raise DeleteConflict(
                    "Cannot delete entity, must remove user from all groups first."
                )
            if await _count(
                conn, t.user_policy_attachments, t.user_policy_attachments.c.user_id == user_id
            ):
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if await _count(
                conn, t.user_inline_policies, t.user_inline_policies.c.user_id == user_id
            ):
                raise DeleteConflict("Cannot delete entity, must delete policies first.")
            await conn.execute(delete(t.users).where(t.users.c.user_id == user_id))

    async def update_user_tags(
        self, name: str, add: Mapping[str, str], remove: Collection[str]
    ) -> dict[str, str]:
        """Remove the keys ``remove``, then set ``add``; returns the user's tags after.

        Raises:
            NoSuchEntity: no such user.
            LimitExceeded: the user would have more than 50 tags (nothing changes).
        """
        async with self._change() as conn:
            row = (await conn.execute(select(t.users.c.tags).where(t.users.c.name == name))).first()
            if row is None:
                raise _no_user(name)
            tags = {k: v for k, v in dict(row[0] or {}).items() if k not in remove}
            tags.update(add)
            if len(tags) > TAGS_PER_USER:
                raise LimitExceeded(f"Cannot exceed quota for TagsPerUser: {TAGS_PER_USER}")
            await conn.execute(sql_update(t.users).where(t.users.c.name == name).values(tags=tags))
        return tags

    async def set_password(self, name: str, password_hash: str | None) -> None:
        """Set (or with ``None`` delete) the user's console password hash.

        Raises:
            NoSuchEntity: no such user; or, deleting, the user has no password.
        """
        async with self._change() as conn:
            user_id = await _user_id(conn, name)
            c = t.users.c
            stmt = sql_update(t.users).where(c.user_id == user_id)
            if password_hash is None:
                stmt = stmt.where(c.password_hash.is_not(None))
            if (await conn.execute(stmt.values(password_hash=password_hash))).rowcount != 1:
                raise NoSuchEntity(f"Login Profile for User {name} cannot be found.")

    # ---- groups ---------------------------------------------------------------------------

    async def group_by_name(self, name: str) -> Group | None:
        rows = await self._fetch(select(t.iam_groups).where(t.iam_groups.c.name == name))
        return _group(rows[0]) if rows else None

    async def groups(self) -> list[Group]:
        """Every group, by name."""
        stmt = select(t.iam_groups).order_by(t.iam_groups.c.name)
        return [_group(r) for r in await self._fetch(stmt)]

    async def create_group(self, group: Group) -> None:
        """Raises ``EntityAlreadyExists`` when the name is taken."""
        async with self._change() as conn:
            if await _count(conn, t.iam_groups, t.iam_groups.c.name == group.name):
                raise EntityAlreadyExists(f"Group with name {group.name} already exists.")
            values = {name: getattr(group, name) for name in Group.__slots__}
            await conn.execute(insert(t.iam_groups).values(**values))

    async def delete_group(self, name: str) -> None:
        """Delete an empty group with no policies.

        Raises:
            NoSuchEntity: no such group.
            DeleteConflict: it still has members, or attached or inline policies.
        """
        async with self._change() as conn:
            group_id = await _group_id(conn, name)
            if await _count(conn, t.group_members, t.group_members.c.group_id == group_id):
                raise DeleteConflict("Cannot delete entity, must remove users from group first.")
            if await _count(
                conn, t.group_policy_attachments, t.group_policy_attachments.c.group_id == group_id
            ):
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if await _count(
                conn, t.group_inline_policies, t.group_inline_policies.c.group_id == group_id
            ):
                raise DeleteConflict("Cannot delete entity, must delete policies first.")
            await conn.execute(delete(t.iam_groups).where(t.iam_groups.c.group_id == group_id))

    async def add_member(self, group_name: str, user_name: str) -> None:
        """Add the user to the group (no error if it is a member already).

        Raises:
            NoSuchEntity: no such group or user.
            LimitExceeded: the user is in 10 groups already.
        """
        async with self._change() as conn:
            group_id = await _group_id(conn, group_name)
            user_id = await _user_id(conn, user_name)
            m = t.group_members.c
            if await _count(conn, t.group_members, m.group_id == group_id, m.user_id == user_id):
                return
            if await _count(conn, t.group_members, m.user_id == user_id) >= GROUPS_PER_USER:
                raise LimitExceeded(f"Cannot exceed quota for GroupsPerUser: {GROUPS_PER_USER}")
            await conn.execute(insert(t.group_members).values(group_id=group_id, user_id=user_id))

    async def remove_member(self, group_name: str, user_name: str) -> None:
        """Raises ``NoSuchEntity``: no such group or user, or the user is not a member."""
        async with self._change() as conn:
            group_id = await _group_id(conn, group_name)
            user_id = await _user_id(conn, user_name)
            m = t.group_members.c
            stmt = delete(t.group_members).where(m.group_id == group_id, m.user_id == user_id)
            if (await conn.execute(stmt)).rowcount != 1:
                raise NoSuchEntity(f"User {user_name} is not in group {group_name}.")

    async def members(self, group_name: str) -> tuple[Group, list[User]]:
        """The group and its members (by name), read together. Raises ``NoSuchEntity``."""
        m = t.group_members.c
        stmt = (
            select(t.iam_groups, t.users)
            .select_from(t.iam_groups)
            .outerjoin(t.group_members, m.group_id == t.iam_groups.c.group_id)
            .outerjoin(t.users, t.users.c.user_id == m.user_id)
            .where(t.iam_groups.c.name == group_name)
            .order_by(t.users.c.name)
        )
        rows = await self._fetch(stmt)
        if not rows:
            raise _no_group(group_name)
        group_columns = len(t.iam_groups.c)
        group = Group(**dict(zip(t.iam_groups.c.keys(), rows[0][:group_columns], strict=True)))
        users = []
        for row in rows:
            user_values = dict(zip(t.users.c.keys(), row[group_columns:], strict=True))
            if user_values["user_id"] is not None:
                user_values["tags"] = dict(user_values["tags"] or {})
                users.append(User(**user_values))
        return group, users

    async def groups_of(self, user_name: str) -> list[Group]:
        """The user's groups, by name. Raises ``NoSuchEntity``."""
        async with self._snapshot() as conn:
            user_id = await _user_id(conn, user_name)
            stmt = (
                select(t.iam_groups)
                .join(t.group_members, t.group_members.c.group_id == t.iam_groups.c.group_id)
                .where(t.group_members.c.user_id == user_id)
                .order_by(t.iam_groups.c.name)
            )
            return [_group(r) for r in (await conn.execute(stmt)).all()]

    # ---- access keys ----------------------------------------------------------------------

    async def create_access_key(
        self,
        access_key_id: str,
        user_id: str,
        secret_encrypted: str,
        now: float,
        *,
        limit: int = ACCESS_KEYS_PER_USER,
    ) -> None:
        """Add an active key (its secret already encrypted) to the user.

        Raises:
            NoSuchEntity: no such user.
            LimitExceeded: the user has ``limit`` keys already, active or not.
        """
        async with self._change() as conn:
            if not await _count(conn, t.users, t.users.c.user_id == user_id):
                raise NoSuchEntity(f"The user with id {user_id} cannot be found.")
            if await _count(conn, t.access_keys, t.access_keys.c.user_id == user_id) >= limit:
                raise LimitExceeded(f"Cannot exceed quota for AccessKeysPerUser: {limit}")
            await conn.execute(
                insert(t.access_keys).values(
                    access_key_id=access_key_id,
                    user_id=user_id,
                    secret_encrypted=secret_encrypted,
                    status=KeyStatus.ACTIVE.value,
                    created_at=now,
                )
            )

    async def update_access_key(self, user_id: str, access_key_id: str, status: KeyStatus) -> None:
        """Raises ``NoSuchEntity`` unless the user has this key."""
        k = t.access_keys.c
        async with self._change() as conn:
            stmt = (
                sql_update(t.access_keys)
                .where(k.access_key_id == access_key_id, k.user_id == user_id)
                .values(status=status.value)
            )
            if (await conn.execute(stmt)).rowcount != 1:
                raise _no_key(access_key_id)

    async def delete_access_key(self, user_id: str, access_key_id: str) -> None:
        """Raises ``NoSuchEntity`` unless the user has this key."""
        k = t.access_keys.c
        async with self._change() as conn:
            stmt = delete(t.access_keys).where(
                k.access_key_id == access_key_id, k.user_id == user_id
            )
            if (await conn.execute(stmt)).rowcount != 1:
                raise _no_key(access_key_id)

    @staticmethod
    def _keys() -> Any:
        k = t.access_keys.c
        return (
            select(
                k.access_key_id,
                k.user_id,
                t.users.c.name,
                k.secret_encrypted,
                k.status,
                k.created_at,
                k.last_used_at,
                t.users.c.tags,
            )
            .join(t.users, t.users.c.user_id == k.user_id)
            .order_by(k.created_at, k.access_key_id)
        )

    @staticmethod
    def _key(row: Any) -> AccessKey:
        key_id, user_id, user_name, secret, status, created_at, last_used_at, tags = row
        return AccessKey(
            key_id,
            user_id,
            user_name,
            secret,
            status,
            created_at,
            last_used_at,
            user_tags=dict(tags or {}),
        )

    async def access_key(self, access_key_id: str) -> AccessKey | None:
        """The key with its owner's name and tags (one read), or ``None``."""
        rows = await self._fetch(self._keys().where(t.access_keys.c.access_key_id == access_key_id))
        return self._key(rows[0]) if rows else None

    async def keys_of(self, user_id: str) -> list[AccessKey]:
        """The user's keys, oldest first."""
        rows = await self._fetch(self._keys().where(t.access_keys.c.user_id == user_id))
        return [self._key(r) for r in rows]

    async def touch_access_key(self, access_key_id: str, now: float) -> None:
        """Record that the key was used at ``now`` (one ``UPDATE``; no generation bump: use is
        not a change of anyone's rights). Callers limit it to about once a minute per key."""
        await self._write(
            sql_update(t.access_keys)
            .where(t.access_keys.c.access_key_id == access_key_id)
            .values(last_used_at=now)
        )

    # ---- what applies -----------------------------------------------------------------------

    async def policies_for(self, user_id: str) -> list[StoredPolicy]:
        """Every policy document that applies to the user, read in one statement (so one
        snapshot): the user's inline policies, the managed policies attached to the user (their
        default versions), then for each of the user's groups its inline and attached ones.

        A managed policy reached twice (attached to the user and to a group) is listed once.
        An unknown user has none.
        """
        ui, gi = t.user_inline_policies, t.group_inline_policies
        ua, ga = t.user_policy_attachments, t.group_policy_attachments
        p, v, u, g, gm = t.policies, t.policy_versions, t.users, t.iam_groups, t.group_members
        default = and_(v.c.policy_id == p.c.policy_id, v.c.version_id == p.c.default_version_id)
        branches = [
            select(
                literal_column("0").label("source"),
                u.c.name.label("owner"),
                ui.c.name,
                ui.c.document,
            )
            .select_from(ui.join(u, u.c.user_id == ui.c.user_id))
            .where(ui.c.user_id == user_id),
            select(literal_column("1"), u.c.name, p.c.arn, v.c.document)
            .select_from(
                ua.join(u, u.c.user_id == ua.c.user_id)
                .join(p, p.c.policy_id == ua.c.policy_id)
                .join(v, default)
            )
            .where(ua.c.user_id == user_id),
            select(literal_column("2"), g.c.name, gi.c.name, gi.c.document)
            .select_from(
                gm.join(g, g.c.group_id == gm.c.group_id).join(gi, gi.c.group_id == gm.c.group_id)
            )
            .where(gm.c.user_id == user_id),
            select(literal_column("3"), g.c.name, p.c.arn, v.c.document)
            .select_from(
                gm.join(g, g.c.group_id == gm.c.group_id)
                .join(ga, ga.c.group_id == gm.c.group_id)
                .join(p, p.c.policy_id == ga.c.policy_id)
                .join(v, default)
            )
            .where(gm.c.user_id == user_id),
        ]
        every = union_all(*branches).subquery()
        stmt = select(every).order_by(every.c.source, every.c.owner, every.c.name)
        out: list[StoredPolicy] = []
        seen: set[str] = set()
        for source, owner, name, document in await self._fetch(stmt):
            kind = {0: "user", 2: "group"}.get(int(source))
            label = name if kind is None else f"{kind}/{owner}/{name}"
            if label not in seen:
                seen.add(label)
                out.append(StoredPolicy(label, document))
        return out

    async def generation(self) -> int:
        """The IAM generation: it grows with every change to identities, policies, node tags."""
        rows = await self._fetch(
            select(t.iam_generation.c.generation).where(t.iam_generation.c.row_id == 1)
        )
        return int(rows[0][0]) if rows else 0


def _no_key(access_key_id: str) -> NoSuchEntity:
    return NoSuchEntity(f"The Access Key with id {access_key_id} cannot be found.")


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
            if await _count(conn, t.policies, t.policies.c.arn == policy.arn):
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
                policy_id = await _scalar(conn, select(p.policy_id).where(p.arn == policy.arn))
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
                if await _count(conn, table, table.c.policy_id == policy_id):
                    raise DeleteConflict("Cannot delete a policy attached to entities.")
            await conn.execute(
                delete(t.policy_versions).where(t.policy_versions.c.policy_id == policy_id)
            )
            await conn.execute(delete(t.policies).where(t.policies.c.policy_id == policy_id))

    @staticmethod
    async def _policy_id(conn: AsyncConnection, arn: str) -> str:
        policy_id = await _scalar(
            conn, select(t.policies.c.policy_id).where(t.policies.c.arn == arn)
        )
        if policy_id is None:
            raise _no_policy(arn)
        return str(policy_id)

    @staticmethod
    async def _local_policy(conn: AsyncConnection, arn: str) -> str:
        p = t.policies.c
        row = (await conn.execute(select(p.policy_id, p.builtin).where(p.arn == arn))).first()
        if row is None:
            raise _no_policy(arn)
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
                raise _no_policy(arn)
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
                await _count(conn, t.policy_versions, v.policy_id == policy_id)
                >= VERSIONS_PER_POLICY
            ):
                raise LimitExceeded(
                    f"A managed policy can have up to {VERSIONS_PER_POLICY} versions. Before you "
                    "create a new version, you must delete an existing version."
                )
            number = int(
                await _scalar(conn, select(p.next_version).where(p.policy_id == policy_id))
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
            if not await _count(
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
            default = await _scalar(
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
            if await _count(conn, table, column == owner_id, table.c.policy_id == policy_id):
                return
            if await _count(conn, table, column == owner_id) >= POLICIES_PER_OWNER:
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
            document = await _scalar(
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


__all__ = [
    "ACCESS_KEYS_PER_USER",
    "IdentityRepository",
    "Owner",
    "PolicyRepository",
    "PolicyScope",
]
