"""parse_policy: IAM's grammar, the paths in its errors, limits, canonical text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hatchway.errors import ValidationError
from hatchway.policy import MAX_POLICY_CHARS, Effect, PolicyError, parse_policy

from .helpers import policy, statement

GOOD = policy(statement(Sid="One", Action="ssm:StartSession"), statement(Effect="Deny"))


def test_parses_and_keeps_canonical_text() -> None:
    document = parse_policy(json.dumps(GOOD, indent=4))
    assert document.version == "2012-10-17"
    assert [s.sid for s in document.statements] == ["One", None]
    assert [s.name for s in document.statements] == ["One", "Statement[1]"]
    assert document.statements[1].effect is Effect.DENY
    assert document.text == json.dumps(GOOD, separators=(",", ":"))
    assert parse_policy(document.text) == document
    assert parse_policy(GOOD) == document
    assert parse_policy(document.text.encode()) == document


def test_single_statement_object_and_string_elements() -> None:
    document = parse_policy(
        {
            "Version": "2012-10-17",
            "Statement": {"Effect": "Allow", "Action": "ssm:*", "Resource": "*"},
        }
    )
    (only,) = document.statements
    assert only.actions == ("ssm:*",) and only.resources == ("*",) and only.name == "Statement[0]"


def test_version_2008_and_missing_version_are_accepted() -> None:
    assert parse_policy(policy(statement(), version="2008-10-17")).version == "2008-10-17"
    assert parse_policy({"Statement": [statement()]}).version == "2008-10-17"


def test_policy_error_is_a_validation_error_with_the_iam_code() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy(statement(Condition={"StringLikee": {"aws:username": "x"}})))
    error = caught.value
    assert isinstance(error, ValidationError)
    assert error.code == "MalformedPolicyDocument" and error.status == 400
    assert error.path == "Statement[0].Condition.StringLikee"
    assert str(error) == error.message == "Statement[0].Condition.StringLikee: unknown operator"


def _with(index: int = 0, **fields: Any) -> dict[str, Any]:
    statements: list[dict[str, Any]] = [statement(Sid="A"), statement(Sid="B")]
    statements[index] = {**statements[index], **fields}
    return policy(*statements)


def _without(name: str) -> dict[str, Any]:
    raw = statement()
    del raw[name]
    return policy(raw)


ERRORS: list[tuple[str, Any, str]] = [
    # (case, document, expected message)
    ("not json", "{", "PolicyDocument: is not valid JSON"),
    ("not an object", "[]", "PolicyDocument: must be a JSON object"),
    ("NaN", '{"Version": NaN}', "PolicyDocument: is not valid JSON"),
    ("duplicate key", '{"Statement": [], "Statement": []}', "duplicate key 'Statement'"),
    ("not utf-8", b'{"Version": "\xff"}', "PolicyDocument: is not UTF-8"),
    ("deep", "[" * 100000, "PolicyDocument: is"),
    ("bad version", {**GOOD, "Version": "2012-10-18"}, "Version: must be 2012-10-17 or 2008-10-17"),
    ("top field", {**GOOD, "Foo": 1}, "Foo: unknown field"),
    ("no statement", {"Version": "2012-10-17"}, "Statement: required"),
    ("empty statements", policy(), "Statement: must not be an empty list"),
    ("statement type", {**GOOD, "Statement": "x"}, "Statement: must be an object or a list"),
    ("statement item", {**GOOD, "Statement": [1]}, "Statement[0]: must be an object"),
    ("principal", _with(1, Principal="*"), "Statement[1].Principal: not allowed in an identity"),
    ("not principal", _with(0, NotPrincipal="*"), "Statement[0].NotPrincipal: not allowed"),
    ("statement field", _with(1, Effects="Allow"), "Statement[1].Effects: unknown field"),
    ("effect", _with(1, Effect="allow"), "Statement[1].Effect: must be Allow or Deny"),
    ("no effect", _without("Effect"), "Statement[0].Effect: must be Allow or Deny"),
    ("sid chars", _with(0, Sid="my-sid"), "Statement[0].Sid: must contain only letters"),
    ("sid type", _with(0, Sid=1), "Statement[0].Sid: must contain only letters"),
    ("sid twice", _with(1, Sid="A"), "Statement[1].Sid: 'A' is also the Sid of Statement[0]"),
    ("no action", _without("Action"), "Statement[0].Action: required (Action or NotAction)"),
    ("both actions", _with(0, NotAction="s:a"), "Statement[0].NotAction: a statement takes"),
    ("empty actions", _with(1, Action=[]), "Statement[1].Action: must not be an empty list"),
    ("action type", _with(0, Action=["ssm:A", 3]), "Statement[0].Action[1]: must be a string"),
    ("action syntax", _with(0, Action="StartSession"), "Statement[0].Action: 'StartSession' is"),
    (
        "action blank",
        policy({"Effect": "Deny", "NotAction": ["ssm:"], "Resource": "*"}),
        "Statement[0].NotAction[0]: 'ssm:' is not",
    ),
    ("no resource", _without("Resource"), "Statement[0].Resource: required"),
    ("both resources", _with(0, NotResource="*"), "Statement[0].NotResource: a statement takes"),
    ("resource", _with(0, Resource=["*", "key-name"]), "Statement[0].Resource[1]: 'key-name' is"),
    (
        "short arn",
        policy(statement(), {"Effect": "Deny", "Action": "*", "NotResource": "arn:aws:ssm:*"}),
        "Statement[1].NotResource: 'arn:aws:ssm:*' is not",
    ),
    (
        "variable outside resource part",
        _with(0, Resource="arn:aws:ssm:${aws:region}:*:document/x"),
        "Statement[0].Resource: policy variables are allowed only in the resource part",
    ),
    (
        "unterminated variable",
        _with(0, Resource="arn:aws:ssm:*:*:session/${aws:username-*"),
        "Statement[0].Resource: unterminated policy variable",
    ),
    (
        "bad default",
        _with(0, Resource="arn:aws:ssm:*:*:session/${aws:username, x}"),
        "Statement[0].Resource: default value of ${aws:username} must be in single quotes",
    ),
    ("empty variable", _with(0, Resource="arn:aws:ssm:*:*:x/${ }"), "empty policy variable name"),
    ("condition type", _with(0, Condition=[]), "Statement[0].Condition: must be an object"),
    (
        "unknown operator",
        _with(1, Condition={"StringEquals": {"a:b": "c"}, "StringLikee": {"a:b": "c"}}),
        "Statement[1].Condition.StringLikee: unknown operator",
    ),
    ("bad qualifier", _with(0, Condition={"ForSomeValues:StringLike": {"a:b": "c"}}), "unknown"),
    ("NullIfExists", _with(0, Condition={"NullIfExists": {"a:b": "true"}}), "Null takes neither"),
    ("block type", _with(0, Condition={"Bool": "true"}), "Condition.Bool: must be an object"),
    ("empty block", _with(0, Condition={"Bool": {}}), "Condition.Bool: must name at least one"),
    ("empty values", _with(0, Condition={"Bool": {"a:b": []}}), "Bool.a:b: must not be an empty"),
    ("value type", _with(0, Condition={"StringEquals": {"a:b": [None]}}), "a:b[0]: must be a"),
    ("object value", _with(0, Condition={"StringEquals": {"a:b": {}}}), "Equals.a:b: must be a"),
    (
        "number",
        _with(0, Condition={"NumericLessThan": {"a:n": ["1", "x"]}}),
        "a:n[1]: 'x' is not a",
    ),
    ("date", _with(0, Condition={"DateLessThan": {"aws:CurrentTime": "tomorrow"}}), "not an ISO"),
    ("bool", _with(0, Condition={"Bool": {"aws:SecureTransport": "yes"}}), "'yes' is not true or"),
    ("null", _with(0, Condition={"Null": {"a:b": "maybe"}}), "Null.a:b: 'maybe' is not true or"),
    ("cidr", _with(0, Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}), "not an IP addr"),
    ("base64", _with(0, Condition={"BinaryEquals": {"a:b": "!!"}}), "'!!' is not base64"),
    (
        "arn value",
        _with(0, Condition={"ArnLike": {"aws:SourceArn": "nope"}}),
        "'nope' is not an ARN",
    ),
]


@pytest.mark.parametrize(
    ("document", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_invalid_documents_are_refused_with_a_path(document: Any, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    assert message in str(caught.value)
    assert str(caught.value).startswith(caught.value.path + ": ")


def test_size_limit_counts_characters_without_white_space() -> None:
    def sized(n: int) -> dict[str, Any]:
        base = policy(statement(Resource="arn:aws:ssm:*:*:document/"))
        padding = n - len(json.dumps(base, separators=(",", ":")))
        return policy(statement(Resource="arn:aws:ssm:*:*:document/" + "x" * padding))

    assert len(parse_policy(json.dumps(sized(MAX_POLICY_CHARS), indent=8)).text) == MAX_POLICY_CHARS
    with pytest.raises(PolicyError, match=r"^PolicyDocument: is 6145 characters without white"):
        parse_policy(sized(MAX_POLICY_CHARS + 1))
    with pytest.raises(PolicyError, match="longer than"):
        parse_policy(" " * 200_000)


def test_condition_values_of_json_types_compare_as_strings() -> None:
    document = parse_policy(
        policy(statement(Condition={"StringEquals": {"a:b": [True, 10, 1.5, "x"]}}))
    )
    assert document.statements[0].conditions[0].values == ("true", "10", "1.5", "x")


def test_empty_sid_counts_as_none() -> None:
    document = parse_policy(policy(statement(Sid=""), statement(Sid="")))
    assert [s.name for s in document.statements] == ["Statement[0]", "Statement[1]"]
