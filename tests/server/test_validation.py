"""The request validator: botocore's SSM model compiled, walked over JSON values off the wire."""

from __future__ import annotations

import json
import math
import re
import sys
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.auth.agentkey import generate_private_key, public_key_b64
from hatchway.errors import InvalidNextToken, SerializationError, ValidationError
from hatchway.server.pagination import page_request, page_response
from hatchway.server.validation import (
    _PYTHON_PATTERNS,
    MAX_ECHO,
    MAX_LISTED,
    Kind,
    RequestValidator,
    Rule,
    _compile_pattern,
    check_framing,
    decode_body,
    echo,
    load_ssm_model,
    python_regex,
)

OPERATIONS = (
    "StartSession",
    "ResumeSession",
    "TerminateSession",
    "DescribeSessions",
    "DescribeInstanceInformation",
    "CreateActivation",
    "DescribeActivations",
    "DeleteActivation",
    "DeregisterManagedInstance",
    "RegisterManagedInstance",
)
NODE_ID = "mi-0123456789abcdef0"
ACTIVATION_ID = "0b7a5c4e-1f2d-4a3b-9c8d-7e6f5a4b3c2d"


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator.for_operations(OPERATIONS)


def error_of(validator: RequestValidator, operation: str, body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        validator.validate(operation, body)
    assert caught.value.code == "ValidationException"
    return caught.value.message


def rules_of(rule: Rule) -> list[Rule]:
    found = [rule]
    for child in (*rule.members.values(), rule.member, rule.key, rule.value):
        if child is not None:
            found.extend(rules_of(child))
    return found


# ---- the model ----------------------------------------------------------------------------


def test_every_pattern_of_the_served_operations_is_checked(validator: RequestValidator) -> None:
    """No pattern of an operation we serve is skipped for being Java-only."""
    for operation in OPERATIONS:
        for rule in rules_of(validator.rule(operation)):
            if rule.pattern_text:
                assert rule.pattern is not None, (operation, rule.pattern_text)


def test_java_unicode_classes_are_rewritten_exactly() -> None:
    """``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]`` in Python matches the same code points as in Java."""
    (java,) = _PYTHON_PATTERNS
    pattern = _compile_pattern(java)
    assert pattern is not None
    wrong = [
        hex(cp)
        for cp in range(sys.maxunicode + 1)
        if bool(pattern.search(chr(cp)))
        != (unicodedata.category(chr(cp))[0] in "LZN" or chr(cp) in "_.:/=+-@")
    ]
    assert wrong == []
    assert pattern.search("Ωmega 7 déjà-vu_1.2:3/4=5+6@x\u3000") is not None
    assert pattern.search("tab\there") is None


@pytest.mark.parametrize(
    ("ecma", "python"),
    [
        (r"^a$", r"^a\Z"),
        (r"^.{1,256}$", r"^[^\n\r\u2028\u2029]{1,256}\Z"),
        (r"^[$.]\$\.$", r"^[$.]\$\.\Z"),
        (r"[]$.]", r"[]$.]"),
        (r"[^]$]$", r"[^]$]\Z"),
        (r"^(?!\s*$).+", r"^(?!\s*\Z)[^\n\r\u2028\u2029]+"),
    ],
)
def test_python_regex(ecma: str, python: str) -> None:
    assert python_regex(ecma) == python


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("DeregisterManagedInstance", {"InstanceId": NODE_ID + "\n"}),
        ("DeleteActivation", {"ActivationId": ACTIVATION_ID + "\n"}),
        ("StartSession", {"Target": NODE_ID, "Reason": "why\r"}),
        ("StartSession", {"Target": NODE_ID, "DocumentName": "AWS-StartSSHSession\n"}),
        ("CreateActivation", {"IamRole": "", "DefaultInstanceName": "web\n"}),
    ],
)
def test_a_trailing_line_end_does_not_pass_a_pattern(
    validator: RequestValidator, operation: str, body: dict[str, Any]
) -> None:
    assert "regular expression pattern" in error_of(validator, operation, body)


def test_other_java_patterns_are_skipped_not_fatal() -> None:
    """A pattern Python cannot compile (here from the wider SSM model) leaves the type checks."""
    model = load_ssm_model()
    shape = model.shape_for("CloudConnectorIamRoleArn")  # "[\w-\/.@+=,]": a bad range in Python
    with pytest.raises(re.error):
        re.compile(shape.metadata["pattern"])
    from hatchway.server.validation import _compile

    rule = _compile(shape, ())
    assert rule.kind is Kind.STRING and rule.pattern is None and rule.pattern_text


def test_register_managed_instance_has_its_own_schema(validator: RequestValidator) -> None:
    rule = validator.rule("RegisterManagedInstance")
    assert rule.required == {"ActivationId", "ActivationCode", "PublicKey"}
    body = {
        "ActivationId": ACTIVATION_ID,
        "ActivationCode": "A" * 28,
        "PublicKey": public_key_b64(generate_private_key()),
        "PublicKeyType": "Rsa",
        "Fingerprint": "5d6f0f52-8a2e-4c1f-9a55-2f3e1b1c0d9e",
    }
    assert validator.validate("RegisterManagedInstance", body) == body


@pytest.mark.parametrize(
    ("member", "value", "constraint"),
    [
        ("ActivationId", "../../etc", "regular expression pattern"),
        ("ActivationCode", "short", "length greater than or equal to 20"),
        ("ActivationCode", "A" * 251, "length less than or equal to 250"),
        ("ActivationCode", "A" * 19 + "\n", "regular expression pattern"),
        ("ActivationCode", "A" * 20 + " ", "regular expression pattern"),
        ("PublicKey", "not base64!", "regular expression pattern"),
        ("PublicKey", "A" * 5000, "length less than or equal to 4096"),
        ("PublicKeyType", "Ed25519", "enum value set: [Rsa]"),
        ("Fingerprint", "f" * 65, "length less than or equal to 64"),
        ("Fingerprint", "\x1b[2J", "regular expression pattern"),
        ("Fingerprint", 12, "Member must be a string"),
    ],
)
def test_register_managed_instance_fields(
    validator: RequestValidator, member: str, value: Any, constraint: str
) -> None:
    body = {"ActivationId": ACTIVATION_ID, "ActivationCode": "A" * 28, "PublicKey": "QUJD"}
    body[member] = value
    message = error_of(validator, "RegisterManagedInstance", body)
    assert message.startswith("1 validation error detected: ")
    assert constraint in message
    assert f"at '{member[0].lower()}{member[1:]}'" in message


# ---- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        # The issue's cases: Filters and Values of the wrong type.
        (
            "DescribeInstanceInformation",
            {"Filters": "x"},
            "Value 'x' at 'filters' failed to satisfy constraint: Member must be a list",
        ),
        (
            "DescribeInstanceInformation",
            {"Filters": [{"Key": "InstanceIds", "Values": "mi-1"}]},
            "Value 'mi-1' at 'filters.1.member.values' failed to satisfy constraint: "
            "Member must be a list",
        ),
        (
            "DescribeInstanceInformation",
            {"Filters": [{"Key": "InstanceIds", "Values": [{"a": 1}]}]},
            "Value '{'a': 1}' at 'filters.1.member.values.1.member' failed to satisfy "
            "constraint: Member must be a string",
        ),
        (
            "DescribeInstanceInformation",
            {"Filters": [{"Key": "InstanceIds"}]},
            "Value null at 'filters.1.member.values' failed to satisfy constraint: "
            "Member must not be null",
        ),
        (
            "DescribeInstanceInformation",
            {"InstanceInformationFilterList": [{"key": "Nope", "valueSet": ["x"]}]},
            "Value 'Nope' at 'instanceInformationFilterList.1.member.key' failed to satisfy "
            "constraint: Member must satisfy enum value set: [InstanceIds, AgentVersion, ",
        ),
        (
            "DescribeInstanceInformation",
            {"MaxResults": 4},
            "Value '4' at 'maxResults' failed to satisfy constraint: Member must have value "
            "greater than or equal to 5",
        ),
        (
            "DescribeSessions",
            {"State": "Active", "Filters": [{"key": "Target", "value": 7}]},
            "Value '7' at 'filters.1.member.value' failed to satisfy constraint: "
            "Member must be a string",
        ),
        (
            "DescribeSessions",
            {"State": "Active", "Filters": []},
            "Value '[]' at 'filters' failed to satisfy constraint: Member must have length "
            "greater than or equal to 1",
        ),
        (
            "DescribeSessions",
            {"State": "Dormant"},
            "Value 'Dormant' at 'state' failed to satisfy constraint: Member must satisfy enum "
            "value set: [Active, History]",
        ),
        (
            "DescribeSessions",
            {},
            "Value null at 'state' failed to satisfy constraint: Member must not be null",
        ),
        (
            "DescribeSessions",
            {"State": None},
            "Value null at 'state' failed to satisfy constraint: Member must not be null",
        ),
        (
            "DescribeSessions",
            {"State": "Active", "MaxResults": True},
            "Value 'true' at 'maxResults' failed to satisfy constraint: Member must be an integer",
        ),
        (
            "DescribeSessions",
            {"State": "Active", "MaxResults": 5.0},
            "Value '5.0' at 'maxResults' failed to satisfy constraint: Member must be an integer",
        ),
        (
            "DescribeSessions",
            {"State": "Active", "NextToken": 12},
            "Value '12' at 'nextToken' failed to satisfy constraint: Member must be a string",
        ),
        (
            "StartSession",
            {"Target": NODE_ID, "Parameters": {"command": "ls"}},
            "Value 'ls' at 'parameters.command' failed to satisfy constraint: Member must be a "
            "list",
        ),
        (
            "StartSession",
            {"Target": NODE_ID, "Parameters": {"": ["x"]}},
            "Value '' at 'parameters' failed to satisfy constraint: Map keys must satisfy "
            "constraint: [Member must have length greater than or equal to 1]",
        ),
        (
            "StartSession",
            {"Target": NODE_ID, "DocumentName": "a b"},
            "Value 'a b' at 'documentName' failed to satisfy constraint: Member must satisfy "
            "regular expression pattern: ^[a-zA-Z0-9_\\-.:/]{3,128}$",
        ),
        (
            "CreateActivation",
            {"IamRole": "", "RegistrationLimit": 1001},
            "Value '1001' at 'registrationLimit' failed to satisfy constraint: Member must have "
            "value less than or equal to 1000",
        ),
        (
            "CreateActivation",
            {"IamRole": "", "Tags": [{"Key": "a\tb", "Value": "x"}]},
            "Value 'a\\tb' at 'tags.1.member.key' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$",
        ),
        (
            "DeleteActivation",
            {"ActivationId": "x"},
            "Value 'x' at 'activationId' failed to satisfy constraint: Member must satisfy "
            "regular expression pattern: ",
        ),
        (
            "DeregisterManagedInstance",
            {"InstanceId": "i-0123"},
            "Value 'i-0123' at 'instanceId' failed to satisfy constraint: Member must have "
            "length greater than or equal to 20",
        ),
    ],
)
def test_bad_values_are_named_as_aws_does(
    validator: RequestValidator, operation: str, body: dict[str, Any], expected: str
) -> None:
    message = error_of(validator, operation, body)
    assert message.startswith("1 validation error detected: " + expected), message


@pytest.mark.parametrize(
    "value",
    [10**400, math.nan, math.inf, -math.inf, 1e300, -1, True, "2026-01-01T00:00:00Z", [1]],
)
def test_bad_timestamps_are_refused(validator: RequestValidator, value: Any) -> None:
    message = error_of(validator, "CreateActivation", {"IamRole": "", "ExpirationDate": value})
    assert "at 'expirationDate' failed to satisfy constraint: Member must be a number of " in (
        message
    )


def test_timestamps_become_floats(validator: RequestValidator) -> None:
    body = validator.validate("CreateActivation", {"IamRole": "", "ExpirationDate": 1_800_000_000})
    assert body["ExpirationDate"] == 1.8e9 and isinstance(body["ExpirationDate"], float)


def test_unknown_members_and_nulls_are_dropped(validator: RequestValidator) -> None:
    body = {
        "State": "History",
        "NextToken": None,
        "Pad": "x" * 1000,
        "Filters": [{"key": "Owner", "value": "arn", "extra": [[[[1]]]]}],
    }
    assert validator.validate("DescribeSessions", body) == {
        "State": "History",
        "Filters": [{"key": "Owner", "value": "arn"}],
    }


def test_null_list_members_are_refused(validator: RequestValidator) -> None:
    message = error_of(
        validator, "DescribeActivations", {"Filters": [{"FilterKey": "IamRole"}, None]}
    )
    assert "Value null at 'filters.2.member' failed to satisfy constraint: Member must not " in (
        message
    )


def test_every_error_is_counted_and_the_message_is_bounded(validator: RequestValidator) -> None:
    values = list(range(300))
    message = error_of(
        validator,
        "DescribeInstanceInformation",
        {"Filters": [{"Key": "InstanceIds", "Values": values[:100]}], "MaxResults": 99},
    )
    assert message.startswith("101 validation errors detected: ")
    assert message.count("failed to satisfy constraint") == MAX_LISTED
    assert message.endswith(f"; and {101 - MAX_LISTED} more")


def test_echoed_inputs_are_cut_and_escaped(validator: RequestValidator) -> None:
    long = "\x1b[2J" + "é" * 500
    message = error_of(validator, "StartSession", {"Target": long})
    shown = re.search(r"Value '(.*)' at 'target'", message)
    assert shown is not None
    assert shown.group(1) == "\\x1b[2J" + "é" * (MAX_ECHO - 5) + "…"
    assert "\x1b" not in message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("x" * 100, "x" * (MAX_ECHO - 1) + "…"),
        (10**400, "1" + "0" * (MAX_ECHO - 2) + "…"),
        (math.nan, "NaN"),
        (None, "null"),
        (False, "false"),
        ([1, 2, 3, 4, 5, 6], "[1, 2, 3, 4, ...]"),
        ({"a": {"b": {"c": 1}}}, "{'a': {'b': {...}}}"),
        ("\u2028\x00", "\\u2028\\x00"),
    ],
)
def test_echo(value: Any, shown: str) -> None:
    assert echo(value) == shown


def test_echo_of_an_integer_past_the_digit_limit() -> None:
    assert echo(10**5000) == "(an integer too long to print)"


# ---- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def values_for(rule: Rule) -> st.SearchStrategy[Any]:
    """Anything JSON, or something shaped like ``rule`` whose parts are again anything."""
    if rule.kind is Kind.STRUCTURE:
        shaped: st.SearchStrategy[Any] = st.fixed_dictionaries(
            {}, optional={name: values_for(member) for name, member in rule.members.items()}
        )
    elif rule.kind is Kind.LIST:
        assert rule.member is not None
        shaped = st.lists(values_for(rule.member), max_size=4)
    elif rule.kind is Kind.MAP:
        assert rule.key is not None and rule.value is not None
        shaped = st.dictionaries(st.text(max_size=8), values_for(rule.value), max_size=3)
    elif rule.enum:
        shaped = st.sampled_from(rule.enum)
    elif rule.kind is Kind.STRING:
        shaped = st.text(max_size=40) | st.text(alphabet="abcdef0123456789-", max_size=40)
    else:
        shaped = st.integers(-5, 2_000_000_000) | st.floats()
    return st.one_of(shaped, json_values)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_any_json_gives_a_body_or_a_validation_error(
    validator: RequestValidator, operation: str
) -> None:
    """Whatever JSON arrives, the validator answers with a body or a ValidationException."""

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=values_for(validator.rule(operation)))
    def check(body: Any) -> None:
        if not isinstance(body, dict):
            return
        try:
            checked = validator.validate(operation, body)
        except ValidationError as exc:
            assert exc.code == "ValidationException"
            assert re.match(r"\d+ validation errors? detected: Value ", exc.message)
            return
        assert isinstance(checked, dict)
        json.dumps(checked)  # what services get is plain JSON again
        assert set(checked) <= set(validator.rule(operation).members)

    check()


# ---- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json}",
        b"[1, 2]",
        b'"a string"',
        b"\xff\xfe\xfd",
        b"\xef\xbb\xbf{}",  # a UTF-8 byte-order mark
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a": ' + b'{"b": ' * 50_000 + b"1" + b"}" * 50_001,
        b'{"a": ' + b"9" * 5000 + b"}",  # past Python's int-string limit
        b'{"a": 1} trailing',
    ],
)
def test_undecodable_bodies_are_serialization_errors(body: bytes) -> None:
    with pytest.raises(SerializationError) as caught:
        decode_body(body)
    assert caught.value.code == "SerializationException"


def test_decoded_bodies() -> None:
    assert decode_body(b"") == {}
    assert decode_body(b" \r\n") == {}
    assert decode_body(b'{"a": NaN, "b": 1e400}')["b"] == math.inf


@pytest.mark.parametrize("body", [b"", b"  ", b"{}", b' {"a": [1]}\n', b"{not json}"])
def test_framing_that_passes(body: bytes) -> None:
    check_framing(body)


@pytest.mark.parametrize("body", [b"[1]", b"x", b'"{}"', b"{\xff}", b"{"])
def test_framing_that_fails(body: bytes) -> None:
    with pytest.raises(SerializationError):
        check_framing(body)


# ---- pagination ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token", ["²", "1" * 5000, "1" * 20, "1" * 10, "", "-1", " 1", "1\n", "0x10", "١"]
)
def test_only_tokens_this_server_issues_are_accepted(token: str) -> None:
    with pytest.raises(InvalidNextToken) as caught:
        page_request({"NextToken": token}, default=50)
    assert caught.value.code == "InvalidNextToken"


def test_tokens_round_trip() -> None:
    assert page_request({}, default=50) == (50, 0)
    token = page_response(True, 999_999_999)["NextToken"]
    assert page_request({"NextToken": token, "MaxResults": 7}, default=50) == (7, 999_999_999)
    assert page_response(False, 100) == {}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1_700_000_000, 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("2026-11-30T10:00:00Z", 1_796_032_800.0),
        ("2026-11-30T10:00:00", 1_796_032_800.0),  # no offset: UTC
        ("2026-11-30T11:00:00+01:00", 1_796_032_800.0),
    ],
)
def test_one_timestamp_parser(value: Any, seconds: float) -> None:
    from hatchway.server.validation import parse_timestamp

    assert parse_timestamp(value) == seconds


@pytest.mark.parametrize(
    "value", ["nan", "inf", "1e400", 10**400, -1, True, "yesterday", "9" * 5000, None]
)
def test_one_timestamp_parser_refuses(value: Any) -> None:
    from hatchway.errors import ValidationError
    from hatchway.server.validation import parse_timestamp

    with pytest.raises(ValidationError, match="not a timestamp") as refused:
        parse_timestamp(value)
    assert len(refused.value.message) < 120


def test_registration_key_check_is_the_verifiers() -> None:
    """One public-key check: what registration refuses is what the verifier could not load."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from hatchway.errors import ValidationError
    from hatchway.server.nodes import _check_public_key

    def b64(key: Any) -> str:
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    _check_public_key(b64(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    for bad, why in [
        (b64(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "at least 2048"),
        (b64(ec.generate_private_key(ec.SECP256R1())), "must be an RSA key"),
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"junk").decode(), "not a DER"),
    ]:
        with pytest.raises(ValidationError, match=why):
            _check_public_key(bad)
