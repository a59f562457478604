"""Deciding one request against a principal's policies, the way IAM decides identity policies.

An explicit Deny in any statement that applies wins; otherwise an Allow that applies allows;
otherwise the request is implicitly denied. A statement applies when its Action (NotAction)
selects the action, its Resource (NotResource) selects the resource and all its conditions
hold. The decision names the statement and policy that decided it, for explanations and audit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .document import Effect, PolicyDocument, Statement

ContextValue = str | tuple[str, ...]  # every context value is a string or a tuple of strings
Outcome = Literal["allowed", "explicitDeny", "implicitDeny"]  # IAM's EvalDecision values


@dataclass(frozen=True, slots=True)
class NamedPolicy:
    """A policy and where it came from (an ARN, or ``user/<name>/<PolicyName>``)."""

    label: str
    document: PolicyDocument


@dataclass(frozen=True, slots=True)
class Request:
    """What is asked: an action on one resource, with the request's condition keys.

    ``resources`` is one resource under its equivalent names (a node is both
    ``…:managed-instance/mi-…`` and ``…:instance/mi-…``), or ``("*",)`` for an action without a
    resource. Context keys are matched case-insensitively (two keys that differ only in case:
    the later one counts); a value is a string or a tuple of strings (a multi-valued key; an
    empty tuple counts as absent).
    """

    action: str
    resources: tuple[str, ...]
    context: Mapping[str, ContextValue] = field(default_factory=dict)
    _action: str = field(init=False, repr=False, compare=False)
    _context: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.resources, str):
            raise TypeError("Request.resources is a tuple of aliases, not a string")
        object.__setattr__(self, "resources", tuple(self.resources))
        object.__setattr__(self, "_action", self.action.lower())
        object.__setattr__(
            self,
            "_context",
            {
                key.lower(): (value,) if isinstance(value, str) else tuple(value)
                for key, value in self.context.items()
            },
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer, and the statement that gave it (none for an implicit deny)."""

    allowed: bool
    outcome: Outcome
    policy: str | None
    statement: str | None
    statement_index: int | None

    def explain(self) -> str:
        """One line for people: which statement of which policy decided, or that none allowed."""
        if self.outcome == "implicitDeny":
            return "no policy allows it (implicit deny)"
        verb = "allowed" if self.allowed else "denied"
        return f"{verb} by statement {_quoted(self.statement)} of policy {self.policy}"


DENY = Effect.DENY
IMPLICIT_DENY = Decision(False, "implicitDeny", None, None, None)


def _quoted(name: str | None) -> str:
    if name is None or name.startswith("Statement["):
        return str(name)
    return f'"{name}"'


def _decided(outcome: Outcome, policy: NamedPolicy, statement: Statement) -> Decision:
    return Decision(
        allowed=outcome == "allowed",
        outcome=outcome,
        policy=policy.label,
        statement=statement.name,
        statement_index=statement.index,
    )


def evaluate(policies: Sequence[NamedPolicy], request: Request) -> Decision:
    """Decide ``request`` under ``policies`` (all of a principal's identity policies).

    The outcome does not depend on the order of ``policies``; the statement reported for an
    allow or a deny is the first that applies in that order.
    """
    action = request._action
    context = request._context
    resources = request.resources
    allowed_by: tuple[NamedPolicy, Statement] | None = None
    for policy in policies:
        for statement, check_resource in policy.document.candidates(action, resources):
            is_deny = statement.effect is DENY
            if not is_deny and allowed_by is not None:
                continue  # one Allow is enough; only a Deny can still change the answer
            if check_resource and not statement.covers_resource(resources, context):
                continue
            for condition in statement.conditions:
                if not condition.holds(context):
                    break
            else:
                if is_deny:
                    return _decided("explicitDeny", policy, statement)
                allowed_by = (policy, statement)
    if allowed_by is None:
        return IMPLICIT_DENY
    return _decided("allowed", *allowed_by)
