"""Small builders shared by the policy tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hatchway.policy import ContextValue, Decision, NamedPolicy, Request, evaluate, parse_policy

ACCOUNT = "123456789012"
NODE = "mi-0123456789abcdef0"
# A node under both of its names, as the server asks about it.
NODE_ARNS = (
    f"arn:hatchway:ssm:local:{ACCOUNT}:managed-instance/{NODE}",
    f"arn:hatchway:ec2:local:{ACCOUNT}:instance/{NODE}",
)
DOCUMENT_ARN = f"arn:hatchway:ssm:local:{ACCOUNT}:document/SSM-SessionManagerRunShell"


def session_arn(session_id: str) -> str:
    return f"arn:hatchway:ssm:local:{ACCOUNT}:session/{session_id}"


def statement(**fields: Any) -> dict[str, Any]:
    """An Allow of everything unless ``fields`` say otherwise."""
    raw: dict[str, Any] = {"Effect": "Allow"}
    if "NotAction" not in fields:
        raw["Action"] = "*"
    if "NotResource" not in fields:
        raw["Resource"] = "*"
    return {**raw, **fields}


def policy(*statements: Mapping[str, Any], version: str = "2012-10-17") -> dict[str, Any]:
    return {"Version": version, "Statement": list(statements)}


def decide(
    document: Mapping[str, Any] | str,
    action: str = "ssm:StartSession",
    resources: tuple[str, ...] = NODE_ARNS,
    context: Mapping[str, ContextValue] | None = None,
    label: str = "test-policy",
) -> Decision:
    return evaluate(
        [NamedPolicy(label, parse_policy(document))],
        Request(action=action, resources=resources, context=dict(context or {})),
    )


def outcome(document: Mapping[str, Any] | str, **kwargs: Any) -> str:
    return decide(document, **kwargs).outcome


def condition_holds(condition: Mapping[str, Any], context: Mapping[str, ContextValue]) -> bool:
    """Whether an Allow with this Condition element allows a request with ``context``."""
    return decide(policy(statement(Condition=dict(condition))), context=context).allowed
