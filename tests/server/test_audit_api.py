"""The audit trail through the API, in process: every call, refusal and change is recorded
with who, what, the decision and the outcome; LookupEvents finds them in CloudTrail's shape;
VerifyAuditTrail verifies the chain and names a tampered record."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hatchway.auth.agentkey import generate_private_key, public_key_b64
from tests.server.apiserver import Answer, ApiServer, running_api

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(tmp_path_factory.mktemp("audit")) as server:
        yield server


def hatchway(api: ApiServer, op: str, body: dict[str, Any], **kw: Any) -> Answer:
    return api.post(op, body, service="Hatchway", **kw)


def events(api: ApiServer, **body: Any) -> list[dict[str, Any]]:
    answer = hatchway(api, "LookupEvents", body)
    assert answer.status == 200, answer.body
    return list(answer.body["Events"])


def full(event: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(event["CloudTrailEvent"])
    return record


def latest(api: ApiServer, name: str) -> dict[str, Any]:
    found = events(api, LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": name}])
    assert found, f"no {name} event"
    return full(found[0])


@pytest.fixture(scope="module")
def dev(api: ApiServer) -> tuple[str, str]:
    """A user without any policy, and its access key."""
    assert hatchway(api, "CreateUser", {"UserName": "dev"}).status == 200
    key = hatchway(api, "CreateAccessKey", {"UserName": "dev"}).body["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_an_iam_change_is_recorded_with_its_decision(api: ApiServer, dev: tuple[str, str]) -> None:
    record = latest(api, "CreateUser")
    assert record["eventCode"] == "HWI001"
    assert record["eventType"] == "AwsApiCall"
    assert record["eventSource"] == "hatchway"
    assert record["action"] == "hatchway:CreateUser"
    assert record["readOnly"] is False
    assert record["userIdentity"] == {
        "type": "User",
        "arn": f"arn:aws:iam::{api.server.account_id}:user/admin",
        "userName": "admin",
        "accessKeyId": api.admin.access_key_id,
    }
    assert record["sourceIPAddress"] == "127.0.0.1"
    assert record["requestParameters"] == {"UserName": "dev"}
    assert record["resources"] == [
        {
            "type": "AWS::IAM::User",
            "name": "dev",
            "arn": f"arn:aws:iam::{api.server.account_id}:user/dev",
        }
    ]
    assert record["decision"]["outcome"] == "allowed"
    assert record["decision"]["policy"] == "arn:aws:iam::aws:policy/AdministratorAccess"
    assert "errorCode" not in record
    assert record["requestId"]


def test_a_denied_call_is_recorded_with_the_reason(api: ApiServer, dev: tuple[str, str]) -> None:
    key_id, secret = dev
    answer = api.post("DescribeSessions", {"State": "Active"}, key_id=key_id, secret=secret)
    assert answer.type == "AccessDeniedException"
    record = latest(api, "DescribeSessions")
    assert record["eventCode"] == "HWA003"
    assert record["errorCode"] == "AccessDeniedException"
    assert record["userIdentity"]["userName"] == "dev"
    assert record["userIdentity"]["accessKeyId"] == key_id
    assert record["decision"]["outcome"] == "implicitDeny"
    assert record["requestId"] == answer.headers["x-amzn-RequestId"]
    assert record["eventSource"] == "ssm.amazonaws.com"
    # Reading the trail is an action of its own, not granted by default.
    refused = hatchway(api, "LookupEvents", {}, key_id=key_id, secret=secret)
    assert refused.type == "AccessDeniedException"
    assert "hatchway:LookupEvents" in refused.message
    assert latest(api, "LookupEvents")["errorCode"] == "AccessDeniedException"


def test_a_bad_signature_is_recorded_as_an_authentication_failure(
    api: ApiServer, dev: tuple[str, str]
) -> None:
    key_id, _ = dev
    answer = api.post("DescribeSessions", {"State": "Active"}, key_id=key_id, secret="x" * 40)
    assert answer.type == "InvalidSignatureException"
    record = latest(api, "DescribeSessions")
    assert record["eventCode"] == "HWA004"
    assert record["userIdentity"] == {"type": "Anonymous", "accessKeyId": key_id}


def test_secrets_never_reach_the_trail(api: ApiServer, dev: tuple[str, str]) -> None:
    assert hatchway(api, "SetPassword", {"UserName": "dev", "Password": PASSWORD}).status == 200
    activation = api.post("CreateActivation", {"IamRole": "r", "RegistrationLimit": 1}).body
    code = activation["ActivationCode"]
    register = api.post(
        "RegisterManagedInstance",
        {
            "ActivationId": activation["ActivationId"],
            "ActivationCode": code,
            "PublicKey": public_key_b64(generate_private_key()),
        },
        sign=False,
    )
    assert register.status == 200
    assert latest(api, "SetPassword")["requestParameters"] == {
        "UserName": "dev",
        "Password": "***",
    }
    assert latest(api, "RegisterManagedInstance")["requestParameters"]["ActivationCode"] == "***"
    trail = json.dumps(events(api, MaxResults=1000))
    _, secret = dev
    for leaked in (PASSWORD, code, secret, api.admin.secret_access_key):
        assert leaked not in trail


def test_a_registration_is_recorded_with_the_node_it_made(api: ApiServer) -> None:
    activation = api.post("CreateActivation", {"IamRole": "r", "RegistrationLimit": 1}).body
    body = {
        "ActivationId": activation["ActivationId"],
        "ActivationCode": "wrong-code-wrong-code-wrong1",
        "PublicKey": public_key_b64(generate_private_key()),
    }
    assert api.post("RegisterManagedInstance", body, sign=False).type == "InvalidActivation"
    failed = latest(api, "RegisterManagedInstance")
    assert (failed["eventCode"], failed["errorCode"]) == ("HWA004", "InvalidActivation")
    body["ActivationCode"] = activation["ActivationCode"]
    node_id = api.post("RegisterManagedInstance", body, sign=False).body["InstanceId"]
    by_sequence = {
        full(e)["hatchwayChain"]["sequence"]: full(e) for e in events(api, MaxResults=1000)
    }
    registered = latest(api, "NodeRegistered")
    seq = registered["hatchwayChain"]["sequence"]
    # One transaction: the call, then the node it registered, next to each other.
    assert by_sequence[seq - 1]["eventName"] == "RegisterManagedInstance"
    assert "errorCode" not in by_sequence[seq - 1]
    assert registered["resources"][0]["name"] == node_id
    assert registered["userIdentity"] == {"type": "Node", "nodeId": node_id}
    assert registered["additionalEventData"]["activationId"] == activation["ActivationId"]
    assert api.post("DeregisterManagedInstance", {"InstanceId": node_id}).status == 200
    gone = latest(api, "NodeDeregistered")
    assert gone["userIdentity"]["userName"] == "admin"
    assert gone["resources"][0]["name"] == node_id


def test_lookup_events_filters_and_pages(api: ApiServer, dev: tuple[str, str]) -> None:
    everything = events(api, MaxResults=1000)
    assert len(everything) >= 5
    sequences = [full(e)["hatchwayChain"]["sequence"] for e in everything]
    assert sequences == sorted(sequences, reverse=True)  # newest first
    first = everything[0]
    assert set(first) >= {
        "EventId", "EventName", "ReadOnly", "EventTime", "EventSource", "Username", "Resources",
        "CloudTrailEvent",
    }  # fmt: skip
    assert first["ReadOnly"] in ("true", "false")
    mine = events(api, LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "dev"}])
    assert mine and all(e["Username"] == "dev" for e in mine)
    reads = events(api, LookupAttributes=[{"AttributeKey": "ReadOnly", "AttributeValue": "true"}])
    assert reads and all(e["ReadOnly"] == "true" for e in reads)
    one = events(
        api, LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": first["EventId"]}]
    )
    assert [e["EventId"] for e in one] == [first["EventId"]]
    page = hatchway(api, "LookupEvents", {"MaxResults": 2}).body
    rest = hatchway(api, "LookupEvents", {"MaxResults": 1000, "NextToken": page["NextToken"]})
    paged = [full(e)["hatchwayChain"]["sequence"] for e in page["Events"] + rest.body["Events"]]
    assert paged == list(range(paged[0], 0, -1))  # every record once, newest first
    when = everything[-1]["EventTime"]
    window = events(api, StartTime=when, EndTime=when + 0.0005)
    assert everything[-1]["EventId"] in [e["EventId"] for e in window]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"NextToken": "x1"}, "InvalidNextToken"),
        ({"LookupAttributes": [{"AttributeKey": "Nope", "AttributeValue": "x"}]}, "Validation"),
        ({"LookupAttributes": [{"AttributeKey": "ReadOnly", "AttributeValue": "x"}]}, "Validation"),
        (
            {
                "LookupAttributes": [
                    {"AttributeKey": "Username", "AttributeValue": "a"},
                    {"AttributeKey": "Username", "AttributeValue": "b"},
                ]
            },
            "Validation",
        ),
        ({"StartTime": 20, "EndTime": 10}, "Validation"),
        ({"MaxResults": 0}, "Validation"),
    ],
)
def test_bad_lookups_are_refused_clearly(api: ApiServer, body: dict[str, Any], error: str) -> None:
    answer = hatchway(api, "LookupEvents", body)
    assert answer.status == 400
    assert answer.type.startswith(error)


def test_verify_names_a_tampered_record(tmp_path: Path) -> None:
    with running_api(tmp_path) as api:
        for name in ("a", "b", "c"):
            assert hatchway(api, "CreateGroup", {"GroupName": name}).status == 200
        intact = hatchway(api, "VerifyAuditTrail", {}).body
        assert intact["Intact"] is True
        assert intact["Records"] == intact["LastSequence"] >= 3
        head = intact["HeadHash"]
        db = sqlite3.connect(tmp_path / "hatchway.db")
        try:
            with db:
                db.execute(
                    "UPDATE audit_events SET record = replace(record, '\"b\"', '\"x\"') "
                    "WHERE event_name = 'CreateGroup' AND record LIKE '%\"GroupName\":\"b\"%'"
                )
            seq = db.execute(
                'SELECT sequence FROM audit_events WHERE record LIKE \'%"GroupName":"x"%\''
            ).fetchone()[0]
        finally:
            db.close()
        broken = hatchway(api, "VerifyAuditTrail", {}).body
        assert broken["Intact"] is False
        assert broken["Break"]["Sequence"] == seq
        assert f"record {seq}" in broken["Summary"]
        # An anchor kept from before catches a rewrite that a fresh chain would hide.
        anchored = hatchway(
            api, "VerifyAuditTrail", {"Anchors": [{"Sequence": 1, "Hash": "0" * 64}]}
        ).body
        assert anchored["Intact"] is False and anchored["Break"]["Sequence"] == 1
        assert len(head) == 64
