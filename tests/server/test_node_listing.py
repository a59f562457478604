"""DescribeInstanceInformation through the real API: keyset pages, filters, tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from hatchway.server.pagination import keyset_request, keyset_token
from tests.server.apiserver import ApiServer
from tests.server.test_api_validation import assert_error, quiet_log  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def registered(api: ApiServer) -> list[str]:
    """Seven nodes, registered in this order; the first three tagged Team=a."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    der = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    public_key = base64.b64encode(der).decode()
    activation = api.post("CreateActivation", {"IamRole": "r", "RegistrationLimit": 7}).body
    ids = []
    for _ in range(7):
        answer = api.post(
            "RegisterManagedInstance",
            {
                "ActivationId": activation["ActivationId"],
                "ActivationCode": activation["ActivationCode"],
                "PublicKey": public_key,
                "PublicKeyType": "Rsa",
                "Fingerprint": "f",
            },
            sign=False,
        )
        assert answer.status == 200, answer.body
        ids.append(answer.body["InstanceId"])
    for node_id in ids[:3]:
        tags = {"ResourceType": "ManagedInstance", "ResourceId": node_id,
                "Tags": [{"Key": "Team", "Value": "a"}]}  # fmt: skip
        assert api.post("AddTagsToResource", tags).status == 200
    return ids


def listing(api: ApiServer, body: dict[str, Any]) -> tuple[list[str], int]:
    """Every page's ids, and how many pages."""
    ids: list[str] = []
    pages = 0
    token = None
    while True:
        answer = api.post(
            "DescribeInstanceInformation", {**body, **({"NextToken": token} if token else {})}
        )
        assert answer.status == 200, answer.body
        pages += 1
        ids += [n["InstanceId"] for n in answer.body["InstanceInformationList"]]
        token = answer.body.get("NextToken")
        if token is None:
            return ids, pages


def test_pages_list_every_node_once_in_registration_order(
    api: ApiServer, registered: list[str]
) -> None:
    ids, pages = listing(api, {"MaxResults": 5})
    assert [i for i in ids if i in registered] == registered and len(set(ids)) == len(ids)
    assert pages >= 2


def test_filters_are_applied_across_pages(api: ApiServer, registered: list[str]) -> None:
    by_tag, _ = listing(api, {"MaxResults": 5, "Filters": [{"Key": "tag:Team", "Values": ["a"]}]})
    assert by_tag == registered[:3]
    chosen = [registered[6], registered[1], registered[4]]
    by_id, pages = listing(
        api,
        {"MaxResults": 5, "InstanceInformationFilterList": [
            {"key": "InstanceIds", "valueSet": chosen}]},
    )  # fmt: skip
    assert by_id == [registered[1], registered[4], registered[6]] and pages == 1
    online, _ = listing(api, {"Filters": [{"Key": "PingStatus", "Values": ["Online"]}]})
    assert online == []  # no agent is connected
    lost, _ = listing(
        api, {"MaxResults": 5, "Filters": [{"Key": "PingStatus", "Values": ["ConnectionLost"]}]}
    )
    assert [i for i in lost if i in registered] == registered


def test_boto3_pages_through_them(api: ApiServer, registered: list[str]) -> None:
    ssm = api.client("ssm")
    pages = ssm.get_paginator("describe_instance_information").paginate(
        PaginationConfig={"PageSize": 5}
    )
    ids = [n["InstanceId"] for page in pages for n in page["InstanceInformationList"]]
    assert [i for i in ids if i in registered] == registered


def token_of(raw: bytes) -> str:
    return "k1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "k1.",
        "k1.!!!!",
        "k1." + "A" * 401,
        "k2.WzEsIngiXQ",
        token_of(b'[1e999,"x"]'),
        token_of(b"[1]"),
        token_of(b'[1,""]'),
        token_of(b'[true,"x"]'),
        token_of(b'["1","x"]'),
        token_of(b'[1,"' + b"x" * 65 + b'"]'),
        token_of(b'[1,"\\u00e9"]'),
        token_of(b"{}"),
        token_of(b"\xff\xfe"),
        token_of(b"1" * 300),
        "12",
    ],
)
@pytest.mark.usefixtures("quiet_log")
def test_a_token_this_server_did_not_issue_is_invalid(api: ApiServer, token: str) -> None:
    answer = api.post("DescribeInstanceInformation", {"NextToken": token})
    assert_error(answer, 400, "InvalidNextToken")


def test_a_token_resumes_after_a_node_that_is_gone(api: ApiServer, registered: list[str]) -> None:
    # A key, not an offset: nodes deregistered between pages shift nothing.
    token = keyset_token((0.5, "mi-00000000000000000"))
    answer = api.post("DescribeInstanceInformation", {"NextToken": token, "MaxResults": 5})
    assert answer.status == 200 and len(answer.body["InstanceInformationList"]) == 5


def test_keyset_tokens_round_trip() -> None:
    for key in [(0.0, "mi-1"), (1764540000.123456, "mi-0123456789abcdef0"), (-1.5, "x")]:
        assert keyset_request({"NextToken": keyset_token(key)}, default=50) == (50, key)
    assert json.loads(base64.urlsafe_b64decode(keyset_token((1.0, "a"))[3:] + "==")) == [1.0, "a"]
