"""The identity and policy repositories' contract, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
import uuid

import pytest

from hatchway.errors import (
    DeleteConflict,
    EntityAlreadyExists,
    InvalidInstanceId,
    LimitExceeded,
    NoSuchEntity,
    TooManyTags,
    UnmodifiableEntity,
)
from hatchway.store.policies import Owner, PolicyScope
from hatchway.store.records import (
    Activation,
    Group,
    KeyStatus,
    ManagedPolicy,
    Node,
    StoredPolicy,
    User,
)
from hatchway.store.store import Store
from tests.store.conftest import with_store

ADMIN_ARN = "arn:aws:iam::aws:policy/AdministratorAccess"
ALLOW = '{"Version": "2012-10-17", "Statement": []}'


def policy(name: str, *, now: float = 1.0) -> ManagedPolicy:
    return ManagedPolicy(
        policy_id="ANPA" + secrets.token_hex(8).upper(),
        arn=f"arn:aws:iam::123456789012:policy/{name}",
        name=name,
        path="/",
        description="",
        default_version_id="v1",
        builtin=False,
        created_at=now,
        updated_at=now,
    )


async def user(s: Store, name: str) -> User:
    u = User("AIDA" + secrets.token_hex(8).upper(), name, 1.0)
    await s.identity.create_user(u)
    return u


def test_users_tags_passwords_and_delete_conflicts(url: str) -> None:
    async def body(s: Store) -> None:
        u = await user(s, "dev")
        with pytest.raises(EntityAlreadyExists):
            await user(s, "dev")
        assert await s.identity.update_user_tags("dev", {"team": "a", "x": "1"}, ()) == {
            "team": "a",
            "x": "1",
        }
        assert await s.identity.update_user_tags("dev", {"y": "2"}, ["x"]) == {
            "team": "a",
            "y": "2",
        }
        with pytest.raises(LimitExceeded):
            await s.identity.update_user_tags("dev", {str(i): "v" for i in range(49)}, ())
        got = await s.identity.user(u.user_id)
        assert got is not None and got.tags == {"team": "a", "y": "2"}
        with pytest.raises(NoSuchEntity):
            await s.identity.update_user_tags("nobody", {}, ())
        with pytest.raises(NoSuchEntity):
            await s.identity.set_password("dev", None)  # no login profile yet
        await s.identity.set_password("dev", "scrypt$hash")
        got = await s.identity.user_by_name("dev")
        assert got is not None and got.password_hash == "scrypt$hash"
        assert [x.name for x in await s.identity.users()] == ["dev"]

        # IAM's order: keys, login profile, groups, attached, inline policies.
        await s.identity.create_access_key("HWAKDEV1", u.user_id, "enc", 2.0)
        with pytest.raises(DeleteConflict, match="access keys"):
            await s.identity.delete_user("dev")
        await s.identity.delete_access_key(u.user_id, "HWAKDEV1")
        with pytest.raises(DeleteConflict, match="login profile"):
            await s.identity.delete_user("dev")
        await s.identity.set_password("dev", None)
        await s.identity.create_group(Group("AGPA1", "devs", 1.0))
        await s.identity.add_member("devs", "dev")
        with pytest.raises(DeleteConflict, match="groups"):
            await s.identity.delete_user("dev")
        await s.identity.remove_member("devs", "dev")
        await s.policies.attach(Owner.USER, "dev", ADMIN_ARN)
        with pytest.raises(DeleteConflict, match="detach"):
            await s.identity.delete_user("dev")
        await s.policies.detach(Owner.USER, "dev", ADMIN_ARN)
        await s.policies.put_inline(Owner.USER, "dev", "Mine", ALLOW)
        with pytest.raises(DeleteConflict, match="policies"):
            await s.identity.delete_user("dev")
        await s.policies.delete_inline(Owner.USER, "dev", "Mine")
        await s.identity.delete_user("dev")
        assert await s.identity.user(u.user_id) is None
        with pytest.raises(NoSuchEntity):
            await s.identity.delete_user("dev")

    with_store(url, body)


def test_groups_and_memberships(url: str) -> None:
    async def body(s: Store) -> None:
        await user(s, "a")
        await user(s, "b")
        await s.identity.create_group(Group("AGPA1", "ops", 1.0))
        with pytest.raises(EntityAlreadyExists):
            await s.identity.create_group(Group("AGPA2", "ops", 1.0))
        await s.identity.add_member("ops", "b")
        await s.identity.add_member("ops", "a")
        await s.identity.add_member("ops", "a")  # again: nothing changes
        group, members = await s.identity.members("ops")
        assert group == Group("AGPA1", "ops", 1.0)
        assert [m.name for m in members] == ["a", "b"]
        assert [g.name for g in await s.identity.groups_of("a")] == ["ops"]
        with pytest.raises(NoSuchEntity):
            await s.identity.add_member("ops", "nobody")
        with pytest.raises(NoSuchEntity):
            await s.identity.add_member("nogroup", "a")
        with pytest.raises(NoSuchEntity):
            await s.identity.members("nogroup")
        with pytest.raises(DeleteConflict):
            await s.identity.delete_group("ops")
        await s.identity.remove_member("ops", "a")
        await s.identity.remove_member("ops", "b")
        with pytest.raises(NoSuchEntity):
            await s.identity.remove_member("ops", "b")
        assert (await s.identity.members("ops"))[1] == []
        await s.policies.attach(Owner.GROUP, "ops", ADMIN_ARN)
        with pytest.raises(DeleteConflict):
            await s.identity.delete_group("ops")
        await s.policies.detach(Owner.GROUP, "ops", ADMIN_ARN)
        await s.policies.put_inline(Owner.GROUP, "ops", "P", ALLOW)
        with pytest.raises(DeleteConflict):
            await s.identity.delete_group("ops")
        await s.policies.delete_inline(Owner.GROUP, "ops", "P")
        await s.identity.delete_group("ops")
        assert await s.identity.groups() == []

        for i in range(10):
            await s.identity.create_group(Group(f"AGPAX{i}", f"g{i}", 1.0))
            await s.identity.add_member(f"g{i}", "a")
        await s.identity.create_group(Group("AGPAX10", "g10", 1.0))
        with pytest.raises(LimitExceeded):
            await s.identity.add_member("g10", "a")

    with_store(url, body)


def test_access_keys_limit_status_and_last_use(url: str) -> None:
    async def body(s: Store) -> None:
        u = await user(s, "dev")
        await s.identity.update_user_tags("dev", {"team": "x"}, ())
        await s.identity.create_access_key("HWAKA", u.user_id, "enc-a", 1.0)
        await s.identity.create_access_key("HWAKB", u.user_id, "enc-b", 2.0)
        await s.identity.update_access_key(u.user_id, "HWAKA", KeyStatus.INACTIVE)
        with pytest.raises(LimitExceeded):  # inactive keys count too
            await s.identity.create_access_key("HWAKC", u.user_id, "enc-c", 3.0)
        key = await s.identity.access_key("HWAKA")
        assert key is not None
        assert (key.status, key.created_at, key.user_tags) == ("Inactive", 1.0, {"team": "x"})
        assert key.last_used_at is None
        before = await s.identity.generation()
        await s.identity.touch_access_key("HWAKB", 5.0)
        assert await s.identity.generation() == before  # use is not a change of rights
        key = await s.identity.access_key("HWAKB")
        assert key is not None and key.last_used_at == 5.0
        assert [k.access_key_id for k in await s.identity.keys_of(u.user_id)] == ["HWAKA", "HWAKB"]
        other = await user(s, "other")
        with pytest.raises(NoSuchEntity):  # not the other user's key
            await s.identity.update_access_key(other.user_id, "HWAKA", KeyStatus.ACTIVE)
        with pytest.raises(NoSuchEntity):
            await s.identity.delete_access_key(other.user_id, "HWAKA")
        with pytest.raises(NoSuchEntity):
            await s.identity.create_access_key("HWAKD", "AIDANOBODY", "enc", 1.0)
        assert "enc-a" not in repr(key)

    with_store(url, body)


def test_the_key_limit_holds_under_concurrency(url: str) -> None:
    async def body(s: Store) -> None:
        u = await user(s, "dev")
        results = await asyncio.gather(
            *(s.identity.create_access_key(f"HWAKR{i}", u.user_id, "enc", 1.0) for i in range(6)),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 2
        assert all(r is None or isinstance(r, LimitExceeded) for r in results)
        assert len(await s.identity.keys_of(u.user_id)) == 2

    with_store(url, body)


def test_managed_policies_and_versions(url: str) -> None:
    async def body(s: Store) -> None:
        p = policy("Dev")
        await s.policies.create(p, "doc1")
        with pytest.raises(EntityAlreadyExists):
            await s.policies.create(policy("Dev"), "doc1")
        got = await s.policies.get(p.arn)
        assert got == p
        assert [v.version_id for v in await s.policies.versions(p.arn)] == ["v1"]
        v2 = await s.policies.create_version(p.arn, "doc2", set_default=False, now=2.0)
        assert (v2.version_id, v2.is_default) == ("v2", False)
        v3 = await s.policies.create_version(p.arn, "doc3", set_default=True, now=3.0)
        assert v3.is_default
        got = await s.policies.get(p.arn)
        assert got is not None and (got.default_version_id, got.updated_at) == ("v3", 3.0)
        await s.policies.create_version(p.arn, "doc4", set_default=False, now=4.0)
        await s.policies.create_version(p.arn, "doc5", set_default=False, now=5.0)
        with pytest.raises(LimitExceeded):
            await s.policies.create_version(p.arn, "doc6", set_default=False, now=6.0)
        with pytest.raises(DeleteConflict):
            await s.policies.delete_version(p.arn, "v3")
        await s.policies.delete_version(p.arn, "v1")
        with pytest.raises(NoSuchEntity):
            await s.policies.delete_version(p.arn, "v1")
        v6 = await s.policies.create_version(p.arn, "doc6", set_default=False, now=6.0)
        assert v6.version_id == "v6"  # version ids are never reused
        await s.policies.set_default_version(p.arn, "v2", 7.0)
        assert (await s.policies.version(p.arn, "v2")).is_default
        with pytest.raises(NoSuchEntity):
            await s.policies.version(p.arn, "v1")
        with pytest.raises(NoSuchEntity):
            await s.policies.set_default_version(p.arn, "v9", 7.0)
        assert [v.version_id for v in await s.policies.versions(p.arn)] == [
            "v6",
            "v5",
            "v4",
            "v3",
            "v2",
        ]

        await user(s, "dev")
        await s.policies.attach(Owner.USER, "dev", p.arn)
        got = await s.policies.get(p.arn)
        assert got is not None and got.attachment_count == 1
        with pytest.raises(DeleteConflict):
            await s.policies.delete(p.arn)
        assert [x.arn for x in await s.policies.listing(scope=PolicyScope.LOCAL)] == [p.arn]
        assert ADMIN_ARN in [x.arn for x in await s.policies.listing(scope=PolicyScope.AWS)]
        attached = await s.policies.listing(only_attached=True)
        assert [x.arn for x in attached] == [p.arn]
        await s.policies.detach(Owner.USER, "dev", p.arn)
        with pytest.raises(NoSuchEntity):
            await s.policies.detach(Owner.USER, "dev", p.arn)
        await s.policies.delete(p.arn)
        assert await s.policies.get(p.arn) is None
        with pytest.raises(NoSuchEntity):
            await s.policies.delete(p.arn)
        with pytest.raises(NoSuchEntity):
            await s.policies.versions(p.arn)

    with_store(url, body)


def test_builtin_policies_are_read_only(url: str) -> None:
    async def body(s: Store) -> None:
        admin = await s.policies.get(ADMIN_ARN)
        assert admin is not None and admin.builtin and admin.default_version_id == "v1"
        with pytest.raises(UnmodifiableEntity):
            await s.policies.delete(ADMIN_ARN)
        with pytest.raises(UnmodifiableEntity):
            await s.policies.create_version(ADMIN_ARN, "x", set_default=True, now=1.0)
        with pytest.raises(UnmodifiableEntity):
            await s.policies.set_default_version(ADMIN_ARN, "v1", 1.0)
        with pytest.raises(UnmodifiableEntity):
            await s.policies.delete_version(ADMIN_ARN, "v1")
        b = policy("Builtin")
        b = ManagedPolicy(**{**{n: getattr(b, n) for n in b.__slots__}, "builtin": True})
        assert await s.policies.ensure_builtin(b, "doc", 1.0)
        assert not await s.policies.ensure_builtin(b, "doc", 2.0)
        assert await s.policies.ensure_builtin(b, "doc2", 3.0)
        assert (await s.policies.version(b.arn, "v1")).document == "doc2"

    with_store(url, body)


def test_attachment_limit_and_unknown_things(url: str) -> None:
    async def body(s: Store) -> None:
        await user(s, "dev")
        for i in range(10):
            p = policy(f"P{i}")
            await s.policies.create(p, ALLOW)
            await s.policies.attach(Owner.USER, "dev", p.arn)
        await s.policies.attach(Owner.USER, "dev", policy("P0").arn)  # again: no change
        with pytest.raises(LimitExceeded):
            await s.policies.attach(Owner.USER, "dev", ADMIN_ARN)
        assert len(await s.policies.attached(Owner.USER, "dev")) == 10
        with pytest.raises(NoSuchEntity):
            await s.policies.attach(Owner.USER, "nobody", ADMIN_ARN)
        with pytest.raises(NoSuchEntity):
            await s.policies.attach(Owner.GROUP, "nogroup", ADMIN_ARN)
        with pytest.raises(NoSuchEntity):
            await s.policies.attach(Owner.USER, "dev", "arn:aws:iam::1:policy/Nope")
        with pytest.raises(NoSuchEntity):
            await s.policies.attached(Owner.GROUP, "nogroup")

    with_store(url, body)


def test_inline_policies(url: str) -> None:
    async def body(s: Store) -> None:
        await user(s, "dev")
        await s.policies.put_inline(Owner.USER, "dev", "B", "one")
        await s.policies.put_inline(Owner.USER, "dev", "A", "two")
        await s.policies.put_inline(Owner.USER, "dev", "B", "three")  # replaces
        assert await s.policies.inline_names(Owner.USER, "dev") == ["A", "B"]
        assert await s.policies.inline(Owner.USER, "dev", "B") == "three"
        with pytest.raises(NoSuchEntity):
            await s.policies.inline(Owner.USER, "dev", "C")
        with pytest.raises(NoSuchEntity):
            await s.policies.delete_inline(Owner.USER, "dev", "C")
        with pytest.raises(NoSuchEntity):
            await s.policies.put_inline(Owner.GROUP, "nogroup", "A", "x")
        with pytest.raises(NoSuchEntity):
            await s.policies.inline_names(Owner.USER, "nobody")

    with_store(url, body)


def test_policies_for_gathers_everything_that_applies(url: str) -> None:
    async def body(s: Store) -> None:
        dev = await user(s, "dev")
        await user(s, "other")
        await s.identity.create_group(Group("AGPA1", "devs", 1.0))
        await s.identity.create_group(Group("AGPA2", "empty", 1.0))
        await s.identity.add_member("devs", "dev")
        p = policy("Dev")
        await s.policies.create(p, "dev-v1")
        await s.policies.create_version(p.arn, "dev-v2", set_default=True, now=2.0)
        await s.policies.put_inline(Owner.USER, "dev", "Own", "own-doc")
        await s.policies.put_inline(Owner.USER, "other", "NotMine", "x")
        await s.policies.attach(Owner.USER, "dev", ADMIN_ARN)
        await s.policies.put_inline(Owner.GROUP, "devs", "GroupInline", "group-doc")
        await s.policies.put_inline(Owner.GROUP, "empty", "NotMineEither", "x")
        await s.policies.attach(Owner.GROUP, "devs", p.arn)
        await s.policies.attach(Owner.GROUP, "devs", ADMIN_ARN)  # reached twice: listed once
        got = await s.identity.policies_for(dev.user_id)
        assert [x.label for x in got] == [
            "user/dev/Own",
            ADMIN_ARN,
            "group/devs/GroupInline",
            p.arn,
        ]
        assert got[0] == StoredPolicy("user/dev/Own", "own-doc")
        assert got[3].document == "dev-v2"  # the default version
        assert '"Action": "*"' in got[1].document
        assert await s.identity.policies_for("AIDANOBODY") == []

    with_store(url, body)


def test_every_change_bumps_the_generation(url: str) -> None:
    async def body(s: Store) -> None:
        seen = [await s.identity.generation()]

        async def bumped() -> None:
            now = await s.identity.generation()
            assert now > seen[-1]
            seen.append(now)

        u = await user(s, "dev")
        await bumped()
        await s.identity.update_user_tags("dev", {"a": "b"}, ())
        await bumped()
        await s.identity.set_password("dev", "h")
        await bumped()
        await s.identity.create_group(Group("AGPA1", "g", 1.0))
        await bumped()
        await s.identity.add_member("g", "dev")
        await bumped()
        await s.identity.create_access_key("HWAKG", u.user_id, "enc", 1.0)
        await bumped()
        await s.identity.update_access_key(u.user_id, "HWAKG", KeyStatus.INACTIVE)
        await bumped()
        p = policy("P")
        await s.policies.create(p, ALLOW)
        await bumped()
        await s.policies.create_version(p.arn, ALLOW, set_default=True, now=2.0)
        await bumped()
        await s.policies.attach(Owner.USER, "dev", p.arn)
        await bumped()
        await s.policies.put_inline(Owner.GROUP, "g", "I", ALLOW)
        await bumped()
        a = Activation(
            activation_id=str(uuid.uuid4()), code_hash="h", description="",
            default_instance_name="n", iam_role="", registration_limit=1,
            registrations_count=0, expiration_date=2e9, created_date=1.0,
        )  # fmt: skip
        await s.activations.create(a)
        mi = "mi-0123456789abcdef0"
        n = Node(
            instance_id=mi, activation_id=a.activation_id, public_key="k",
            public_key_type="Rsa", fingerprint="f", name="n", computer_name="",
            platform_type="", platform_name="", platform_version="", ip_address="",
            agent_version="", registration_date=1.0, last_ping_at=None, connected=False,
            tags={"Env": "dev"},
        )  # fmt: skip
        assert await s.activations.register_node(a.activation_id, n, 1.0)
        assert await s.nodes.update_tags(mi, {"Team": "x"}, ["Env"]) == {"Team": "x"}
        await bumped()
        node = await s.nodes.get(mi)
        assert node is not None and node.tags == {"Team": "x"}
        with pytest.raises(TooManyTags):
            await s.nodes.update_tags(mi, {str(i): "v" for i in range(50)}, ())
        with pytest.raises(InvalidInstanceId):
            await s.nodes.update_tags("mi-00000000000000000", {}, ())
        # A refused change leaves the generation alone (its transaction rolled back).
        assert await s.identity.generation() == seen[-1]

    with_store(url, body)


def test_a_user_can_be_created_with_policies_attached(url: str) -> None:
    async def body(s: Store) -> None:
        u = User("AIDA1", "boss", 1.0)
        with pytest.raises(NoSuchEntity):
            await s.identity.create_user(u, attach=[ADMIN_ARN, "arn:aws:iam::1:policy/Nope"])
        assert await s.identity.user_by_name("boss") is None  # nothing was written
        await s.identity.create_user(u, attach=[ADMIN_ARN])
        assert [p.label for p in await s.identity.policies_for("AIDA1")] == [ADMIN_ARN]

    with_store(url, body)
