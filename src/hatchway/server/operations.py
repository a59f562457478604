"""Every API operation: its handler, the action it is authorized as, and its resources.

The table is the contract between the API edge and authorization: ``api.Api`` looks an
operation up here, asks ``authz.Authorizer`` about ``action`` on each of ``resources(...)``,
and only then calls ``handler``. An operation missing here cannot be called, and
tests/server/test_operations.py checks that every operation has an action and resources.

Resources follow AWS's service authorization reference where AWS has the operation:
StartSession acts on the node and on the document; the document operations on the document
they name (ListDocuments on ``*``); ResumeSession and TerminateSession on the
session; DeregisterManagedInstance and the tag operations on the node; the IAM operations on
the user, group or policy they name; listing and describing operations on ``*``. The key
service's (``TrentService.*``, actions ``kms:<Operation>``) act on the key's ARN, however the
request names the key (id, ARN, alias); CreateAlias and DeleteAlias on the alias's ARN and the
key's; Decrypt on the key its ciphertext names; CreateKey, ListKeys and ListAliases on ``*``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from hatchway.errors import InvalidCiphertext
from hatchway.server.authz import ANY, Arns, Resource
from hatchway.server.document_service import DocumentService
from hatchway.server.documents import DEFAULT_SHELL_DOCUMENT
from hatchway.server.events.service import EventService
from hatchway.server.iam import IamService
from hatchway.server.kms import KmsService
from hatchway.server.logs import LOGS, LogService, group_name_of
from hatchway.server.nodes import NodeService
from hatchway.server.principal import Principal
from hatchway.server.recordings import RecordingService
from hatchway.server.sessions import SessionService
from hatchway.server.simulate import Simulator
from hatchway.server.trail import AuditTrailService
from hatchway.store.store import Store

Handler = Callable[[Principal, dict[str, Any], web.Request], Awaitable[dict[str, Any]]]
Resolver = Callable[[Principal, dict[str, Any]], Awaitable[Sequence[Resource]]]

SSM: Final = "AmazonSSM"
HATCHWAY: Final = "Hatchway"
KMS: Final = "TrentService"
"""The key service's target prefix (AWS KMS's)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One API operation.

    Attributes:
        service: the target prefix (``AmazonSSM``, ``Hatchway`` or ``TrentService``).
        name: the operation (``StartSession``).
        action: what a policy must allow (``ssm:StartSession``).
        handler: does the work, once authorized.
        resources: the resources the request acts on (each must be allowed).
        extra_context: condition keys this operation adds to the request context.
        changes_access: a success may change who may do what (live sessions are re-checked).
        signing_name: the SigV4 service its requests are signed for (``logs`` for CloudWatch
            Logs' operations; ``ssm`` for SSM's and Hatchway's own).
    """

    service: str
    name: str
    action: str
    handler: Handler
    resources: Resolver
    extra_context: Mapping[str, str] | None = None
    changes_access: bool = False
    signing_name: str = "ssm"

    @property
    def target(self) -> str:
        return f"{self.service}.{self.name}"


# Which IAM operations act on what (IAM's service authorization reference). Each entry is the
# body member naming the resource; ``None`` for the caller itself when the member is absent.
USER_OPERATIONS: Final = frozenset(
    {
        "CreateUser", "GetUser", "DeleteUser", "TagUser", "UntagUser", "ListUserTags",
        "SetPassword", "DeleteLoginProfile", "CreateAccessKey", "UpdateAccessKey",
        "DeleteAccessKey", "ListAccessKeys", "ListGroupsForUser", "AttachUserPolicy",
        "DetachUserPolicy", "ListAttachedUserPolicies", "PutUserPolicy", "GetUserPolicy",
        "DeleteUserPolicy", "ListUserPolicies",
    }
)  # fmt: skip
GROUP_OPERATIONS: Final = frozenset(
    {
        "CreateGroup", "DeleteGroup", "GetGroup", "AddUserToGroup", "RemoveUserFromGroup",
        "AttachGroupPolicy", "DetachGroupPolicy", "ListAttachedGroupPolicies", "PutGroupPolicy",
        "GetGroupPolicy", "DeleteGroupPolicy", "ListGroupPolicies",
    }
)  # fmt: skip
POLICY_OPERATIONS: Final = frozenset(
    {
        "CreatePolicy", "GetPolicy", "DeletePolicy", "CreatePolicyVersion", "GetPolicyVersion",
        "ListPolicyVersions", "SetDefaultPolicyVersion", "DeletePolicyVersion",
    }
)  # fmt: skip
GLOBAL_OPERATIONS: Final = frozenset({"ListUsers", "ListGroups", "ListPolicies"})
KMS_GLOBAL_OPERATIONS: Final = frozenset({"CreateKey", "ListKeys", "ListAliases"})
KMS_ALIAS_OPERATIONS: Final = frozenset({"CreateAlias", "DeleteAlias"})
READ_PREFIXES: Final = ("Get", "List", "Simulate")


class Resolvers:
    """Builds each operation's resources from its request (and the store, for tags/owners)."""

    def __init__(self, store: Store, arns: Arns) -> None:
        self._store = store
        self._arns = arns

    async def anything(self, _: Principal, __: dict[str, Any]) -> Sequence[Resource]:
        return (ANY,)

    async def node(self, node_id: str) -> Resource:
        node = await self._store.nodes.get(node_id)
        return self._arns.node(node_id, node.tags if node is not None else None)

    async def start_session(self, _: Principal, body: dict[str, Any]) -> Sequence[Resource]:
        document = body.get("DocumentName") or DEFAULT_SHELL_DOCUMENT
        return (await self.node(body["Target"]), self._arns.document(document))

    async def document(self, _: Principal, body: dict[str, Any]) -> Sequence[Resource]:
        """The document an operation names (``…:document/<Name>``)."""
        return (self._arns.document(body["Name"]),)

    async def session(self, _: Principal, body: dict[str, Any]) -> Sequence[Resource]:
        session_id: str = body["SessionId"]
        session = await self._store.sessions.get(session_id)
        return (self._arns.session(session_id, session.owner_id if session else ""),)

    def node_member(self, member: str) -> Resolver:
        async def resolve(_: Principal, body: dict[str, Any]) -> Sequence[Resource]:
            return (await self.node(body[member]),)

        return resolve

    async def user(self, principal: Principal, body: dict[str, Any]) -> Sequence[Resource]:
        return (self._arns.user(body.get("UserName") or principal.user_name),)

    async def group(self, _: Principal, body: dict[str, Any]) -> Sequence[Resource]:
        return (self._arns.group(body["GroupName"]),)

    async def policy(self, _: Principal, body: dict[str, Any]) -> Sequence[Resource]:
        if "PolicyArn" in body:
            return (self._arns.policy(body["PolicyArn"]),)
        path = body.get("Path") or "/"
        name = body["PolicyName"]
        return (self._arns.policy(f"arn:aws:iam::{self._arns.account_id}:policy{path}{name}"),)

    async def key_owner(self, principal: Principal, body: dict[str, Any]) -> Sequence[Resource]:
        key = await self._store.identity.access_key(body["AccessKeyId"])
        return (self._arns.user(key.user_name if key is not None else principal.user_name),)

    async def event_subscription(self, _: Principal, body: dict[str, Any]) -> Sequence[Resource]:
        a = self._arns
        arn = f"arn:aws:hatchway:{a.region}:{a.account_id}:event-subscription/"
        return (Resource((arn + body["SubscriptionId"],)),)

    def log_group_arn(self, name: str) -> str:
        return f"arn:aws:logs:{self._arns.region}:{self._arns.account_id}:log-group:{name}"

    async def log_group(self, _: Principal, body: dict[str, Any]) -> Sequence[Resource]:
        """A log group: ``…:log-group:NAME``, also as ``…:log-group:NAME:*`` (how AWS's
        policies usually name it) and, for a request naming one stream, as that stream's ARN
        (``…:log-group:NAME:log-stream:SESSION-ID``), so policies can limit reading to one's
        own sessions. FilterLogEvents naming streams acts on each of them (each must be
        allowed)."""
        arn = self.log_group_arn(group_name_of(body))
        streams = body.get("logStreamNames")
        if not isinstance(streams, list) or not streams:
            stream = body.get("logStreamName")
            streams = [stream] if isinstance(stream, str) else []
        if not streams:
            return (Resource((arn, arn + ":*")),)
        return tuple(Resource((arn, arn + ":*", f"{arn}:log-stream:{name}")) for name in streams)

    async def simulated_user(
        self, principal: Principal, body: dict[str, Any]
    ) -> Sequence[Resource]:
        source: str = body["PolicySourceArn"]
        name = source.rpartition(":user/")[2].rpartition("/")[2] if ":user/" in source else source
        return (self._arns.user(name),)

    def for_kms(self, name: str, kms: KmsService) -> Resolver:
        """The resources of the key service's operation ``name``."""

        async def key(_: Principal, body: dict[str, Any]) -> Sequence[Resource]:
            return (await kms.resource(body["KeyId"]),)

        async def alias_and_key(_: Principal, body: dict[str, Any]) -> Sequence[Resource]:
            alias = Resource((kms.alias_arn(body["AliasName"]),))
            target = body.get("TargetKeyId") or body["AliasName"]
            return (alias, await kms.resource(target))

        async def ciphertext(_: Principal, body: dict[str, Any]) -> Sequence[Resource]:
            # The key the blob names; a missing or malformed blob is refused as a request on
            # "*" (only a caller allowed kms:Decrypt on every key learns it is malformed).
            try:
                return (kms.blob_resource(body["CiphertextBlob"]),)
            except (KeyError, InvalidCiphertext):
                return (ANY,)

        if name in KMS_GLOBAL_OPERATIONS:
            return self.anything
        if name in KMS_ALIAS_OPERATIONS:
            return alias_and_key
        if name == "Decrypt":
            return ciphertext
        return key

    def for_iam(self, name: str) -> Resolver:
        if name in USER_OPERATIONS:
            return self.user
        if name in GROUP_OPERATIONS:
            return self.group
        if name in POLICY_OPERATIONS:
            return self.policy
        if name in GLOBAL_OPERATIONS:
            return self.anything
        if name == "GetAccessKeyLastUsed":
            return self.key_owner
        if name == "SimulatePrincipalPolicy":
            return self.simulated_user
        raise LookupError(f"no resource mapping for the IAM operation {name}")


def ssm_operation(
    name: str,
    handler: Handler,
    resources: Resolver,
    *,
    extra_context: Mapping[str, str] | None = None,
    changes_access: bool = False,
) -> Operation:
    return Operation(SSM, name, f"ssm:{name}", handler, resources, extra_context, changes_access)


def hatchway_operation(name: str, handler: Handler, resources: Resolver) -> Operation:
    changes = not name.startswith(READ_PREFIXES)
    return Operation(HATCHWAY, name, f"hatchway:{name}", handler, resources, None, changes)


def stream_base(public_url: str | None, tls: bool, request: web.Request) -> str:
    """Base of StreamUrl: ``--public-url`` or the signed Host (docs/protocol.md §2.3)."""
    if public_url:
        base = public_url.rstrip("/")
        return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{'wss' if tls else 'ws'}://{request.host}"


def all_operations(
    resolvers: Resolvers,
    *,
    public_url: str | None,
    tls: bool,
    sessions: SessionService,
    nodes: NodeService,
    iam: IamService,
    simulator: Simulator,
    trail: AuditTrailService,
    events: EventService | None = None,
    recordings: RecordingService | None = None,
    kms: KmsService | None = None,
    logs: LogService | None = None,
    documents: DocumentService | None = None,
    describe_cluster: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> list[Operation]:
    """The table of every operation this server serves."""

    def base(request: web.Request) -> str:
        return stream_base(public_url, tls, request)

    r = resolvers
    ops = [
        ssm_operation(
            "StartSession",
            lambda p, b, req: sessions.start(p, b, base(req)),
            r.start_session,
            extra_context={"ssm:SessionDocumentAccessCheck": "true"},
        ),
        ssm_operation(
            "ResumeSession", lambda p, b, req: sessions.resume(p, b, base(req)), r.session
        ),
        ssm_operation("TerminateSession", lambda p, b, _: sessions.terminate(p, b), r.session),
        ssm_operation("DescribeSessions", lambda p, b, _: sessions.describe(b), r.anything),
        ssm_operation(
            "GetConnectionStatus", lambda p, b, _: nodes.connection_status(b), r.anything
        ),
        ssm_operation(
            "DescribeInstanceInformation", lambda p, b, _: nodes.describe_instances(b), r.anything
        ),
        ssm_operation(
            "CreateActivation", lambda p, b, _: nodes.create_activation(p, b), r.anything
        ),
        ssm_operation(
            "DescribeActivations", lambda p, b, _: nodes.describe_activations(b), r.anything
        ),
        ssm_operation("DeleteActivation", lambda p, b, _: nodes.delete_activation(b), r.anything),
        ssm_operation(
            "DeregisterManagedInstance",
            lambda p, b, _: nodes.deregister(p, b),
            r.node_member("InstanceId"),
        ),
        ssm_operation(
            "AddTagsToResource",
            lambda p, b, _: nodes.add_tags(p, b),
            r.node_member("ResourceId"),
            changes_access=True,
        ),
        ssm_operation(
            "RemoveTagsFromResource",
            lambda p, b, _: nodes.remove_tags(p, b),
            r.node_member("ResourceId"),
            changes_access=True,
        ),
        ssm_operation(
            "ListTagsForResource", lambda p, b, _: nodes.list_tags(b), r.node_member("ResourceId")
        ),
    ]
    for name, handler in (documents.operations() if documents is not None else {}).items():
        # AWS's authorization reference: ListDocuments acts on "*", the others on the document.
        resolve = r.anything if name == "ListDocuments" else r.document
        ops.append(ssm_operation(name, _ignore_request(handler), resolve))
    for name, handler in iam.operations().items():
        ops.append(hatchway_operation(name, _ignore_request(handler), r.for_iam(name)))
    ops.append(
        hatchway_operation(
            "SimulatePrincipalPolicy",
            _ignore_request(simulator.simulate_principal_policy),
            r.simulated_user,
        )
    )
    # The audit trail: reading it is an action of its own (hatchway:LookupEvents,
    # hatchway:VerifyAuditTrail), which only policies that name it (or "*") allow.
    ops.append(
        Operation(
            HATCHWAY,
            "LookupEvents",
            "hatchway:LookupEvents",
            lambda p, b, _: trail.lookup_events(b),
            r.anything,
        )
    )
    ops.append(
        Operation(
            HATCHWAY,
            "VerifyAuditTrail",
            "hatchway:VerifyAuditTrail",
            lambda p, b, _: trail.verify(b),
            r.anything,
        )
    )
    if describe_cluster is not None:
        cluster_status = describe_cluster  # the replicas (``hatchway cluster status``)
        ops.append(
            Operation(
                HATCHWAY,
                "DescribeCluster",
                "hatchway:DescribeCluster",
                lambda p, b, _: cluster_status(),
                r.anything,
            )
        )
    for name, handler in (events.operations() if events is not None else {}).items():
        resolve = r.event_subscription if name == "DeleteEventSubscription" else r.anything
        ops.append(Operation(HATCHWAY, name, f"hatchway:{name}", _ignore_request(handler), resolve))
    if recordings is not None:
        # Reading a recording is an action on the session it recorded (its ARN, as for
        # TerminateSession), so ``session/${aws:username}-*`` limits it to one's own.
        ops.append(
            hatchway_operation(
                "GetSessionRecording", lambda p, b, _: recordings.get_recording(b, p), r.session
            )
        )
    for name, handler in (kms.operations() if kms is not None else {}).items():
        assert kms is not None
        # Keys change no one's access to sessions: nothing to re-check (changes_access).
        ops.append(
            Operation(
                KMS,
                name,
                f"kms:{name}",
                _ignore_request(handler),
                r.for_kms(name, kms),
                signing_name="kms",
            )
        )
    for name, handler in (logs.operations() if logs is not None else {}).items():
        # CloudWatch Logs' actions; DescribeLogGroups lists every group (``Resource: *``).
        resolve = r.anything if name == "DescribeLogGroups" else r.log_group
        ops.append(
            Operation(
                LOGS,
                name,
                f"logs:{name}",
                _ignore_request(handler),
                resolve,
                signing_name="logs",
            )
        )
    return ops


def _ignore_request(
    handler: Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any]]],
) -> Handler:
    async def handle(principal: Principal, body: dict[str, Any], _: web.Request) -> dict[str, Any]:
        return await handler(principal, body)

    return handle
