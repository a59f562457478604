"""The identity repository: users, groups and their members, access keys, and the policies
that apply to a user (``store.policies`` holds the policies themselves).

Every change runs in :meth:`_Repository._change`: it bumps the IAM generation first, so these
changes take turns (on every replica) and each one's checks — a user's key count, a group's
members, a policy's attachments — hold until it commits. The errors are IAM's
(``NoSuchEntity``, ``EntityAlreadyExists``, ``DeleteConflict``, ``LimitExceeded``,
``UnmodifiableEntity``), raised inside the transaction so nothing is half done. The row
helpers below (``scalar_of``, ``count_of``, ``user_id_named``, ``group_id_named``) serve
``store.policies`` too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
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
)
from hatchway.store import schema as t
from hatchway.store.records import (
    AccessKey,
    Group,
    KeyStatus,
    StoredPolicy,
    User,
)
from hatchway.store.repositories import _Repository

ACCESS_KEYS_PER_USER = 2
"""IAM's quota, counting inactive keys too."""
GROUPS_PER_USER = 10
TAGS_PER_USER = 50


def _user(row: Any) -> User:
    m = dict(row._mapping)
    m["tags"] = dict(m["tags"] or {})
    return User(**m)


def _group(row: Any) -> Group:
    return Group(**row._mapping)


def _no_user(name: str) -> NoSuchEntity:
    return NoSuchEntity(f"The user with name {name} cannot be found.")


def no_policy(arn: str) -> NoSuchEntity:
    return NoSuchEntity(f"Policy {arn} does not exist or is not attachable.")


def _no_group(name: str) -> NoSuchEntity:
    return NoSuchEntity(f"The group with name {name} cannot be found.")


async def scalar_of(conn: AsyncConnection, stmt: Any) -> Any:
    row = (await conn.execute(stmt)).first()
    return None if row is None else row[0]


async def count_of(conn: AsyncConnection, table: Table, *where: Any) -> int:
    return int(await scalar_of(conn, select(func.count()).select_from(table).where(*where)) or 0)


async def user_id_named(conn: AsyncConnection, name: str) -> str:
    user_id = await scalar_of(conn, select(t.users.c.user_id).where(t.users.c.name == name))
    if user_id is None:
        raise _no_user(name)
    return str(user_id)


async def group_id_named(conn: AsyncConnection, name: str) -> str:
    group_id = await scalar_of(
        conn, select(t.iam_groups.c.group_id).where(t.iam_groups.c.name == name)
    )
    if group_id is None:
        raise _no_group(name)
    return str(group_id)


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
                if await count_of(conn, t.users, t.users.c.name == user.name):
                    raise EntityAlreadyExists(f"User with name {user.name} already exists.")
                values = {name: getattr(user, name) for name in User.__slots__}
                await conn.execute(insert(t.users).values(**values))
                for arn in attach:
                    policy_id = await scalar_of(
                        conn, select(t.policies.c.policy_id).where(t.policies.c.arn == arn)
                    )
                    if policy_id is None:
                        raise no_policy(arn)
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
            user_id = await user_id_named(conn, name)
            if await count_of(conn, t.access_keys, t.access_keys.c.user_id == user_id):
                raise DeleteConflict("Cannot delete entity, must delete access keys first.")
            if await scalar_of(
                conn, select(t.users.c.password_hash).where(t.users.c.user_id == user_id)
            ):
                raise DeleteConflict("Cannot delete entity, must delete login profile first.")
            if await count_of(conn, t.group_members, t.group_members.c.user_id == user_id):
                raise DeleteConflict(
                    "Cannot delete entity, must remove user from all groups first."
                )
            if await count_of(
                conn, t.user_policy_attachments, t.user_policy_attachments.c.user_id == user_id
            ):
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if await count_of(
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
            user_id = await user_id_named(conn, name)
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
            if await count_of(conn, t.iam_groups, t.iam_groups.c.name == group.name):
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
            group_id = await group_id_named(conn, name)
            if await count_of(conn, t.group_members, t.group_members.c.group_id == group_id):
                raise DeleteConflict("Cannot delete entity, must remove users from group first.")
            if await count_of(
                conn, t.group_policy_attachments, t.group_policy_attachments.c.group_id == group_id
            ):
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if await count_of(
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
            group_id = await group_id_named(conn, group_name)
            user_id = await user_id_named(conn, user_name)
            m = t.group_members.c
            if await count_of(conn, t.group_members, m.group_id == group_id, m.user_id == user_id):
                return
            if await count_of(conn, t.group_members, m.user_id == user_id) >= GROUPS_PER_USER:
                raise LimitExceeded(f"Cannot exceed quota for GroupsPerUser: {GROUPS_PER_USER}")
            await conn.execute(insert(t.group_members).values(group_id=group_id, user_id=user_id))

    async def remove_member(self, group_name: str, user_name: str) -> None:
        """Raises ``NoSuchEntity``: no such group or user, or the user is not a member."""
        async with self._change() as conn:
            group_id = await group_id_named(conn, group_name)
            user_id = await user_id_named(conn, user_name)
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
            user_id = await user_id_named(conn, user_name)
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
            if not await count_of(conn, t.users, t.users.c.user_id == user_id):
                raise NoSuchEntity(f"The user with id {user_id} cannot be found.")
            if await count_of(conn, t.access_keys, t.access_keys.c.user_id == user_id) >= limit:
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


__all__ = [
    "ACCESS_KEYS_PER_USER",
    "IdentityRepository",
    "count_of",
    "group_id_named",
    "no_policy",
    "scalar_of",
    "user_id_named",
]
