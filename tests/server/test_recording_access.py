"""Reading a recording is the policy action ``hatchway:GetSessionRecording`` on the session's
ARN: a policy can limit it to one's own sessions, and bad requests are refused precisely."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hatchway.server.operations import HATCHWAY
from tests.server.apiserver import ApiServer, running_api

OWN_RECORDINGS = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "hatchway:GetSessionRecording",
            "Resource": "arn:aws:ssm:*:*:session/${aws:username}-*",
        }
    ],
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(tmp_path_factory.mktemp("recaccess")) as server:
        yield server


def test_a_policy_limits_reading_to_ones_own_sessions(api: ApiServer) -> None:
    api.post("CreateUser", {"UserName": "carol"}, service=HATCHWAY)
    policy = {
        "UserName": "carol",
        "PolicyName": "own",
        "PolicyDocument": json.dumps(OWN_RECORDINGS),
    }
    assert api.post("PutUserPolicy", policy, service=HATCHWAY).status == 200
    key = api.post("CreateAccessKey", {"UserName": "carol"}, service=HATCHWAY).body["AccessKey"]
    creds = {"key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}

    own = api.post("GetSessionRecording", {"SessionId": "carol-0123456789abcdef0"},
                   service=HATCHWAY, **creds)  # fmt: skip
    assert own.type == "DoesNotExistException", own.body  # allowed; there is no such session
    other = api.post("GetSessionRecording", {"SessionId": "dave-0123456789abcdef0"},
                     service=HATCHWAY, **creds)  # fmt: skip
    assert other.type == "AccessDeniedException"
    assert "hatchway:GetSessionRecording" in other.message
    assert "session/dave-0123456789abcdef0" in other.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "ValidationException"),
        ({"SessionId": ""}, "ValidationException"),
        ({"SessionId": "admin-0123456789abcdef0", "MaxBytes": 0}, "ValidationException"),
        ({"SessionId": "admin-0123456789abcdef0", "MaxBytes": 2**21}, "ValidationException"),
        ({"SessionId": "admin-0123456789abcdef0", "NextToken": "abc"}, "InvalidNextToken"),
        ({"SessionId": "admin-0123456789abcdef0"}, "DoesNotExistException"),
    ],
)
def test_bad_requests_are_refused_precisely(
    api: ApiServer, body: dict[str, object], expected: str
) -> None:
    answer = api.post("GetSessionRecording", body, service=HATCHWAY)
    assert answer.status == 400 and answer.type == expected, answer.body
