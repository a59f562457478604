"""Properties of evaluate over random policies and requests (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.policy import NamedPolicy, Request, evaluate, parse_policy

ACTIONS = ["ssm:StartSession", "ssm:TerminateSession", "ssm:DescribeSessions", "hatchway:GetUser"]
ACTION_PATTERNS = [*ACTIONS, "ssm:*", "*", "ssm:*Session", "hatchway:Get*", "ssm:?tart*"]
RESOURCES = [
    ("arn:hatchway:ssm:local:1:managed-instance/mi-1", "arn:hatchway:ec2:local:1:instance/mi-1"),
    ("arn:hatchway:ssm:local:1:session/dev-1",),
    ("arn:hatchway:ssm:local:1:session/ops-1",),
    ("*",),
]
RESOURCE_PATTERNS = [
    "*",
    "arn:aws:ec2:*:*:instance/*",
    "arn:aws:ssm:*:*:session/${aws:username}-*",
    "arn:hatchway:ssm:local:1:managed-instance/mi-?",
    "arn:aws:ssm:*:*:document/*",
]
CONDITIONS: list[dict[str, Any]] = [
    {"StringEquals": {"ssm:resourceTag/Env": "dev"}},
    {"StringNotLike": {"ssm:resourceTag/Env": "prod*"}},
    {"Bool": {"aws:SecureTransport": "true"}},
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"Null": {"ssm:resourceTag/Env": "true"}},
    {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}},
]
CONTEXTS: list[dict[str, Any]] = [
    {},
    {"aws:username": "dev", "ssm:resourceTag/Env": "dev", "aws:SecureTransport": "true"},
    {"aws:username": "ops", "ssm:resourceTag/Env": "prod", "aws:SourceIp": "10.1.1.1"},
    {"aws:TagKeys": ("a", "c"), "aws:SourceIp": "192.168.1.1"},
]

statements = st.fixed_dictionaries(
    {
        "Effect": st.sampled_from(["Allow", "Deny"]),
        "Action": st.lists(st.sampled_from(ACTION_PATTERNS), min_size=1, max_size=3),
        "Resource": st.lists(st.sampled_from(RESOURCE_PATTERNS), min_size=1, max_size=2),
    },
    optional={"Condition": st.sampled_from(CONDITIONS)},
)


def named(label: str, raw: list[dict[str, Any]]) -> NamedPolicy:
    return NamedPolicy(label, parse_policy({"Version": "2012-10-17", "Statement": raw}))


policies = st.lists(st.lists(statements, min_size=1, max_size=4), max_size=4).map(
    lambda docs: [named(f"p{i}", raw) for i, raw in enumerate(docs)]
)
requests = st.builds(
    Request,
    action=st.sampled_from(ACTIONS),
    resources=st.sampled_from(RESOURCES),
    context=st.sampled_from(CONTEXTS),
)


def applies(policy: NamedPolicy, request: Request) -> list[str]:
    """Effects of the statements that apply, by evaluating each statement alone."""
    effects = []
    for statement in policy.document.statements:
        alone = named("x", [json_of(policy, statement.index)])
        if evaluate([alone], request).outcome != "implicitDeny":
            effects.append(statement.effect.value)
    return effects


def json_of(policy: NamedPolicy, index: int) -> dict[str, Any]:
    import json

    raw = json.loads(policy.document.text)["Statement"]
    return dict(raw[index]) if isinstance(raw, list) else dict(raw)


@settings(max_examples=200, deadline=None)
@given(policies, requests)
def test_deny_wins_and_outcome_matches_the_statements(
    ps: list[NamedPolicy], request: Request
) -> None:
    effects = [e for p in ps for e in applies(p, request)]
    expected = "explicitDeny" if "Deny" in effects else "allowed" if effects else "implicitDeny"
    decision = evaluate(ps, request)
    assert decision.outcome == expected
    assert decision.allowed is (expected == "allowed")


@settings(max_examples=200, deadline=None)
@given(policies, requests, st.randoms(use_true_random=False))
def test_outcome_is_independent_of_policy_order(
    ps: list[NamedPolicy], request: Request, rnd: Any
) -> None:
    shuffled = list(ps)
    rnd.shuffle(shuffled)
    first = evaluate(ps, request)
    assert evaluate(ps, request) == first  # deterministic (and the caches change nothing)
    assert evaluate(shuffled, request).outcome == first.outcome


@settings(max_examples=200, deadline=None)
@given(policies, requests, statements)
def test_an_allow_never_removes_and_a_deny_never_adds_access(
    ps: list[NamedPolicy], request: Request, extra: dict[str, Any]
) -> None:
    before = evaluate(ps, request)
    after = evaluate([*ps, named("extra", [extra])], request)
    if extra["Effect"] == "Allow":
        assert after.allowed or not before.allowed
        assert after.outcome != "explicitDeny" or before.outcome == "explicitDeny"
    else:
        assert not after.allowed or before.allowed
