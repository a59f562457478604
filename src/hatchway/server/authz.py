"""Authorization: the one place that decides who may do what (docs/design.md, "Access control").

Every entry point (each API operation, the client's and the agent's data-channel upgrades, the
control-channel upgrade, and the re-check of live sessions) asks :meth:`Authorizer.authorize`
(or :meth:`Authorizer.decide`) and acts on the answer. This module only gathers the inputs —
the principal's policies from the store, the resource's ARNs and tags, the request's context
keys — and hands them to the pure evaluator (``hatchway.policy``), which decides.

Resources are ARNs, with the aliases AWS's published policies use for the same thing, so that
those policies work verbatim: a node is ``arn:aws:ssm:R:A:managed-instance/mi-…`` and also
``arn:aws:ec2:R:A:instance/mi-…``; a built-in document is also reachable with an empty account
(AWS's own documents have no account in their ARN); a session is ``…:session/<id>`` and also
``…:session/<owner's user id>-<suffix>`` (AWS's examples restrict with
``session/${aws:userid}-*`` as well as ``session/${aws:username}-*``). Partition ``hatchway``
is accepted wherever ``aws`` is (the evaluator treats them alike).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

from hatchway.errors import AccessDenied
from hatchway.policy import Decision, NamedPolicy, PolicyDocument, Request, evaluate, parse_policy
from hatchway.server.documents import DEFAULT_SHELL_DOCUMENT
from hatchway.server.events.catalog import EventCatalog, publish
from hatchway.server.principal import Principal
from hatchway.store.records import Session
from hatchway.store.store import Store

log = logging.getLogger(__name__)

_NO_TAGS: Mapping[str, str] = MappingProxyType({})
BUILTIN_DOCUMENT_PREFIXES: Final = ("AWS-", "SSM-")
"""Documents AWS owns (and Hatchway ships): their AWS ARN has no account."""


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource a request acts on: its ARN, the aliases that name the same thing, and its
    tags (``ssm:resourceTag/<k>`` and ``aws:ResourceTag/<k>`` in conditions)."""

    arns: tuple[str, ...]
    tags: Mapping[str, str] = field(default_factory=lambda: _NO_TAGS)
    default_document: bool = False
    """The default shell document: as on AWS, it needs an explicit allow only when one of the
    principal's policies tests ``ssm:SessionDocumentAccessCheck`` (an explicit deny always
    applies), so AWS's published policies that name only nodes work as documented."""

    @property
    def arn(self) -> str:
        return self.arns[0]


ANY: Final = Resource(("*",))
"""The resource of an action that acts on no particular resource (IAM: ``"Resource": "*"``)."""


class Arns:
    """ARNs of this server's resources (its region and account)."""

    def __init__(self, region: str, account_id: str) -> None:
        self.region = region
        self.account_id = account_id

    def node(self, node_id: str, tags: Mapping[str, str] | None = None) -> Resource:
        r, a = self.region, self.account_id
        return Resource(
            (
                f"arn:aws:ssm:{r}:{a}:managed-instance/{node_id}",
                f"arn:aws:ec2:{r}:{a}:instance/{node_id}",
            ),
            MappingProxyType(dict(tags or {})),
        )

    def document(self, name: str) -> Resource:
        arn = f"arn:aws:ssm:{self.region}:{self.account_id}:document/{name}"
        if name.startswith(BUILTIN_DOCUMENT_PREFIXES):
            return Resource(
                (arn, f"arn:aws:ssm:{self.region}::document/{name}"),
                default_document=name == DEFAULT_SHELL_DOCUMENT,
            )
        return Resource((arn,))

    def session(self, session_id: str, owner_id: str = "") -> Resource:
        base = f"arn:aws:ssm:{self.region}:{self.account_id}:session/"
        arns = [base + session_id]
        _, sep, suffix = session_id.rpartition("-")
        if owner_id and sep:
            arns.append(f"{base}{owner_id}-{suffix}")
        return Resource(tuple(arns))

    def user(self, name: str) -> Resource:
        return Resource((f"arn:aws:iam::{self.account_id}:user/{name}",))

    def group(self, name: str) -> Resource:
        return Resource((f"arn:aws:iam::{self.account_id}:group/{name}",))

    @staticmethod
    def policy(arn: str) -> Resource:
        return Resource((arn,))


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> PolicyDocument:
    """Stored policies are validated when written; parse each distinct text once."""
    return parse_policy(text)


NODE_POLICY: Final = NamedPolicy(
    "hatchway built-in node policy",
    parse_policy(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "OwnChannelsOnly",
                    "Effect": "Allow",
                    "Action": ["ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"],
                    "Resource": "arn:aws:ssm:*:*:managed-instance/${aws:userid}",
                }
            ],
        }
    ),
)
"""What every registered node may do: open its own control channel and the data channels of
sessions on itself. Nodes have no other identity; this is their whole policy."""


def denial_message(who: str, action: str, resource: Resource, decision: Decision) -> str:
    """AWS's wording, plus the reason: what was refused, on what, and why."""
    base = f"User: {who} is not authorized to perform: {action} on resource: {resource.arn}"
    if decision.outcome == "explicitDeny":
        return f"{base} with an explicit deny ({decision.explain()})"
    return f"{base} because no identity-based policy allows the {action} action"


class Authorizer:
    """Gathers a principal's policies and a request's context, asks the evaluator, enforces.

    Args:
        store: users, groups, policies and their attachments (``store.identity``).
        arns: this server's ARN builder.
        clock: the wall clock (``aws:CurrentTime``).
    """

    def __init__(self, store: Store, arns: Arns, clock: Callable[[], float]) -> None:
        self._store = store
        self.arns = arns
        self._clock = clock
        self.events = EventCatalog(clock)

    async def policies_of(self, user_id: str) -> list[NamedPolicy]:
        """Every policy that applies to the user (its own and its groups'), parsed."""
        stored = await self._store.identity.policies_for(user_id)
        return [NamedPolicy(p.label, _parsed(p.document)) for p in stored]

    def context(
        self,
        principal: Principal,
        resource: Resource,
        extra: Mapping[str, str | tuple[str, ...]] | None = None,
    ) -> dict[str, str | tuple[str, ...]]:
        """The condition keys of a request by ``principal`` on ``resource``."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        ctx: dict[str, str | tuple[str, ...]] = {
            "aws:username": principal.user_name,
            "aws:userid": principal.user_id,
            "aws:PrincipalArn": principal.arn,
            "aws:PrincipalAccount": principal.account_id,
            "aws:PrincipalType": "User",
            "aws:CurrentTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "aws:EpochTime": str(int(now.timestamp())),
            "aws:SecureTransport": "true" if principal.secure_transport else "false",
            "aws:RequestedRegion": self.arns.region,
        }
        if principal.source_ip:
            ctx["aws:SourceIp"] = principal.source_ip
        if principal.tags:
            ctx["aws:PrincipalTagKeys"] = tuple(principal.tags)
        for key, value in principal.tags.items():
            ctx[f"aws:PrincipalTag/{key}"] = value
        for key, value in resource.tags.items():
            ctx[f"aws:ResourceTag/{key}"] = value
            ctx[f"ssm:resourceTag/{key}"] = value
        if extra:
            ctx.update(extra)
        return ctx

    def decide(
        self,
        policies: Sequence[NamedPolicy],
        principal: Principal,
        action: str,
        resource: Resource,
        extra: Mapping[str, str | tuple[str, ...]] | None = None,
    ) -> Decision:
        """The decision for one request, from policies already gathered (no I/O)."""
        request = Request(action, resource.arns, self.context(principal, resource, extra))
        decision = evaluate(policies, request)
        if (
            resource.default_document
            and decision.outcome == "implicitDeny"
            and not asks_document_check(policies)
        ):
            return DEFAULT_DOCUMENT_ALLOWED
        return decision

    async def authorize(
        self,
        principal: Principal,
        action: str,
        resources: Sequence[Resource],
        extra: Mapping[str, str | tuple[str, ...]] | None = None,
        *,
        policies: Sequence[NamedPolicy] | None = None,
    ) -> list[Decision]:
        """Allow the request only if every resource is allowed; returns the decision for each
        resource (with the statement that allowed it, for the audit trail).

        Raises:
            AccessDenied: naming the action, the resource and why (AWS's wording).
        """
        if policies is None:
            policies = await self.policies_of(principal.user_id)
        decisions: list[Decision] = []
        for resource in resources:
            decision = self.decide(policies, principal, action, resource, extra)
            if not decision.allowed:
                log.info(
                    "denied %s %s on %s: %s",
                    principal.arn,
                    action,
                    resource.arn,
                    decision.explain(),
                )
                message = denial_message(principal.arn, action, resource, decision)
                await publish(
                    self._store.events,
                    self.events.access_denied(
                        principal=principal.arn,
                        action=action,
                        resource=resource.arn,
                        reason=message,
                        source_ip=principal.source_ip,
                    ),
                )
                denied = AccessDenied(message)
                denied.decision = decision
                raise denied
            decisions.append(decision)
        return decisions

    def authorize_node(self, node_id: str, action: str, target: str) -> None:
        """A node may open its own control channel and data channels on itself only.

        Raises:
            AccessDenied: anything else.
        """
        principal = Principal(node_id, node_id, self.arns.account_id, node_id)
        resource = self.arns.node(target)
        decision = self.decide((NODE_POLICY,), principal, action, resource)
        if not decision.allowed:
            raise AccessDenied(
                denial_message(f"node {node_id}", action, resource, decision).replace(
                    "identity-based ", ""
                )
            )

    async def session_decision(self, session: Session, *, secure: bool) -> Decision:
        """Whether the session's owner may still run it now: ``ssm:StartSession`` on its node
        (with the node's current tags) and on its document, under the owner's current
        policies, tags and the address the session was started from.

        A session whose owner no longer exists is denied.
        """
        owner = await self._store.identity.user(session.owner_id) if session.owner_id else None
        if owner is None:
            return _DENIED_NO_OWNER
        principal = Principal(
            owner.user_id,
            owner.name,
            self.arns.account_id,
            "",
            tags=MappingProxyType(dict(owner.tags)),
            source_ip=session.source_ip,
            secure_transport=secure,
        )
        policies = await self.policies_of(owner.user_id)
        node = await self._store.nodes.get(session.target)
        node_resource = self.arns.node(session.target, node.tags if node is not None else None)
        extra = {"ssm:SessionDocumentAccessCheck": "true"}
        for resource in (node_resource, self.arns.document(session.document_name)):
            decision = self.decide(policies, principal, "ssm:StartSession", resource, extra)
            if not decision.allowed:
                return decision
        return decision


def asks_document_check(policies: Sequence[NamedPolicy]) -> bool:
    """Whether a statement of ``policies`` tests ``ssm:SessionDocumentAccessCheck``: then, as
    on AWS, even the default shell document must be allowed explicitly."""
    return any(
        condition.key.lower() == "ssm:sessiondocumentaccesscheck"
        for policy in policies
        for statement in policy.document.statements
        for condition in statement.conditions
    )


class _DefaultDocumentDecision(Decision):
    def explain(self) -> str:
        return (
            f"allowed: {DEFAULT_SHELL_DOCUMENT} is the default shell document and no policy "
            "sets ssm:SessionDocumentAccessCheck"
        )


DEFAULT_DOCUMENT_ALLOWED: Final[Decision] = _DefaultDocumentDecision(
    allowed=True, outcome="allowed", policy=None, statement=None, statement_index=None
)


_DENIED_NO_OWNER: Final = Decision(
    allowed=False,
    outcome="implicitDeny",
    policy=None,
    statement=None,
    statement_index=None,
)
