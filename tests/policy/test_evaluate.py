"""evaluate: IAM's decision rules, table by table."""

from __future__ import annotations

from typing import Any

import pytest

from hatchway.policy import ContextValue, NamedPolicy, Request, evaluate, parse_policy

from .helpers import (
    ACCOUNT,
    DOCUMENT_ARN,
    NODE,
    NODE_ARNS,
    condition_holds,
    decide,
    outcome,
    policy,
    session_arn,
    statement,
)

ALLOW_ALL = statement(Sid="All")


def test_no_policies_is_an_implicit_deny() -> None:
    decision = evaluate([], Request("ssm:StartSession", NODE_ARNS, {}))
    assert (decision.allowed, decision.outcome, decision.policy, decision.statement) == (
        False,
        "implicitDeny",
        None,
        None,
    )
    assert decision.explain() == "no policy allows it (implicit deny)"


def test_allow_and_explicit_deny_name_their_statement() -> None:
    allow = NamedPolicy("arn:aws:iam::123456789012:policy/Dev", parse_policy(policy(ALLOW_ALL)))
    deny = NamedPolicy(
        "user/dev-user/NoProd",
        parse_policy(
            policy(statement(Effect="Allow", Action="ssm:Describe*"), statement(Effect="Deny"))
        ),
    )
    request = Request("ssm:StartSession", NODE_ARNS, {})
    allowed = evaluate([allow], request)
    assert (allowed.allowed, allowed.outcome, allowed.statement, allowed.statement_index) == (
        True,
        "allowed",
        "All",
        0,
    )
    assert allowed.explain() == (
        'allowed by statement "All" of policy arn:aws:iam::123456789012:policy/Dev'
    )
    denied = evaluate([allow, deny], request)
    assert (denied.allowed, denied.outcome, denied.policy, denied.statement_index) == (
        False,
        "explicitDeny",
        "user/dev-user/NoProd",
        1,
    )
    assert denied.explain() == "denied by statement Statement[1] of policy user/dev-user/NoProd"
    assert evaluate([deny, allow], request) == denied


ACTIONS: list[tuple[Any, str, bool]] = [
    ("ssm:StartSession", "ssm:StartSession", True),
    ("ssm:StartSession", "SSM:startsession", True),  # actions are case-insensitive
    ("SSM:Start*", "ssm:StartSession", True),
    ("ssm:Start*", "ssm:TerminateSession", False),
    ("ssm:*Session", "ssm:ResumeSession", True),
    ("ssm:?tartSession", "ssm:StartSession", True),
    ("ssm:?tartSession", "ssm:SStartSession", False),
    ("ssm:StartSession", "ssm:StartSessions", False),  # whole-string match
    ("*", "hatchway:CreateUser", True),
    ("ssm:*", "ssmmessages:OpenDataChannel", False),
    (["ec2:DescribeInstances", "ssm:Describe*"], "ssm:DescribeSessions", True),
]


@pytest.mark.parametrize(("pattern", "action", "allowed"), ACTIONS)
def test_action_matching(pattern: Any, action: str, allowed: bool) -> None:
    assert decide(policy(statement(Action=pattern)), action=action).allowed is allowed


def test_not_action() -> None:
    document = policy(statement(NotAction=["hatchway:*", "ssm:Delete*"]))
    assert outcome(document, action="ssm:StartSession") == "allowed"
    assert outcome(document, action="hatchway:CreateUser") == "implicitDeny"
    assert outcome(document, action="ssm:deleteactivation") == "implicitDeny"
    deny_rest = policy(ALLOW_ALL, statement(Effect="Deny", NotAction="ssm:Describe*"))
    assert outcome(deny_rest, action="ssm:DescribeSessions") == "allowed"
    assert outcome(deny_rest, action="ssm:StartSession") == "explicitDeny"


RESOURCES: list[tuple[Any, tuple[str, ...], bool]] = [
    ("*", NODE_ARNS, True),
    ("*", ("*",), True),
    (f"arn:aws:ec2:local:{ACCOUNT}:instance/{NODE}", NODE_ARNS, True),  # alias, partition
    (f"arn:aws:ssm:local:{ACCOUNT}:managed-instance/{NODE}", NODE_ARNS, True),
    (f"arn:hatchway:ssm:local:{ACCOUNT}:managed-instance/{NODE}", NODE_ARNS, True),
    (
        f"arn:aws:ssm:local:{ACCOUNT}:managed-instance/{NODE}",
        (NODE_ARNS[0].replace("arn:hatchway", "arn:aws"),),
        True,
    ),
    (
        f"arn:hatchway:ssm:local:{ACCOUNT}:managed-instance/{NODE}",
        (NODE_ARNS[0].replace("arn:hatchway", "arn:aws"),),
        True,
    ),
    (f"arn:aws-cn:ssm:local:{ACCOUNT}:managed-instance/{NODE}", NODE_ARNS, False),
    (f"arn:*:ssm:local:{ACCOUNT}:managed-instance/{NODE}", NODE_ARNS, True),
    (f"arn:a?s:ssm:local:{ACCOUNT}:managed-instance/{NODE}", NODE_ARNS, True),
    (f"arn:hatch*:ssm:local:{ACCOUNT}:managed-instance/{NODE}", NODE_ARNS, True),
    ("arn:aws:ec2:*:*:instance/*", NODE_ARNS, True),
    ("arn:aws:ec2:us-east-1:*:instance/*", NODE_ARNS, False),  # region
    ("arn:aws:ec2:*:111122223333:instance/*", NODE_ARNS, False),  # account
    (f"arn:aws:ec2:local:{ACCOUNT}:instance/MI-0123456789ABCDEF0", NODE_ARNS, False),  # case
    (f"arn:aws:ec2:local:{ACCOUNT}:instance/mi-0123456789abcdef?", NODE_ARNS, True),
    (f"arn:aws:ec2:local:{ACCOUNT}:instance/mi-0123456789abcdef", NODE_ARNS, False),
    ("arn:aws:ssm:*:*:document/*", NODE_ARNS, False),
    ("arn:aws:*:*:*:*", NODE_ARNS, True),
    ("arn:aws:ssm*:*:*:*", NODE_ARNS, True),
    # A "*" in the first five parts stays within its part.
    ("arn:aws:ec2:*:instance/*:*", NODE_ARNS, False),
    ("arn:aws:ec2:*:*:*", ("*",), False),  # "*" as the request resource needs "*"
    ("arn:aws:ec2:*:*:*", ("arn:aws:ec2:local",), False),  # malformed request resource
    ("arn:aws:ssm:*:*:session/a:b/*", (session_arn("a:b/c"),), True),  # resource keeps ":"
    (["arn:aws:ssm:*:*:document/*", "arn:aws:ec2:*:*:instance/mi-*"], NODE_ARNS, True),
]


@pytest.mark.parametrize(("pattern", "resources", "allowed"), RESOURCES)
def test_resource_matching(pattern: Any, resources: tuple[str, ...], allowed: bool) -> None:
    assert decide(policy(statement(Resource=pattern)), resources=resources).allowed is allowed


def test_not_resource_matches_when_no_alias_matches() -> None:
    document = policy(statement(NotResource="arn:aws:ec2:*:*:instance/*"))
    assert outcome(document, resources=NODE_ARNS) == "implicitDeny"  # one alias matches
    assert outcome(document, resources=NODE_ARNS[:1]) == "allowed"
    assert outcome(document, resources=("*",)) == "allowed"
    assert outcome(policy(statement(NotResource="*")), resources=("*",)) == "implicitDeny"
    deny_elsewhere = policy(ALLOW_ALL, statement(Effect="Deny", NotResource=DOCUMENT_ARN))
    assert outcome(deny_elsewhere, resources=(DOCUMENT_ARN,)) == "allowed"
    assert outcome(deny_elsewhere, resources=NODE_ARNS) == "explicitDeny"


VARIABLES: list[tuple[str, str, dict[str, ContextValue], bool]] = [
    # (Resource pattern, session id asked about, context, allowed)
    ("session/${aws:username}-*", "dev-user-1a2b", {"aws:username": "dev-user"}, True),
    ("session/${aws:username}-*", "other-1a2b", {"aws:username": "dev-user"}, False),
    ("session/${aws:username}-*", "dev-user-1a2b", {"AWS:UserName": "dev-user"}, True),
    ("session/${AWS:USERNAME}-*", "dev-user-1a2b", {"aws:username": "dev-user"}, True),
    ("session/${aws:username}-*", "dev-user-1a2b", {}, False),  # absent: no match
    ("session/${aws:username}-*", "-1a2b", {"aws:username": ""}, True),
    ("session/${aws:userid}-*", "AIDAEXAMPLE-9", {"aws:userid": "AIDAEXAMPLE"}, True),
    ("session/${aws:PrincipalTag/team}-*", "ops-1", {"aws:principaltag/team": "ops"}, True),
    (
        "session/${aws:PrincipalTag/team}-*",
        "ops-1",
        {"aws:principaltag/team": ("ops", "dev")},
        False,
    ),
    ("session/${ssm:resourceTag/Env}*", "dev1", {"ssm:resourceTag/Env": "dev"}, True),
    # Substituted values are literal: a "*" in the value is not a wildcard.
    ("session/${aws:username}", "anything", {"aws:username": "*"}, False),
    ("session/${aws:username}", "*", {"aws:username": "*"}, True),
    ("session/${aws:username}", "a.c", {"aws:username": "a.c"}, True),
    ("session/${aws:username}", "abc", {"aws:username": "a.c"}, False),
    # The escapes.
    ("session/${*}", "*", {}, True),
    ("session/${*}", "x", {}, False),
    ("session/${?}x", "?x", {}, True),
    ("session/${?}x", "ax", {}, False),
    ("session/${$}{aws:username}", "${aws:username}", {"aws:username": "u"}, True),
    # Defaults.
    ("session/${aws:username, 'nobody'}-*", "nobody-1", {}, True),
    ("session/${aws:username, 'nobody'}-*", "dev-1", {"aws:username": "dev"}, True),
    ("session/${aws:username, 'it''s'}", "it's", {}, True),
]


@pytest.mark.parametrize(("pattern", "session", "context", "allowed"), VARIABLES)
def test_policy_variables_in_resources(
    pattern: str, session: str, context: dict[str, ContextValue], allowed: bool
) -> None:
    document = policy(
        statement(Action="ssm:TerminateSession", Resource=f"arn:aws:ssm:*:*:{pattern}")
    )
    decision = decide(
        document, action="ssm:TerminateSession", resources=(session_arn(session),), context=context
    )
    assert decision.allowed is allowed


def test_version_2008_takes_variables_literally() -> None:
    document = policy(
        statement(Resource="arn:aws:ssm:*:*:session/${aws:username}-*"), version="2008-10-17"
    )
    ctx = {"aws:username": "dev"}
    assert not decide(document, resources=(session_arn("dev-1"),), context=ctx).allowed
    assert decide(document, resources=(session_arn("${aws:username}-1"),), context=ctx).allowed
    literal = policy(
        statement(Condition={"StringEquals": {"a:b": "${aws:username}"}}), version="2008-10-17"
    )
    assert decide(literal, context={"a:b": "${aws:username}", "aws:username": "u"}).allowed
    assert not decide(literal, context={"a:b": "u", "aws:username": "u"}).allowed


def test_variable_missing_in_not_resource_counts_as_no_match() -> None:
    document = policy(
        statement(Effect="Deny", NotResource="arn:aws:ssm:*:*:session/${aws:username}-*"), ALLOW_ALL
    )
    resources = (session_arn("dev-1"),)
    assert outcome(document, resources=resources, context={"aws:username": "dev"}) == "allowed"
    assert outcome(document, resources=resources, context={}) == "explicitDeny"


Case = tuple[dict[str, Any], dict[str, ContextValue], bool]

CONDITIONS: list[Case] = [
    # StringEquals family: case-sensitive values, case-insensitive keys.
    ({"StringEquals": {"aws:username": "dev"}}, {"aws:username": "dev"}, True),
    ({"StringEquals": {"aws:username": "dev"}}, {"AWS:USERNAME": "dev"}, True),
    ({"StringEquals": {"aws:username": "dev"}}, {"aws:username": "Dev"}, False),
    ({"StringEquals": {"aws:username": ["a", "dev"]}}, {"aws:username": "dev"}, True),
    ({"StringEquals": {"aws:username": "de*"}}, {"aws:username": "dev"}, False),
    ({"StringEquals": {"aws:username": "dev"}}, {}, False),
    ({"StringNotEquals": {"aws:username": "dev"}}, {"aws:username": "ops"}, True),
    ({"StringNotEquals": {"aws:username": ["ops", "dev"]}}, {"aws:username": "ops"}, False),
    ({"StringNotEquals": {"aws:username": "dev"}}, {}, True),  # negated, missing key
    ({"StringEqualsIgnoreCase": {"k:v": "DeV"}}, {"k:v": "dEv"}, True),
    ({"StringEqualsIgnoreCase": {"k:v": "dev"}}, {"k:v": "ops"}, False),
    ({"StringNotEqualsIgnoreCase": {"k:v": "DEV"}}, {"k:v": "dev"}, False),
    ({"StringNotEqualsIgnoreCase": {"k:v": "DEV"}}, {"k:v": "ops"}, True),
    ({"StringNotEqualsIgnoreCase": {"k:v": "DEV"}}, {}, True),
    # StringLike.
    ({"StringLike": {"k:v": "web-*"}}, {"k:v": "web-01"}, True),
    ({"StringLike": {"k:v": "web-??"}}, {"k:v": "web-01"}, True),
    ({"StringLike": {"k:v": "web-??"}}, {"k:v": "web-001"}, False),
    ({"StringLike": {"k:v": "Web-*"}}, {"k:v": "web-01"}, False),
    ({"StringLike": {"k:v": "a.c"}}, {"k:v": "abc"}, False),
    ({"StringLike": {"k:v": "*"}}, {"k:v": "line\nbreak"}, True),
    ({"StringLike": {"k:v": "*"}}, {}, False),
    ({"StringNotLike": {"k:v": ["prod*", "stag*"]}}, {"k:v": "dev"}, True),
    ({"StringNotLike": {"k:v": ["prod*", "stag*"]}}, {"k:v": "staging"}, False),
    ({"StringNotLike": {"k:v": "prod*"}}, {}, True),
    # Variables in condition values.
    (
        {"StringEquals": {"ssm:resourceTag/Owner": "${aws:username}"}},
        {"ssm:resourceTag/Owner": "u", "aws:username": "u"},
        True,
    ),
    (
        {"StringEquals": {"ssm:resourceTag/Owner": "${aws:username}"}},
        {"ssm:resourceTag/Owner": "u", "aws:username": "v"},
        False,
    ),
    (
        {"StringEquals": {"ssm:resourceTag/Owner": "${aws:username}"}},
        {"ssm:resourceTag/Owner": "u"},
        False,
    ),
    (
        {"StringNotEquals": {"ssm:resourceTag/Owner": "${aws:username}"}},
        {"ssm:resourceTag/Owner": "u"},
        True,
    ),
    (
        {"StringEquals": {"aws:ResourceTag/team": "${aws:PrincipalTag/team}"}},
        {"aws:resourcetag/team": "x", "aws:principaltag/team": "x"},
        True,
    ),
    ({"StringLike": {"k:v": "${aws:username}/*"}}, {"k:v": "u/x", "aws:username": "u"}, True),
    ({"StringLike": {"k:v": "${aws:username}/*"}}, {"k:v": "uu/x", "aws:username": "u?"}, False),
    (
        {"StringEqualsIgnoreCase": {"k:v": "${aws:username}"}},
        {"k:v": "BOB", "aws:username": "bob"},
        True,
    ),
    ({"StringEquals": {"k:v": "${*}"}}, {"k:v": "*"}, True),
    # ARN operators: part-wise wildcards, ArnEquals like ArnLike, partitions equivalent.
    (
        {"ArnLike": {"aws:SourceArn": "arn:aws:ssm:*:*:document/*"}},
        {"aws:SourceArn": DOCUMENT_ARN},
        True,
    ),
    (
        {"ArnEquals": {"aws:SourceArn": "arn:aws:ssm:*:*:document/*"}},
        {"aws:SourceArn": DOCUMENT_ARN},
        True,
    ),
    (
        {"ArnLike": {"aws:SourceArn": "arn:aws:ssm:*:*:document/*"}},
        {"aws:SourceArn": NODE_ARNS[0]},
        False,
    ),
    (
        {"ArnLike": {"aws:SourceArn": "arn:aws:ssm:*:*:document/*"}},
        {"aws:SourceArn": "not-an-arn"},
        False,
    ),
    (
        {"ArnNotLike": {"aws:SourceArn": "arn:aws:ssm:*:*:document/*"}},
        {"aws:SourceArn": NODE_ARNS[0]},
        True,
    ),
    ({"ArnNotEquals": {"aws:SourceArn": DOCUMENT_ARN}}, {"aws:SourceArn": DOCUMENT_ARN}, False),
    ({"ArnNotEquals": {"aws:SourceArn": DOCUMENT_ARN}}, {}, True),
    (
        {"ArnLike": {"aws:SourceArn": "arn:aws:ssm:*:*:session/${aws:username}-*"}},
        {"aws:SourceArn": session_arn("u-1"), "aws:username": "u"},
        True,
    ),
    # Numbers.
    ({"NumericEquals": {"k:n": "10"}}, {"k:n": "10"}, True),
    ({"NumericEquals": {"k:n": 10}}, {"k:n": "10.0"}, True),
    ({"NumericEquals": {"k:n": "10"}}, {"k:n": "11"}, False),
    ({"NumericEquals": {"k:n": "10"}}, {"k:n": "ten"}, False),
    ({"NumericNotEquals": {"k:n": "10"}}, {"k:n": "11"}, True),
    ({"NumericNotEquals": {"k:n": ["10", "11"]}}, {"k:n": "11"}, False),
    ({"NumericNotEquals": {"k:n": "10"}}, {}, True),
    ({"NumericLessThan": {"k:n": "10"}}, {"k:n": "9.5"}, True),
    ({"NumericLessThan": {"k:n": "10"}}, {"k:n": "10"}, False),
    ({"NumericLessThanEquals": {"k:n": "10"}}, {"k:n": "10"}, True),
    ({"NumericGreaterThan": {"k:n": "-1"}}, {"k:n": "0"}, True),
    ({"NumericGreaterThan": {"k:n": "1e3"}}, {"k:n": "999"}, False),
    ({"NumericGreaterThanEquals": {"k:n": "10"}}, {"k:n": "10"}, True),
    ({"NumericGreaterThanEquals": {"k:n": "10"}}, {}, False),
    ({"NumericLessThan": {"k:n": "9007199254740993"}}, {"k:n": "9007199254740992"}, True),
    # Dates: ISO 8601 (Z, offsets, dates alone) and epoch seconds.
    (
        {"DateLessThan": {"aws:CurrentTime": "2026-12-01T00:00:00Z"}},
        {"aws:CurrentTime": "2026-11-30T12:00:00Z"},
        True,
    ),
    (
        {"DateLessThan": {"aws:CurrentTime": "2026-11-30"}},
        {"aws:CurrentTime": "2026-11-30T12:00:00Z"},
        False,
    ),
    (
        {"DateGreaterThan": {"aws:CurrentTime": "2026-11-30T13:00:00+02:00"}},
        {"aws:CurrentTime": "2026-11-30T12:00:00Z"},
        True,
    ),
    (
        {"DateEquals": {"aws:CurrentTime": "1796040000"}},
        {"aws:CurrentTime": "2026-11-30T12:00:00Z"},
        True,
    ),
    (
        {"DateEquals": {"aws:EpochTime": "2026-11-30T12:00:00Z"}},
        {"aws:EpochTime": "1796040000"},
        True,
    ),
    (
        {"DateNotEquals": {"aws:CurrentTime": "2026-11-30T12:00:00Z"}},
        {"aws:CurrentTime": "2026-11-30T12:00:01Z"},
        True,
    ),
    ({"DateNotEquals": {"aws:CurrentTime": "2026-11-30T12:00:00Z"}}, {}, True),
    (
        {"DateLessThanEquals": {"aws:CurrentTime": "2026-11-30T12:00:00Z"}},
        {"aws:CurrentTime": "2026-11-30T12:00:00Z"},
        True,
    ),
    (
        {"DateGreaterThanEquals": {"aws:CurrentTime": "2026-11-30T12:00:00Z"}},
        {"aws:CurrentTime": "2026-11-30T11:59:59Z"},
        False,
    ),
    (
        {"DateGreaterThan": {"aws:CurrentTime": "2026-11-30T12:00:00Z"}},
        {"aws:CurrentTime": "soon"},
        False,
    ),
    # Bool.
    ({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "true"}, True),
    ({"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": "TRUE"}, True),
    ({"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "true"}, False),
    ({"Bool": {"aws:SecureTransport": "false"}}, {}, False),
    ({"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}, {}, True),
    (
        {"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}},
        {"ssm:SessionDocumentAccessCheck": "false"},
        False,
    ),
    # Binary.
    ({"BinaryEquals": {"k:b": "aGVsbG8="}}, {"k:b": "aGVsbG8="}, True),
    ({"BinaryEquals": {"k:b": "aGVsbG8="}}, {"k:b": "aGVsbG9v"}, False),
    ({"BinaryEquals": {"k:b": "aGVsbG8="}}, {"k:b": "***"}, False),
    # IP addresses, IPv4 and IPv6.
    ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.1.2.3"}, True),
    (
        {"IpAddress": {"aws:SourceIp": ["192.168.0.0/16", "127.0.0.1"]}},
        {"aws:SourceIp": "127.0.0.1"},
        True,
    ),
    ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "11.0.0.1"}, False),
    ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "::ffff:10.0.0.1"}, True),
    ({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": "2001:db8::1"}, True),
    ({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": "10.0.0.1"}, False),
    ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "garbage"}, False),
    ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {}, False),
    ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "11.0.0.1"}, True),
    ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.0.0.1"}, False),
    ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {}, True),
    # Null tests presence.
    ({"Null": {"aws:TokenIssueTime": "true"}}, {}, True),
    ({"Null": {"aws:TokenIssueTime": "true"}}, {"aws:TokenIssueTime": "x"}, False),
    ({"Null": {"aws:TokenIssueTime": "false"}}, {"aws:TokenIssueTime": "x"}, True),
    ({"Null": {"aws:TokenIssueTime": False}}, {}, False),
    ({"Null": {"k:m": "true"}}, {"k:m": ()}, True),  # an empty multi-valued key is absent
    # IfExists on other operators.
    ({"StringEqualsIfExists": {"k:v": "dev"}}, {}, True),
    ({"StringEqualsIfExists": {"k:v": "dev"}}, {"k:v": "ops"}, False),
    ({"NumericLessThanIfExists": {"k:n": "3"}}, {"k:n": "2"}, True),
    ({"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}}, {}, True),
    # Multi-valued keys without a qualifier: any value matches (negated: none does).
    ({"StringEquals": {"k:m": "a"}}, {"k:m": ("b", "a")}, True),
    ({"StringNotEquals": {"k:m": "a"}}, {"k:m": ("b", "a")}, False),
    ({"StringNotEquals": {"k:m": "a"}}, {"k:m": ("b", "c")}, True),
    # ForAnyValue.
    ({"ForAnyValue:StringEquals": {"k:m": ["a", "x"]}}, {"k:m": ("b", "a")}, True),
    ({"ForAnyValue:StringEquals": {"k:m": ["a", "x"]}}, {"k:m": ("b", "c")}, False),
    ({"ForAnyValue:StringEquals": {"k:m": "a"}}, {}, False),
    ({"ForAnyValue:StringNotEquals": {"k:m": "a"}}, {"k:m": ("a", "b")}, True),
    ({"ForAnyValue:StringNotEquals": {"k:m": "a"}}, {"k:m": ("a",)}, False),
    ({"ForAnyValue:StringNotEquals": {"k:m": "a"}}, {}, False),  # missing beats negation
    ({"ForAnyValue:StringLike": {"k:m": "team-*"}}, {"k:m": ("x", "team-a")}, True),
    ({"ForAnyValue:StringEqualsIfExists": {"k:m": "a"}}, {}, True),
    # ForAllValues.
    ({"ForAllValues:StringEquals": {"k:m": ["a", "b"]}}, {"k:m": ("a", "b")}, True),
    ({"ForAllValues:StringEquals": {"k:m": ["a", "b"]}}, {"k:m": ("a", "c")}, False),
    ({"ForAllValues:StringEquals": {"k:m": ["a", "b"]}}, {}, True),
    ({"ForAllValues:StringEquals": {"k:m": ["a", "b"]}}, {"k:m": ()}, True),
    ({"ForAllValues:StringNotLike": {"k:m": "prod*"}}, {"k:m": ("dev", "test")}, True),
    ({"ForAllValues:StringNotLike": {"k:m": "prod*"}}, {"k:m": ("dev", "prod1")}, False),
    ({"ForAllValues:NumericLessThan": {"k:m": "5"}}, {"k:m": ("1", "4")}, True),
    ({"ForAllValues:NumericLessThan": {"k:m": "5"}}, {"k:m": ("1", "5")}, False),
    # Several keys in a block and several blocks: all must hold.
    ({"StringEquals": {"a:x": "1", "a:y": "2"}}, {"a:x": "1", "a:y": "2"}, True),
    ({"StringEquals": {"a:x": "1", "a:y": "2"}}, {"a:x": "1", "a:y": "3"}, False),
    ({"StringEquals": {"a:x": "1"}, "Bool": {"a:b": "true"}}, {"a:x": "1", "a:b": "true"}, True),
    ({"StringEquals": {"a:x": "1"}, "Bool": {"a:b": "true"}}, {"a:x": "1"}, False),
]


@pytest.mark.parametrize(("condition", "context", "holds"), CONDITIONS)
def test_condition_operators(
    condition: dict[str, Any], context: dict[str, ContextValue], holds: bool
) -> None:
    assert condition_holds(condition, context) is holds


def test_every_operator_is_covered_by_the_table() -> None:
    from hatchway.policy.conditions import OPERATORS

    used = {name.split(":")[-1].removesuffix("IfExists") for case in CONDITIONS for name in case[0]}
    assert set(OPERATORS) <= used


def test_deny_with_a_condition_only_denies_when_it_holds() -> None:
    document = policy(
        ALLOW_ALL,
        statement(
            Sid="NoProd", Effect="Deny", Condition={"StringEquals": {"ssm:resourceTag/Env": "prod"}}
        ),
    )
    assert outcome(document, context={"ssm:resourceTag/Env": "prod"}) == "explicitDeny"
    assert outcome(document, context={"ssm:resourceTag/Env": "dev"}) == "allowed"
    assert outcome(document, context={}) == "allowed"


def test_statements_for_remembers_a_bounded_number_of_actions() -> None:
    document = parse_policy(policy(statement(Action="ssm:*"), statement(Action="hatchway:*")))
    for i in range(3000):
        assert len(document.statements_for(f"ssm:x{i}")) == 1
    assert len(document._by_action) <= 1024


def test_request_refuses_a_bare_string_of_resources() -> None:
    with pytest.raises(TypeError):
        Request("ssm:StartSession", NODE_ARNS[0], {})  # type: ignore[arg-type]
