"""``Hatchway.SimulatePrincipalPolicy``: what the policies of a user decide, and why.

IAM's operation of the same name, with its shapes, evaluated by the same ``authz.Authorizer``
that guards every real request, so a simulation cannot disagree with enforcement. Resources
may be given as ARNs or, as a Hatchway convenience, as a bare node id (``mi-…``), session id
or document name, expanded to this server's ARNs; a node's current tags are part of the
context, as they are for a real request.
"""

from __future__ import annotations

import re
from typing import Any, Final

from hatchway.errors import NoSuchEntity, ValidationError
from hatchway.server.authz import ANY, Authorizer, Resource
from hatchway.server.principal import Principal
from hatchway.store.store import Store

NODE_ID: Final = re.compile(r"^mi-[0-9a-f]{17}$")
NODE_ARN: Final = re.compile(
    r"^arn:(?:aws|hatchway):(?:ssm|ec2):[^:]*:[^:]*:(?:managed-instance|instance)/(mi-[0-9a-f]{17})$"
)
SESSION_ARN: Final = re.compile(r"^arn:(?:aws|hatchway):ssm:[^:]*:[^:]*:session/(.+)$")
DOCUMENT_NAME: Final = re.compile(r"^[a-zA-Z0-9_\-.]{3,128}$")
MAX_EVALUATIONS: Final = 1000
"""Action × resource pairs evaluated by one call."""


class Simulator:
    """Evaluates a user's policies for given actions and resources, explaining each decision."""

    def __init__(self, store: Store, authz: Authorizer) -> None:
        self._store = store
        self._authz = authz

    async def simulate_principal_policy(
        self, caller: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        user_name = _user_name(body["PolicySourceArn"])
        user = await self._store.identity.user_by_name(user_name)
        if user is None:
            raise NoSuchEntity(f"The user with name {user_name} cannot be found.")
        actions: list[str] = body["ActionNames"]
        names: list[str] = body.get("ResourceArns") or ["*"]
        if len(actions) * len(names) > MAX_EVALUATIONS:
            raise ValidationError(f"at most {MAX_EVALUATIONS} action × resource pairs per call")
        extra = _context(body.get("ContextEntries", []))
        principal = Principal(
            user.user_id,
            user.name,
            caller.account_id,
            "",
            tags=dict(user.tags),
            source_ip=caller.source_ip,
            secure_transport=caller.secure_transport,
        )
        policies = await self._authz.policies_of(user.user_id)
        results = []
        for name in names:
            resource = await self.resource(name)
            for action in actions:
                decision = self._authz.decide(policies, principal, action, resource, extra)
                matched = (
                    [{"SourcePolicyId": decision.policy, "SourcePolicyType": "IAM Policy"}]
                    if decision.policy is not None
                    else []
                )
                results.append(
                    {
                        "EvalActionName": action,
                        "EvalResourceName": resource.arn,
                        "EvalDecision": decision.outcome,
                        "MatchedStatements": matched,
                        "MissingContextValues": [],
                        # Hatchway extensions: which statement decided, in words.
                        **({"Statement": decision.statement} if decision.statement else {}),
                        "Explanation": decision.explain(),
                    }
                )
        return {"EvaluationResults": results, "IsTruncated": False}

    async def resource(self, name: str) -> Resource:
        """The resource a simulation names: an ARN, ``*``, or a bare node id, session id or
        document name (expanded to this server's ARNs, with the node's tags)."""
        arns = self._authz.arns
        if name == "*":
            return ANY
        node = NODE_ID.match(name) or NODE_ARN.match(name)
        if node:
            node_id = node.group(1) if node.re is NODE_ARN else name
            record = await self._store.nodes.get(node_id)
            return arns.node(node_id, record.tags if record is not None else None)
        session_match = SESSION_ARN.match(name)
        session_id = session_match.group(1) if session_match else None
        if session_id is None and not name.startswith("arn:"):
            session = await self._store.sessions.get(name)
            session_id = name if session is not None else None
        if session_id is not None:
            session = await self._store.sessions.get(session_id)
            return arns.session(session_id, session.owner_id if session is not None else "")
        if name.startswith("arn:"):
            return Resource((name,))
        if DOCUMENT_NAME.match(name):
            return arns.document(name)
        raise ValidationError(
            f"{name[:64]!r} is neither an ARN nor a node id, session id or document name"
        )


def _user_name(source: str) -> str:
    """``arn:aws:iam::<account>:user/<path/>name`` (or a bare user name) → the user name."""
    if source.startswith("arn:"):
        parts = source.split(":", 5)
        if len(parts) != 6 or not parts[5].startswith("user/"):
            raise ValidationError("PolicySourceArn must be a user's ARN (…:user/NAME)")
        return parts[5].rpartition("/")[2]
    return source


def _context(entries: list[dict[str, Any]]) -> dict[str, str | tuple[str, ...]]:
    out: dict[str, str | tuple[str, ...]] = {}
    for entry in entries:
        values = [str(v) for v in entry.get("ContextKeyValues", [])]
        key = entry.get("ContextKeyName")
        if not key:
            raise ValidationError("each ContextEntry needs a ContextKeyName")
        multi = str(entry.get("ContextKeyType", "")).endswith("List")
        out[key] = tuple(values) if multi or len(values) != 1 else values[0]
    return out
