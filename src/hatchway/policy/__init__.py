"""IAM-style policies: documents, their validation, and the decision on a request.

This package owns the policy language Hatchway shares with AWS (identity-based policy
documents: Version, Statement, Sid, Effect, Action/NotAction, Resource/NotResource, Condition
with IAM's operators and policy variables) and the one function that decides a request,
:func:`evaluate`. It is pure: no I/O, no clock, no asyncio. The server gathers a principal's
policies and the request context, asks :func:`evaluate`, and enforces the :class:`Decision`.
"""

from .document import MAX_POLICY_CHARS, Effect, PolicyDocument, Statement, parse_policy
from .errors import PolicyError
from .evaluate import ContextValue, Decision, NamedPolicy, Request, evaluate

__all__ = [
    "MAX_POLICY_CHARS",
    "ContextValue",
    "Decision",
    "Effect",
    "NamedPolicy",
    "PolicyDocument",
    "PolicyError",
    "Request",
    "Statement",
    "evaluate",
    "parse_policy",
]
