"""IamService in process, on a SQLite store: every operation, IAM's errors and rules."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hatchway.auth.secretbox import SecretBox
from hatchway.auth.tokens import verify_secret
from hatchway.errors import (
    DeleteConflict,
    EntityAlreadyExists,
    LimitExceeded,
    MalformedPolicyDocument,
    NoSuchEntity,
    PasswordPolicyViolation,
    UnmodifiableEntity,
    ValidationError,
)
from hatchway.server.bootstrap import ADMINISTRATOR_ACCESS, ensure_admin
from hatchway.server.iam import IamService, builtin_policies, builtin_policy_id
from hatchway.server.principal import Principal
from hatchway.server.validation import RequestValidator, Rule
from hatchway.store.database import sqlite_url
from hatchway.store.store import Store

ACCOUNT = "123456789012"
DOC = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ssm:StartSession", "Resource": "*"}],
    }
)


@dataclass
class Iam:
    store: Store
    box: SecretBox
    service: IamService
    admin: Principal

    async def call(self, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.service.operations()[op](self.admin, body or {})

    async def generation(self) -> int:
        return await self.store.identity.generation()


@pytest_asyncio.fixture
async def iam(tmp_path: Path) -> AsyncIterator[Iam]:
    store = Store.open(sqlite_url(tmp_path / "hatchway.db"))
    box = SecretBox(secrets.token_bytes(32))
    creds = await ensure_admin(store, box, "admin", 1.0)
    admin = await store.identity.user_by_name("admin")
    assert admin is not None
    principal = Principal(admin.user_id, "admin", ACCOUNT, creds.access_key_id)
    try:
        yield Iam(store, box, IamService(store, box, ACCOUNT, lambda: 100.0), principal)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_users(iam: Iam) -> None:
    g = await iam.generation()
    created = await iam.call(
        "CreateUser", {"UserName": "dev-user", "Tags": [{"Key": "team", "Value": "a"}]}
    )
    user = created["User"]
    assert user["UserName"] == "dev-user" and user["Path"] == "/"
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/dev-user"
    assert user["UserId"].startswith("AIDA") and len(user["UserId"]) == 20
    assert user["CreateDate"] == 100.0 and user["Tags"] == [{"Key": "team", "Value": "a"}]
    assert await iam.generation() > g
    with pytest.raises(EntityAlreadyExists):
        await iam.call("CreateUser", {"UserName": "dev-user"})
    assert (await iam.call("GetUser", {"UserName": "dev-user"}))["User"] == user
    assert (await iam.call("GetUser"))["User"]["UserName"] == "admin"  # the caller
    with pytest.raises(NoSuchEntity):
        await iam.call("GetUser", {"UserName": "nobody"})
    listed = await iam.call("ListUsers", {"MaxItems": 1})
    assert [u["UserName"] for u in listed["Users"]] == ["admin"]
    assert listed["IsTruncated"] and listed["Marker"] == "1"
    listed = await iam.call("ListUsers", {"MaxItems": 1, "Marker": listed["Marker"]})
    assert [u["UserName"] for u in listed["Users"]] == ["dev-user"]
    assert listed == {"Users": listed["Users"], "IsTruncated": False}
    with pytest.raises(ValidationError):
        await iam.call("ListUsers", {"Marker": "x1"})

    await iam.call("TagUser", {"UserName": "dev-user", "Tags": [{"Key": "env", "Value": "dev"}]})
    await iam.call("UntagUser", {"UserName": "dev-user", "TagKeys": ["team"]})
    tags = await iam.call("ListUserTags", {"UserName": "dev-user"})
    assert tags == {"Tags": [{"Key": "env", "Value": "dev"}], "IsTruncated": False}
    with pytest.raises(LimitExceeded):
        await iam.call(
            "TagUser",
            {"UserName": "dev-user", "Tags": [{"Key": f"k{i}", "Value": ""} for i in range(50)]},
        )
    g = await iam.generation()
    await iam.call("DeleteUser", {"UserName": "dev-user"})
    assert await iam.generation() > g
    with pytest.raises(NoSuchEntity):
        await iam.call("DeleteUser", {"UserName": "dev-user"})


@pytest.mark.asyncio
async def test_passwords(iam: Iam) -> None:
    await iam.call("CreateUser", {"UserName": "u"})
    with pytest.raises(PasswordPolicyViolation):
        await iam.call("SetPassword", {"UserName": "u", "Password": "short"})
    with pytest.raises(NoSuchEntity):
        await iam.call("SetPassword", {"UserName": "nobody", "Password": "long enough password"})
    g = await iam.generation()
    assert (
        await iam.call("SetPassword", {"UserName": "u", "Password": "correct horse battery"}) == {}
    )
    assert await iam.generation() > g
    user = await iam.store.identity.user_by_name("u")
    assert user is not None and user.password_hash is not None
    assert "correct horse" not in user.password_hash and "correct" not in repr(user)
    assert verify_secret("correct horse battery", user.password_hash)
    with pytest.raises(DeleteConflict, match="login profile"):
        await iam.call("DeleteUser", {"UserName": "u"})
    await iam.call("DeleteLoginProfile", {"UserName": "u"})
    with pytest.raises(NoSuchEntity):
        await iam.call("DeleteLoginProfile", {"UserName": "u"})
    await iam.call("DeleteUser", {"UserName": "u"})


@pytest.mark.asyncio
async def test_groups(iam: Iam) -> None:
    group = (await iam.call("CreateGroup", {"GroupName": "devs"}))["Group"]
    assert group["GroupId"].startswith("AGPA") and len(group["GroupId"]) == 20
    assert group["Arn"] == f"arn:aws:iam::{ACCOUNT}:group/devs" and group["Path"] == "/"
    with pytest.raises(EntityAlreadyExists):
        await iam.call("CreateGroup", {"GroupName": "devs"})
    await iam.call("CreateUser", {"UserName": "u"})
    g = await iam.generation()
    await iam.call("AddUserToGroup", {"GroupName": "devs", "UserName": "u"})
    assert await iam.generation() > g
    got = await iam.call("GetGroup", {"GroupName": "devs"})
    assert got["Group"] == group and [u["UserName"] for u in got["Users"]] == ["u"]
    assert got["IsTruncated"] is False
    assert [x["GroupName"] for x in (await iam.call("ListGroups"))["Groups"]] == ["devs"]
    for_user = await iam.call("ListGroupsForUser", {"UserName": "u"})
    assert [x["GroupName"] for x in for_user["Groups"]] == ["devs"]
    with pytest.raises(DeleteConflict):
        await iam.call("DeleteGroup", {"GroupName": "devs"})
    await iam.call("RemoveUserFromGroup", {"GroupName": "devs", "UserName": "u"})
    with pytest.raises(NoSuchEntity):
        await iam.call("RemoveUserFromGroup", {"GroupName": "devs", "UserName": "u"})
    await iam.call("DeleteGroup", {"GroupName": "devs"})
    with pytest.raises(NoSuchEntity):
        await iam.call("GetGroup", {"GroupName": "devs"})


@pytest.mark.asyncio
async def test_access_keys(iam: Iam) -> None:
    await iam.call("CreateUser", {"UserName": "u"})
    g = await iam.generation()
    created = (await iam.call("CreateAccessKey", {"UserName": "u"}))["AccessKey"]
    assert await iam.generation() > g
    assert created["UserName"] == "u" and created["Status"] == "Active"
    assert created["AccessKeyId"].startswith("HWAK") and len(created["SecretAccessKey"]) == 40
    # The secret is stored encrypted (bound to the key id), and never shown again.
    key = await iam.store.identity.access_key(created["AccessKeyId"])
    assert key is not None and created["SecretAccessKey"] not in key.secret_encrypted
    plain = iam.box.decrypt(key.secret_encrypted, context=created["AccessKeyId"].encode())
    assert plain.decode() == created["SecretAccessKey"]
    listed = await iam.call("ListAccessKeys", {"UserName": "u"})
    assert listed == {
        "AccessKeyMetadata": [
            {
                "UserName": "u",
                "AccessKeyId": created["AccessKeyId"],
                "Status": "Active",
                "CreateDate": 100.0,
            }
        ],
        "IsTruncated": False,
    }
    assert created["SecretAccessKey"] not in json.dumps(listed)

    second = (await iam.call("CreateAccessKey", {"UserName": "u"}))["AccessKey"]
    await iam.call(
        "UpdateAccessKey",
        {"UserName": "u", "AccessKeyId": second["AccessKeyId"], "Status": "Inactive"},
    )
    with pytest.raises(LimitExceeded):  # 2 keys, one of them inactive: still the limit
        await iam.call("CreateAccessKey", {"UserName": "u"})
    with pytest.raises(ValidationError):
        await iam.call(
            "UpdateAccessKey",
            {"UserName": "u", "AccessKeyId": second["AccessKeyId"], "Status": "Expired"},
        )
    with pytest.raises(NoSuchEntity):  # not the caller's key (UserName absent: the caller)
        await iam.call("DeleteAccessKey", {"AccessKeyId": second["AccessKeyId"]})
    with pytest.raises(DeleteConflict, match="access keys"):
        await iam.call("DeleteUser", {"UserName": "u"})

    last = await iam.call("GetAccessKeyLastUsed", {"AccessKeyId": created["AccessKeyId"]})
    assert last == {"UserName": "u", "AccessKeyLastUsed": {"ServiceName": "N/A", "Region": "N/A"}}
    await iam.store.identity.touch_access_key(created["AccessKeyId"], 150.0)
    last = await iam.call("GetAccessKeyLastUsed", {"AccessKeyId": created["AccessKeyId"]})
    assert last["AccessKeyLastUsed"] == {
        "LastUsedDate": 150.0,
        "ServiceName": "ssm",
        "Region": "local",
    }
    listed = await iam.call("ListAccessKeys", {"UserName": "u"})
    used = {k["AccessKeyId"]: k.get("LastUsedDate") for k in listed["AccessKeyMetadata"]}
    assert used == {created["AccessKeyId"]: 150.0, second["AccessKeyId"]: None}
    with pytest.raises(NoSuchEntity):
        await iam.call("GetAccessKeyLastUsed", {"AccessKeyId": "HWAKNOTAKEY00000"})

    for k in (created, second):
        await iam.call("DeleteAccessKey", {"UserName": "u", "AccessKeyId": k["AccessKeyId"]})
    assert (await iam.call("ListAccessKeys", {"UserName": "u"}))["AccessKeyMetadata"] == []
    # Without UserName: the caller's own keys.
    mine = await iam.call("ListAccessKeys")
    assert [k["UserName"] for k in mine["AccessKeyMetadata"]] == ["admin"]


@pytest.mark.asyncio
async def test_managed_policies(iam: Iam) -> None:
    created = (
        await iam.call(
            "CreatePolicy", {"PolicyName": "Dev", "PolicyDocument": DOC, "Description": "d"}
        )
    )["Policy"]
    arn = f"arn:aws:iam::{ACCOUNT}:policy/Dev"
    assert created["Arn"] == arn and created["PolicyId"].startswith("ANPA")
    assert created["DefaultVersionId"] == "v1" and created["AttachmentCount"] == 0
    assert created["IsAttachable"] is True and created["Description"] == "d"
    with pytest.raises(EntityAlreadyExists):
        await iam.call("CreatePolicy", {"PolicyName": "Dev", "PolicyDocument": DOC})
    with pytest.raises(MalformedPolicyDocument):
        await iam.call("CreatePolicy", {"PolicyName": "Bad", "PolicyDocument": "{not json"})
    with pytest.raises(MalformedPolicyDocument):
        await iam.call("CreatePolicy", {"PolicyName": "Bad", "PolicyDocument": '{"Version": 1}'})
    assert (await iam.call("GetPolicy", {"PolicyArn": arn}))["Policy"] == created
    with pytest.raises(NoSuchEntity):
        await iam.call("GetPolicy", {"PolicyArn": arn + "x"})

    g = await iam.generation()
    v2 = await iam.call(
        "CreatePolicyVersion", {"PolicyArn": arn, "PolicyDocument": DOC, "SetAsDefault": True}
    )
    assert await iam.generation() > g
    assert v2 == {
        "PolicyVersion": {"VersionId": "v2", "IsDefaultVersion": True, "CreateDate": 100.0}
    }
    got = await iam.call("GetPolicyVersion", {"PolicyArn": arn, "VersionId": "v1"})
    assert got["PolicyVersion"] == {
        "Document": DOC,
        "VersionId": "v1",
        "IsDefaultVersion": False,
        "CreateDate": 100.0,
    }
    for _ in range(3):
        await iam.call("CreatePolicyVersion", {"PolicyArn": arn, "PolicyDocument": DOC})
    with pytest.raises(LimitExceeded):
        await iam.call("CreatePolicyVersion", {"PolicyArn": arn, "PolicyDocument": DOC})
    with pytest.raises(MalformedPolicyDocument):
        await iam.call("CreatePolicyVersion", {"PolicyArn": arn, "PolicyDocument": "[]"})
    versions = await iam.call("ListPolicyVersions", {"PolicyArn": arn})
    assert [v["VersionId"] for v in versions["Versions"]] == ["v5", "v4", "v3", "v2", "v1"]
    with pytest.raises(DeleteConflict):
        await iam.call("DeletePolicyVersion", {"PolicyArn": arn, "VersionId": "v2"})
    await iam.call("SetDefaultPolicyVersion", {"PolicyArn": arn, "VersionId": "v5"})
    await iam.call("DeletePolicyVersion", {"PolicyArn": arn, "VersionId": "v2"})
    assert (await iam.call("GetPolicy", {"PolicyArn": arn}))["Policy"]["DefaultVersionId"] == "v5"

    local = await iam.call("ListPolicies", {"Scope": "Local"})
    assert [p["Arn"] for p in local["Policies"]] == [arn]
    builtin = await iam.call("ListPolicies", {"Scope": "AWS"})
    assert sorted(p["PolicyName"] for p in builtin["Policies"]) == [
        "AdministratorAccess",
        "ReadOnlyAccess",
        "SessionManagerUser",
    ]
    attached = await iam.call("ListPolicies", {"OnlyAttached": True})
    assert [p["Arn"] for p in attached["Policies"]] == [ADMINISTRATOR_ACCESS]  # the admin's

    await iam.call("CreateUser", {"UserName": "u"})
    await iam.call("AttachUserPolicy", {"UserName": "u", "PolicyArn": arn})
    with pytest.raises(DeleteConflict):
        await iam.call("DeletePolicy", {"PolicyArn": arn})
    await iam.call("DetachUserPolicy", {"UserName": "u", "PolicyArn": arn})
    await iam.call("DeletePolicy", {"PolicyArn": arn})
    with pytest.raises(NoSuchEntity):
        await iam.call("DeletePolicy", {"PolicyArn": arn})

    pathed = await iam.call(
        "CreatePolicy", {"PolicyName": "P", "PolicyDocument": DOC, "Path": "/team/"}
    )
    assert pathed["Policy"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:policy/team/P"
    listed = await iam.call("ListPolicies", {"PathPrefix": "/team/"})
    assert [p["PolicyName"] for p in listed["Policies"]] == ["P"]


@pytest.mark.asyncio
async def test_builtin_policies_are_read_only(iam: Iam) -> None:
    arn = ADMINISTRATOR_ACCESS
    policy = (await iam.call("GetPolicy", {"PolicyArn": arn}))["Policy"]
    assert policy["PolicyId"] == builtin_policy_id("AdministratorAccess")
    for op, body in (
        ("DeletePolicy", {"PolicyArn": arn}),
        ("CreatePolicyVersion", {"PolicyArn": arn, "PolicyDocument": DOC}),
        ("SetDefaultPolicyVersion", {"PolicyArn": arn, "VersionId": "v1"}),
        ("DeletePolicyVersion", {"PolicyArn": arn, "VersionId": "v1"}),
    ):
        with pytest.raises(UnmodifiableEntity):
            await iam.call(op, body)
    # The shipped documents are what the store holds (and what migration 0004 inserted).
    for builtin in builtin_policies(1.0):
        got = await iam.call(
            "GetPolicyVersion", {"PolicyArn": builtin.policy.arn, "VersionId": "v1"}
        )
        assert got["PolicyVersion"]["Document"] == builtin.document
        json.loads(builtin.document)


@pytest.mark.asyncio
async def test_attachments_and_inline_policies(iam: Iam) -> None:
    await iam.call("CreateUser", {"UserName": "u"})
    await iam.call("CreateGroup", {"GroupName": "g"})
    arn = "arn:aws:iam::aws:policy/ReadOnlyAccess"
    for kind, name in (("User", "u"), ("Group", "g")):
        key = f"{kind}Name"
        g = await iam.generation()
        await iam.call(f"Attach{kind}Policy", {key: name, "PolicyArn": arn})
        assert await iam.generation() > g
        listed = await iam.call(f"ListAttached{kind}Policies", {key: name})
        assert listed == {
            "AttachedPolicies": [{"PolicyName": "ReadOnlyAccess", "PolicyArn": arn}],
            "IsTruncated": False,
        }
        with pytest.raises(NoSuchEntity):
            await iam.call(f"Attach{kind}Policy", {key: name, "PolicyArn": arn + "Nope"})
        await iam.call(f"Detach{kind}Policy", {key: name, "PolicyArn": arn})
        with pytest.raises(NoSuchEntity):
            await iam.call(f"Detach{kind}Policy", {key: name, "PolicyArn": arn})

        g = await iam.generation()
        await iam.call(f"Put{kind}Policy", {key: name, "PolicyName": "Mine", "PolicyDocument": DOC})
        assert await iam.generation() > g
        got = await iam.call(f"Get{kind}Policy", {key: name, "PolicyName": "Mine"})
        assert got == {key: name, "PolicyName": "Mine", "PolicyDocument": DOC}
        names = await iam.call(f"List{kind}Policies", {key: name})
        assert names == {"PolicyNames": ["Mine"], "IsTruncated": False}
        with pytest.raises(MalformedPolicyDocument):
            await iam.call(
                f"Put{kind}Policy", {key: name, "PolicyName": "X", "PolicyDocument": "1"}
            )
        with pytest.raises(NoSuchEntity):
            await iam.call(f"Get{kind}Policy", {key: name, "PolicyName": "Other"})
        await iam.call(f"Delete{kind}Policy", {key: name, "PolicyName": "Mine"})
        with pytest.raises(NoSuchEntity):
            await iam.call(f"Delete{kind}Policy", {key: name, "PolicyName": "Mine"})
        with pytest.raises(NoSuchEntity):
            await iam.call(f"List{kind}Policies", {key: "nobody"})


@pytest.mark.asyncio
async def test_the_bootstrap_admin_is_an_administrator_once(iam: Iam) -> None:
    labels = [p.label for p in await iam.store.identity.policies_for(iam.admin.user_id)]
    assert labels == [ADMINISTRATOR_ACCESS]
    # A restart leaves an existing admin as an operator left it.
    await iam.call("DetachUserPolicy", {"UserName": "admin", "PolicyArn": ADMINISTRATOR_ACCESS})
    await ensure_admin(iam.store, iam.box, "admin", 2.0)
    assert await iam.store.identity.policies_for(iam.admin.user_id) == []


def test_every_operation_is_an_async_method() -> None:
    service = IamService.__new__(IamService)
    names = set(service.operations())
    assert "SimulatePrincipalPolicy" not in names  # the lead's
    assert len(names) == 44


# ---- request validation of the Hatchway operations -------------------------------------------


def _rules(rule: Rule) -> Iterator[Rule]:
    yield rule
    for child in (*rule.members.values(), rule.member, rule.key, rule.value):
        if child is not None:
            yield from _rules(child)


def test_every_hatchway_operation_has_a_compiled_input_shape() -> None:
    names = [*IamService.__new__(IamService).operations(), "SimulatePrincipalPolicy"]
    validator = RequestValidator.for_operations(["StartSession"], names)
    assert validator.operations == {"StartSession", *names}
    for name in names:
        for rule in _rules(validator.rule(name)):
            if rule.pattern_text:
                assert rule.pattern is not None, (name, rule.pattern_text)


def test_hatchway_bodies_are_checked_against_iams_model() -> None:
    validator = RequestValidator.for_operations((), ["CreateUser", "SetPassword", "TagUser"])
    assert validator.validate("CreateUser", {"UserName": "dev-user", "Extra": 1}) == {
        "UserName": "dev-user"
    }
    with pytest.raises(ValidationError, match="userName"):
        validator.validate("CreateUser", {"UserName": "x" * 65})
    with pytest.raises(ValidationError, match="password"):
        validator.validate("SetPassword", {"UserName": "u"})
    body = {"UserName": "u", "Password": "correct horse battery"}
    assert validator.validate("SetPassword", body) == body
    with pytest.raises(ValidationError, match="regular expression"):
        validator.validate("TagUser", {"UserName": "u", "Tags": [{"Key": "\t", "Value": ""}]})
    tags = {"UserName": "u", "Tags": [{"Key": "équipe 1", "Value": "déjà-vu"}]}
    assert validator.validate("TagUser", tags) == tags


def test_an_operation_cannot_be_both_ssm_and_hatchway() -> None:
    with pytest.raises(ValueError, match="GetUser"):
        RequestValidator.for_operations(["GetUser"], ["GetUser"])
