"""The Hatchway IAM operations (``X-Amz-Target: Hatchway.<Op>``): users, groups, access keys,
passwords, managed and inline policies, attachments.

Bodies and answers are IAM's, as botocore's ``iam`` model names them, in JSON (timestamps as
epoch seconds, like the SSM operations). Bodies arrive validated against that model
(``validation.RequestValidator``); who may call what is decided before a method here runs
(``hatchway:<Op>``), so this module checks only the request against the stored state. The
store raises IAM's errors inside the transaction that would make the change
(``store.identity``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from hatchway.auth.secretbox import SecretBox, new_access_key_id, new_secret_access_key
from hatchway.auth.tokens import hash_secret
from hatchway.errors import (
    MalformedPolicyDocument,
    NoSuchEntity,
    PasswordPolicyViolation,
    ValidationError,
)
from hatchway.server.principal import Principal
from hatchway.store.policies import Owner, PolicyScope
from hatchway.store.records import AccessKey, Group, KeyStatus, ManagedPolicy, PolicyVersion, User
from hatchway.store.store import Store

__all__ = [
    "BUILTIN_ACCOUNT",
    "MIN_PASSWORD_LENGTH",
    "BuiltinPolicy",
    "IamService",
    "Operation",
    "builtin_policies",
    "check_policy_document",
]

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
BUILTIN_ACCOUNT = "aws"
"""The account part of built-in policies' ARNs, as for AWS managed policies."""
DEFAULT_MAX_ITEMS = 100
"""IAM's page size when ``MaxItems`` is absent."""

Operation = Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any]]]
T = TypeVar("T")

_BUILTIN_DESCRIPTIONS = {
    "AdministratorAccess": "Full access to every Hatchway operation and node.",
    "SessionManagerUser": (
        "Start sessions on any node, see nodes and sessions, resume and terminate only one's "
        "own sessions, and manage one's own access keys and password."
    ),
    "ReadOnlyAccess": "Read-only access: every Describe, Get and List operation.",
}


# ---- policy documents ------------------------------------------------------------------------


def check_policy_document(document: str) -> None:
    """Refuse a policy document that is not a valid IAM identity policy.

    Raises:
        MalformedPolicyDocument: with the parser's ``path: what is wrong`` message.
    """
    try:
        from hatchway.policy import parse_policy
    except ImportError:  # pragma: no cover - only until the policy package is merged
        # FALLBACK (until ``hatchway.policy`` is merged; it then takes over by itself): only
        # the outline of a document is checked here.
        _check_outline(document)
        return
    try:
        parse_policy(document)
    except ValidationError as exc:  # hatchway.policy.PolicyError
        raise MalformedPolicyDocument(exc.message) from exc


def _check_outline(document: str) -> None:  # pragma: no cover - fallback, see above
    try:
        parsed = json.loads(document)
    except ValueError as exc:
        raise MalformedPolicyDocument("Syntax errors in policy.") from exc
    if not isinstance(parsed, dict):
        raise MalformedPolicyDocument("policy: must be a JSON object")
    for key in ("Version", "Statement"):
        if key not in parsed:
            raise MalformedPolicyDocument(f"{key}: missing")


# ---- built-in policies -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltinPolicy:
    """A managed policy shipped with Hatchway (``server/builtin_policies/<Name>.json``)."""

    policy: ManagedPolicy
    document: str


def builtin_policy_id(name: str) -> str:
    """Built-in policies' ids are fixed (the same on every installation, and in migration
    0004): ``ANPA`` + 16 hex digits of the name's SHA-256."""
    return "ANPA" + hashlib.sha256(name.encode()).hexdigest()[:16].upper()


def builtin_policies(now: float) -> list[BuiltinPolicy]:
    """Every built-in policy this release ships, its document checked like any other."""
    folder = resources.files("hatchway.server") / "builtin_policies"
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        name = entry.name[: -len(".json")]
        document = entry.read_text(encoding="utf-8")
        check_policy_document(document)  # a broken package fails loudly at start
        policy = ManagedPolicy(
            policy_id=builtin_policy_id(name),
            arn=f"arn:aws:iam::{BUILTIN_ACCOUNT}:policy/{name}",
            name=name,
            path="/",
            description=_BUILTIN_DESCRIPTIONS.get(name, ""),
            default_version_id="v1",
            builtin=True,
            created_at=now,
            updated_at=now,
        )
        out.append(BuiltinPolicy(policy, document))
    return out


# ---- the service -----------------------------------------------------------------------------


class IamService:
    """One async method per IAM operation, each ``(principal, body) -> answer``.

    Args:
        box: encrypts new access keys' secrets (the access key id as associated data).
        account_id: this installation's account (in users', groups' and policies' ARNs).
        clock: wall-clock seconds.
        region: reported by GetAccessKeyLastUsed.
    """

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        account_id: str,
        clock: Callable[[], float],
        *,
        region: str = "local",
    ) -> None:
        self._store = store
        self._box = box
        self._account = account_id
        self._clock = clock
        self._region = region

    def operations(self) -> dict[str, Operation]:
        """Every operation by its name (``Hatchway.<name>``)."""
        return {
            "CreateUser": self.create_user,
            "GetUser": self.get_user,
            "DeleteUser": self.delete_user,
            "ListUsers": self.list_users,
            "TagUser": self.tag_user,
            "UntagUser": self.untag_user,
            "ListUserTags": self.list_user_tags,
            "SetPassword": self.set_password,
            "DeleteLoginProfile": self.delete_login_profile,
            "CreateGroup": self.create_group,
            "DeleteGroup": self.delete_group,
            "GetGroup": self.get_group,
            "ListGroups": self.list_groups,
            "AddUserToGroup": self.add_user_to_group,
            "RemoveUserFromGroup": self.remove_user_from_group,
            "ListGroupsForUser": self.list_groups_for_user,
            "CreateAccessKey": self.create_access_key,
            "UpdateAccessKey": self.update_access_key,
            "DeleteAccessKey": self.delete_access_key,
            "ListAccessKeys": self.list_access_keys,
            "GetAccessKeyLastUsed": self.get_access_key_last_used,
            "CreatePolicy": self.create_policy,
            "GetPolicy": self.get_policy,
            "DeletePolicy": self.delete_policy,
            "ListPolicies": self.list_policies,
            "CreatePolicyVersion": self.create_policy_version,
            "GetPolicyVersion": self.get_policy_version,
            "ListPolicyVersions": self.list_policy_versions,
            "SetDefaultPolicyVersion": self.set_default_policy_version,
            "DeletePolicyVersion": self.delete_policy_version,
            "AttachUserPolicy": self.attach_user_policy,
            "DetachUserPolicy": self.detach_user_policy,
            "AttachGroupPolicy": self.attach_group_policy,
            "DetachGroupPolicy": self.detach_group_policy,
            "ListAttachedUserPolicies": self.list_attached_user_policies,
            "ListAttachedGroupPolicies": self.list_attached_group_policies,
            "PutUserPolicy": self.put_user_policy,
            "PutGroupPolicy": self.put_group_policy,
            "GetUserPolicy": self.get_user_policy,
            "GetGroupPolicy": self.get_group_policy,
            "DeleteUserPolicy": self.delete_user_policy,
            "DeleteGroupPolicy": self.delete_group_policy,
            "ListUserPolicies": self.list_user_policies,
            "ListGroupPolicies": self.list_group_policies,
        }

    # ---- shapes -------------------------------------------------------------------------------

    def user_arn(self, name: str) -> str:
        return f"arn:aws:iam::{self._account}:user/{name}"

    def _user(self, user: User, *, tags: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Path": user.path,
            "UserName": user.name,
            "UserId": user.user_id,
            "Arn": self.user_arn(user.name),
            "CreateDate": user.created_at,
        }
        if user.password_last_used_at is not None:
            out["PasswordLastUsed"] = user.password_last_used_at
        if tags and user.tags:
            out["Tags"] = _tag_list(user.tags)
        return out

    def _group(self, group: Group) -> dict[str, Any]:
        return {
            "Path": group.path,
            "GroupName": group.name,
            "GroupId": group.group_id,
            "Arn": f"arn:aws:iam::{self._account}:group/{group.name}",
            "CreateDate": group.created_at,
        }

    @staticmethod
    def _policy(policy: ManagedPolicy) -> dict[str, Any]:
        out: dict[str, Any] = {
            "PolicyName": policy.name,
            "PolicyId": policy.policy_id,
            "Arn": policy.arn,
            "Path": policy.path,
            "DefaultVersionId": policy.default_version_id,
            "AttachmentCount": policy.attachment_count,
            "PermissionsBoundaryUsageCount": 0,
            "IsAttachable": True,
            "CreateDate": policy.created_at,
            "UpdateDate": policy.updated_at,
        }
        if policy.description:
            out["Description"] = policy.description
        return out

    @staticmethod
    def _version(version: PolicyVersion, *, document: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "VersionId": version.version_id,
            "IsDefaultVersion": version.is_default,
            "CreateDate": version.created_at,
        }
        if document:
            out["Document"] = version.document
        return out

    @staticmethod
    def _key(key: AccessKey) -> dict[str, Any]:
        out: dict[str, Any] = {
            "UserName": key.user_name,
            "AccessKeyId": key.access_key_id,
            "Status": key.status,
            "CreateDate": key.created_at,
        }
        if key.last_used_at is not None:
            out["LastUsedDate"] = key.last_used_at  # a Hatchway extension
        return out

    # ---- users --------------------------------------------------------------------------------

    async def _existing_user(self, name: str) -> User:
        user = await self._store.identity.user_by_name(name)
        if user is None:
            raise NoSuchEntity(f"The user with name {name} cannot be found.")
        return user

    async def _user_or_caller(self, principal: Principal, body: dict[str, Any]) -> User:
        return await self._existing_user(body.get("UserName", principal.user_name))

    async def create_user(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        user = User(
            user_id=_new_id("AIDA"),
            name=body["UserName"],
            created_at=self._clock(),
            tags=_tag_map(body.get("Tags", [])),
        )
        if len(user.tags) > 50:
            raise ValidationError("A user can have at most 50 tags.")
        await self._store.identity.create_user(user)
        log.info("user %s created by %s", user.name, principal.user_name)
        return {"User": self._user(user)}

    async def get_user(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """GetUser; without ``UserName``, the caller."""
        return {"User": self._user(await self._user_or_caller(principal, body))}

    async def delete_user(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        await self._store.identity.delete_user(body["UserName"])
        log.info("user %s deleted by %s", body["UserName"], principal.user_name)
        return {}

    async def list_users(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        users = await self._store.identity.users()
        page, more = _page(users, body)
        return {"Users": [self._user(u, tags=False) for u in page], **more}

    async def tag_user(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        tags = _tag_map(body["Tags"])
        await self._store.identity.update_user_tags(body["UserName"], tags, ())
        return {}

    async def untag_user(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        await self._store.identity.update_user_tags(body["UserName"], {}, body["TagKeys"])
        return {}

    async def list_user_tags(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        user = await self._existing_user(body["UserName"])
        page, more = _page(_tag_list(user.tags), body)
        return {"Tags": page, **more}

    # ---- passwords ----------------------------------------------------------------------------

    async def set_password(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """SetPassword (Hatchway's): store the user's console password as a scrypt hash."""
        password: str = body["Password"]
        if len(password) < MIN_PASSWORD_LENGTH:
            raise PasswordPolicyViolation(
                f"Password must be at least {MIN_PASSWORD_LENGTH} characters long."
            )
        user = await self._existing_user(body["UserName"])
        hashed = await asyncio.to_thread(hash_secret, password)  # ~80 ms of scrypt
        await self._store.identity.set_password(user.name, hashed)
        log.info("password of %s set by %s", user.name, principal.user_name)
        return {}

    async def delete_login_profile(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.identity.set_password(body["UserName"], None)
        return {}

    # ---- groups -------------------------------------------------------------------------------

    async def create_group(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        group = Group(group_id=_new_id("AGPA"), name=body["GroupName"], created_at=self._clock())
        await self._store.identity.create_group(group)
        return {"Group": self._group(group)}

    async def delete_group(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        await self._store.identity.delete_group(body["GroupName"])
        return {}

    async def get_group(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        group, users = await self._store.identity.members(body["GroupName"])
        page, more = _page(users, body)
        return {
            "Group": self._group(group),
            "Users": [self._user(u, tags=False) for u in page],
            **more,
        }

    async def list_groups(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        page, more = _page(await self._store.identity.groups(), body)
        return {"Groups": [self._group(g) for g in page], **more}

    async def add_user_to_group(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        await self._store.identity.add_member(body["GroupName"], body["UserName"])
        return {}

    async def remove_user_from_group(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.identity.remove_member(body["GroupName"], body["UserName"])
        return {}

    async def list_groups_for_user(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        page, more = _page(await self._store.identity.groups_of(body["UserName"]), body)
        return {"Groups": [self._group(g) for g in page], **more}

    # ---- access keys --------------------------------------------------------------------------

    async def create_access_key(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """CreateAccessKey: the only answer that ever carries the secret."""
        user = await self._user_or_caller(principal, body)
        key_id, secret = new_access_key_id(), new_secret_access_key()
        encrypted = self._box.encrypt(secret.encode(), context=key_id.encode())
        now = self._clock()
        await self._store.identity.create_access_key(key_id, user.user_id, encrypted, now)
        log.info("access key %s created for %s by %s", key_id, user.name, principal.user_name)
        return {
            "AccessKey": {
                "UserName": user.name,
                "AccessKeyId": key_id,
                "Status": KeyStatus.ACTIVE.value,
                "SecretAccessKey": secret,
                "CreateDate": now,
            }
        }

    async def update_access_key(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        user = await self._user_or_caller(principal, body)
        try:
            status = KeyStatus(body["Status"])
        except ValueError as exc:  # the model also allows "Expired"
            raise ValidationError("Status must be Active or Inactive.") from exc
        await self._store.identity.update_access_key(user.user_id, body["AccessKeyId"], status)
        return {}

    async def delete_access_key(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        user = await self._user_or_caller(principal, body)
        await self._store.identity.delete_access_key(user.user_id, body["AccessKeyId"])
        log.info("access key %s of %s deleted by %s", body["AccessKeyId"], user.name,
                 principal.user_name)  # fmt: skip
        return {}

    async def list_access_keys(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        user = await self._user_or_caller(principal, body)
        page, more = _page(await self._store.identity.keys_of(user.user_id), body)
        return {"AccessKeyMetadata": [self._key(k) for k in page], **more}

    async def get_access_key_last_used(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        key = await self._store.identity.access_key(body["AccessKeyId"])
        if key is None:
            raise NoSuchEntity(f"The Access Key with id {body['AccessKeyId']} cannot be found.")
        used: dict[str, Any] = {"ServiceName": "N/A", "Region": "N/A"}
        if key.last_used_at is not None:
            used = {"LastUsedDate": key.last_used_at, "ServiceName": "ssm", "Region": self._region}
        return {"UserName": key.user_name, "AccessKeyLastUsed": used}

    # ---- managed policies ---------------------------------------------------------------------

    async def _existing_policy(self, arn: str) -> ManagedPolicy:
        policy = await self._store.policies.get(arn)
        if policy is None:
            raise NoSuchEntity(f"Policy {arn} does not exist or is not attachable.")
        return policy

    async def create_policy(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        document: str = body["PolicyDocument"]
        check_policy_document(document)
        name: str = body["PolicyName"]
        path: str = body.get("Path", "/")
        now = self._clock()
        policy = ManagedPolicy(
            policy_id=_new_id("ANPA"),
            arn=f"arn:aws:iam::{self._account}:policy{path}{name}",
            name=name,
            path=path,
            description=body.get("Description", ""),
            default_version_id="v1",
            builtin=False,
            created_at=now,
            updated_at=now,
        )
        await self._store.policies.create(policy, document)
        log.info("policy %s created by %s", policy.arn, principal.user_name)
        return {"Policy": self._policy(policy)}

    async def get_policy(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        return {"Policy": self._policy(await self._existing_policy(body["PolicyArn"]))}

    async def delete_policy(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        await self._store.policies.delete(body["PolicyArn"])
        log.info("policy %s deleted by %s", body["PolicyArn"], principal.user_name)
        return {}

    async def list_policies(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        policies = await self._store.policies.listing(
            scope=PolicyScope(body.get("Scope", "All")),
            only_attached=body.get("OnlyAttached", False),
        )
        prefix: str = body.get("PathPrefix", "/")
        policies = [p for p in policies if p.path.startswith(prefix)]
        page, more = _page(policies, body)
        return {"Policies": [self._policy(p) for p in page], **more}

    async def create_policy_version(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        document: str = body["PolicyDocument"]
        check_policy_document(document)
        version = await self._store.policies.create_version(
            body["PolicyArn"],
            document,
            set_default=body.get("SetAsDefault", False),
            now=self._clock(),
        )
        return {"PolicyVersion": self._version(version, document=False)}

    async def get_policy_version(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        version = await self._store.policies.version(body["PolicyArn"], body["VersionId"])
        return {"PolicyVersion": self._version(version, document=True)}

    async def list_policy_versions(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        page, more = _page(await self._store.policies.versions(body["PolicyArn"]), body)
        return {"Versions": [self._version(v, document=False) for v in page], **more}

    async def set_default_policy_version(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.policies.set_default_version(
            body["PolicyArn"], body["VersionId"], self._clock()
        )
        return {}

    async def delete_policy_version(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.policies.delete_version(body["PolicyArn"], body["VersionId"])
        return {}

    # ---- attachments --------------------------------------------------------------------------

    async def attach_user_policy(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.policies.attach(Owner.USER, body["UserName"], body["PolicyArn"])
        return {}

    async def detach_user_policy(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.policies.detach(Owner.USER, body["UserName"], body["PolicyArn"])
        return {}

    async def attach_group_policy(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.policies.attach(Owner.GROUP, body["GroupName"], body["PolicyArn"])
        return {}

    async def detach_group_policy(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.policies.detach(Owner.GROUP, body["GroupName"], body["PolicyArn"])
        return {}

    async def _attached(self, owner: Owner, name: str, body: dict[str, Any]) -> dict[str, Any]:
        page, more = _page(await self._store.policies.attached(owner, name), body)
        return {
            "AttachedPolicies": [{"PolicyName": p.name, "PolicyArn": p.arn} for p in page],
            **more,
        }

    async def list_attached_user_policies(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._attached(Owner.USER, body["UserName"], body)

    async def list_attached_group_policies(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._attached(Owner.GROUP, body["GroupName"], body)

    # ---- inline policies ----------------------------------------------------------------------

    async def _put(self, owner: Owner, name: str, body: dict[str, Any]) -> dict[str, Any]:
        document: str = body["PolicyDocument"]
        check_policy_document(document)
        await self._store.policies.put_inline(owner, name, body["PolicyName"], document)
        return {}

    async def put_user_policy(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        return await self._put(Owner.USER, body["UserName"], body)

    async def put_group_policy(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        return await self._put(Owner.GROUP, body["GroupName"], body)

    async def get_user_policy(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name, policy = body["UserName"], body["PolicyName"]
        document = await self._store.policies.inline(Owner.USER, name, policy)
        return {"UserName": name, "PolicyName": policy, "PolicyDocument": document}

    async def get_group_policy(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name, policy = body["GroupName"], body["PolicyName"]
        document = await self._store.policies.inline(Owner.GROUP, name, policy)
        return {"GroupName": name, "PolicyName": policy, "PolicyDocument": document}

    async def delete_user_policy(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.policies.delete_inline(Owner.USER, body["UserName"], body["PolicyName"])
        return {}

    async def delete_group_policy(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._store.policies.delete_inline(Owner.GROUP, body["GroupName"], body["PolicyName"])
        return {}

    async def list_user_policies(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        page, more = _page(
            await self._store.policies.inline_names(Owner.USER, body["UserName"]), body
        )
        return {"PolicyNames": page, **more}

    async def list_group_policies(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        names = await self._store.policies.inline_names(Owner.GROUP, body["GroupName"])
        page, more = _page(names, body)
        return {"PolicyNames": page, **more}


# ---- helpers ---------------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    """IAM's unique ids: a 4-letter kind (``AIDA`` user, ``AGPA`` group, ``ANPA`` policy) and
    16 upper-case hex digits."""
    return prefix + secrets.token_hex(8).upper()


def _tag_map(tags: Sequence[dict[str, str]]) -> dict[str, str]:
    """IAM's ``[{"Key": k, "Value": v}]`` as a dict (a repeated key: the last one wins)."""
    return {tag["Key"]: tag.get("Value", "") for tag in tags}


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _page(items: Sequence[T], body: dict[str, Any]) -> tuple[list[T], dict[str, Any]]:
    """IAM's paging: ``MaxItems`` (default 100) from ``Marker`` (an offset this server issued);
    the page and ``IsTruncated`` (with the next ``Marker`` when it is true)."""
    limit: int = body.get("MaxItems", DEFAULT_MAX_ITEMS)
    marker = body.get("Marker")
    offset = 0
    if marker is not None:
        if not (isinstance(marker, str) and marker.isascii() and marker.isdigit()):
            raise ValidationError("Invalid Marker.")
        if len(marker) > 9:
            raise ValidationError("Invalid Marker.")
        offset = int(marker)
    page = list(items[offset : offset + limit])
    more = len(items) > offset + limit
    extra: dict[str, Any] = {"IsTruncated": more}
    if more:
        extra["Marker"] = str(offset + limit)
    return page, extra
