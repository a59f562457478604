"""The API edge on the real aiohttp app: bad input is a 400 with AWS's error, never a 500.

Requests are signed by botocore, as boto3 signs them, and sent byte for byte as written (so a
body can hold ``NaN`` or 10**400, which no client library would send).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from hatchway.agent.registration import register
from hatchway.auth.agentkey import generate_private_key, public_key_b64
from hatchway.auth.sigv4 import Credentials, sign_request
from hatchway.server.api import MAX_ANONYMOUS_BODY
from hatchway.server.validation import MAX_ECHO
from hatchway.transport.apiclient import ApiClient, ApiError
from tests.server.apiserver import JSON_TYPE, Answer, ApiServer

NODE_ID = "mi-0123456789abcdef0"
SHAPE = "1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: "


@pytest.fixture
def quiet_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if the server logged at ERROR, or logged any traceback."""
    caplog.set_level(logging.INFO)
    yield
    for record in caplog.records:
        assert record.levelno < logging.ERROR, record.getMessage()
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage()


def assert_error(answer: Answer, status: int, aws_type: str) -> None:
    assert (answer.status, answer.type) == (status, aws_type), answer.body
    assert answer.headers["Content-Type"].startswith(JSON_TYPE)
    assert answer.headers["x-amzn-RequestId"]


# ---- the issue's cases ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "body", "value", "path", "constraint"),
    [
        (
            "DescribeInstanceInformation",
            b'{"Filters": "InstanceIds"}',
            "InstanceIds",
            "filters",
            "Member must be a list",
        ),
        (
            "DescribeInstanceInformation",
            b'{"Filters": [{"Key": "InstanceIds", "Values": "mi-0123456789abcdef0"}]}',
            NODE_ID,
            "filters.1.member.values",
            "Member must be a list",
        ),
        (
            "DescribeInstanceInformation",
            b'{"Filters": [{"Key": "InstanceIds", "Values": [1]}]}',
            "1",
            "filters.1.member.values.1.member",
            "Member must be a string",
        ),
        (
            "DescribeSessions",
            b'{"State": "Active", "Filters": {"key": "Target"}}',
            "{'key': 'Target'}",
            "filters",
            "Member must be a list",
        ),
        (
            "CreateActivation",
            b'{"IamRole": "", "ExpirationDate": 1' + b"0" * 400 + b"}",
            "1" + "0" * (MAX_ECHO - 2) + "…",
            "expirationDate",
            "Member must be a number of seconds since 1970-01-01T00:00:00Z",
        ),
        (
            "CreateActivation",
            b'{"IamRole": "", "ExpirationDate": NaN}',
            "NaN",
            "expirationDate",
            "Member must be a number of seconds since 1970-01-01T00:00:00Z",
        ),
        (
            "CreateActivation",
            b'{"IamRole": "", "ExpirationDate": 1e400}',
            "Infinity",
            "expirationDate",
            "Member must be a number of seconds since 1970-01-01T00:00:00Z",
        ),
        (
            "CreateActivation",
            b'{"IamRole": "", "RegistrationLimit": 1' + b"0" * 400 + b"}",
            "1" + "0" * (MAX_ECHO - 2) + "…",
            "registrationLimit",
            "Member must have value less than or equal to 1000",
        ),
        (
            "StartSession",
            json.dumps({"Target": "x" * 5000}).encode(),
            "x" * (MAX_ECHO - 1) + "…",
            "target",
            "Member must have length less than or equal to 400",
        ),
    ],
)
def test_bad_input_is_a_validation_exception(
    api: ApiServer,
    quiet_log: None,
    operation: str,
    body: bytes,
    value: str,
    path: str,
    constraint: str,
) -> None:
    answer = api.post(operation, body)
    assert_error(answer, 400, "ValidationException")
    assert answer.message.startswith(SHAPE.format(value=value, path=path) + constraint)


@pytest.mark.parametrize("token", ["²", "1" * 5000, "1" * 20, "-1", ""])
@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("DescribeSessions", {"State": "Active"}),
        ("DescribeInstanceInformation", {}),
        ("DescribeActivations", {}),
    ],
)
def test_a_next_token_this_server_did_not_issue_is_invalid(
    api: ApiServer, quiet_log: None, operation: str, body: dict[str, Any], token: str
) -> None:
    answer = api.post(operation, {**body, "NextToken": token})
    assert_error(answer, 400, "InvalidNextToken")
    assert answer.message == "The specified token is not valid."


@pytest.mark.parametrize(
    "body",
    [
        b'{"State": "Active", "Filters": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"State": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
        b'{"State": "Active", "MaxResults": ' + b"9" * 5000 + b"}",
        b"{not json}",
    ],
)
def test_signed_but_unparseable_bodies_are_serialization_errors(
    api: ApiServer, quiet_log: None, body: bytes
) -> None:
    answer = api.post("DescribeSessions", body)
    assert_error(answer, 400, "SerializationException")


def test_unknown_members_are_ignored(api: ApiServer, quiet_log: None) -> None:
    answer = api.post("DescribeSessions", {"State": "Active", "Future": [[[{"x": None}]]]})
    assert (answer.status, answer.body) == (200, {"Sessions": []})


def test_service_checks_beyond_the_model_keep_their_classes(
    api: ApiServer, quiet_log: None
) -> None:
    answer = api.post(
        "DescribeSessions",
        {"State": "Active", "Filters": [{"key": "AccessType", "value": "Standard"}]},
    )
    assert_error(answer, 400, "InvalidFilterKey")
    answer = api.post(
        "DescribeInstanceInformation", {"Filters": [{"Key": "Nope", "Values": ["x"]}]}
    )
    assert_error(answer, 400, "InvalidFilterKey")
    answer = api.post("StartSession", {"Target": "i-0123456789abcdef0"})
    assert_error(answer, 400, "TargetNotConnected")
    answer = api.post(
        "DescribeSessions",
        {"State": "Active", "Filters": [{"key": "InvokedAfter", "value": "1e400"}]},
    )
    assert_error(answer, 400, "ValidationException")
    too_late = datetime.now(UTC).timestamp() + 31 * 86400
    answer = api.post("CreateActivation", {"IamRole": "", "ExpirationDate": too_late})
    assert_error(answer, 400, "ValidationException")
    assert answer.message == "ExpirationDate must be at most 30 days ahead"


# ---- authenticate before parsing -----------------------------------------------------------


def test_the_signature_is_checked_before_the_body_is_parsed(
    api: ApiServer, quiet_log: None
) -> None:
    deep = b'{"State": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for body in (deep, b'{"State": 5}', b"{not json}"):
        unsigned = api.post("DescribeSessions", body, sign=False)
        assert_error(unsigned, 400, "MissingAuthenticationTokenException")
        headers = api.signed_headers("DescribeSessions", body, secret="wrong" * 8)
        assert_error(api.send(body, headers), 400, "InvalidSignatureException")


def test_a_body_that_is_not_an_object_is_refused_before_the_signature(
    api: ApiServer, quiet_log: None
) -> None:
    """Framing costs one pass over the bytes, so anyone may learn that ``[1]`` is wrong."""
    for body in (b"[1, 2]", b"\xff\xfe\xfd", b"x" * 1000):
        assert_error(api.post("DescribeSessions", body, sign=False), 400, "SerializationException")


def test_registration_bodies_are_validated_and_bounded(api: ApiServer, quiet_log: None) -> None:
    good_shape = {
        "ActivationId": "0b7a5c4e-1f2d-4a3b-9c8d-7e6f5a4b3c2d",
        "ActivationCode": "A" * 28,
        "PublicKey": public_key_b64(generate_private_key()),
        "PublicKeyType": "Rsa",
        "Fingerprint": "5d6f0f52-8a2e-4c1f-9a55-2f3e1b1c0d9e",
    }
    answer = api.post("RegisterManagedInstance", good_shape, sign=False)
    assert_error(answer, 400, "InvalidActivation")

    answer = api.post("RegisterManagedInstance", {**good_shape, "ActivationId": ["x"]}, sign=False)
    assert_error(answer, 400, "ValidationException")
    assert answer.message.startswith(SHAPE.format(value="['x']", path="activationId"))

    answer = api.post("RegisterManagedInstance", {**good_shape, "PublicKey": "QUJD"}, sign=False)
    assert_error(answer, 400, "ValidationException")  # base64, but no RSA key

    padded = {**good_shape, "Pad": "x" * MAX_ANONYMOUS_BODY}
    answer = api.post("RegisterManagedInstance", padded, sign=False)
    assert_error(answer, 413, "RequestEntityTooLargeException")

    deep = b'{"ActivationId": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    answer = api.post("RegisterManagedInstance", deep, sign=False)
    assert_error(answer, 400, "SerializationException")


# ---- replays: the signature must cover the operation ---------------------------------------


def test_a_signature_without_the_target_is_incomplete(api: ApiServer, quiet_log: None) -> None:
    body = b'{"State": "Active"}'
    signed = sign_request(
        "POST",
        api.endpoint + "/",
        {},
        body,
        credentials=Credentials(api.admin.access_key_id, api.admin.secret_access_key),
        region=api.region,
        now=datetime.now(UTC),
    )
    assert "SignedHeaders=host;x-amz-date," in signed["Authorization"]
    headers = {**signed, "Content-Type": JSON_TYPE, "X-Amz-Target": "AmazonSSM.DescribeSessions"}
    answer = api.send(body, headers)
    assert_error(answer, 400, "IncompleteSignatureException")
    assert answer.message == (
        "'Content-Type' must be a 'SignedHeader' in the AWS Authorization. "
        "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization."
    )


def test_a_request_replayed_as_another_operation_is_refused(
    api: ApiServer, quiet_log: None
) -> None:
    body = json.dumps({"SessionId": "admin-0123456789abcdef0"}).encode()
    headers = api.signed_headers("ResumeSession", body)
    replayed = {**headers, "X-Amz-Target": "AmazonSSM.TerminateSession"}
    answer = api.send(body, replayed)
    assert_error(answer, 400, "InvalidSignatureException")
    assert_error(api.send(body, headers), 400, "DoesNotExistException")  # the original is fine


# ---- real clients --------------------------------------------------------------------------


def test_boto3_and_the_hatchway_client_pass_validation(api: ApiServer, quiet_log: None) -> None:
    ssm = boto3.session.Session().client(
        "ssm",
        endpoint_url=api.endpoint,
        region_name=api.region,
        aws_access_key_id=api.admin.access_key_id,
        aws_secret_access_key=api.admin.secret_access_key,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    expires = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) + 3600, UTC)
    created = ssm.create_activation(
        IamRole="SSMServiceRole",
        Description="from boto3",
        DefaultInstanceName="web server",
        RegistrationLimit=2,
        ExpirationDate=expires,
        Tags=[{"Key": "Team", "Value": "ops é"}],
    )
    listed = ssm.describe_activations(
        Filters=[{"FilterKey": "ActivationIds", "FilterValues": [created["ActivationId"]]}],
        MaxResults=1,
    )["ActivationList"]
    assert [a["ActivationId"] for a in listed] == [created["ActivationId"]]
    assert listed[0]["ExpirationDate"] == expires
    assert (
        ssm.describe_instance_information(
            Filters=[{"Key": "tag:Team", "Values": ["ops"]}], MaxResults=5
        )["InstanceInformationList"]
        == []
    )
    assert (
        ssm.describe_sessions(
            State="History", Filters=[{"key": "InvokedAfter", "value": "2020-01-01T00:00:00Z"}]
        )["Sessions"]
        == []
    )
    with pytest.raises(ClientError) as caught:
        ssm.start_session(Target=NODE_ID, Reason="why", Parameters={"a": ["b"]})
    assert caught.value.response["Error"]["Code"] == "TargetNotConnected"

    client = ApiClient(
        api.endpoint,
        region=api.region,
        credentials=Credentials(api.admin.access_key_id, api.admin.secret_access_key),
    )
    assert client.call("DescribeSessions", {"State": "Active"}) == {"Sessions": []}
    with pytest.raises(ApiError) as refused:
        client.call("DescribeSessions", {"State": "Active", "MaxResults": 0})
    assert refused.value.code == "ValidationException"


def test_the_agent_registers_through_the_schema(
    api: ApiServer, quiet_log: None, tmp_path: Any
) -> None:
    client = ApiClient(
        api.endpoint,
        region=api.region,
        credentials=Credentials(api.admin.access_key_id, api.admin.secret_access_key),
    )
    activation = client.call("CreateActivation", {"IamRole": "", "DefaultInstanceName": ""})
    state = register(
        endpoint=api.endpoint,
        activation_id=activation["ActivationId"],
        activation_code=activation["ActivationCode"],
        state_dir=tmp_path / "agent",
        region=api.region,
    )
    assert re.fullmatch(r"mi-[0-9a-f]{17}", state.node_id)
