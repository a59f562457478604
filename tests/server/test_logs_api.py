"""The log groups API in process: boto3's own ``logs`` client against a real server (groups,
retention policies, streams, GetLogEvents' tokens, FilterLogEvents' paging and pattern), the
``logs:*`` actions under policies, and bad requests refused precisely."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from hatchway.server.logs import LOGS
from hatchway.server.operations import HATCHWAY
from hatchway.store.database import sqlite_url
from hatchway.store.logs import StreamBatch
from hatchway.store.store import Store
from tests.server.apiserver import ApiServer, running_api

T0_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(tmp_path_factory.mktemp("logsapi")) as server:
        yield server


def client(api: ApiServer, key_id: str | None = None, secret: str | None = None) -> Any:
    return boto3.client(
        "logs",
        endpoint_url=api.endpoint,
        region_name=api.region,
        aws_access_key_id=key_id or api.admin.access_key_id,
        aws_secret_access_key=secret or api.admin.secret_access_key,
    )


def fill(api: ApiServer, group: str, streams: dict[str, list[str]]) -> None:
    """Write events as the server's log writer does (a second connection to its database)."""

    async def main() -> None:
        store = Store.open(sqlite_url(api.server.settings.db_path), run_migrations=False)
        try:
            g = await store.logs.ensure_group(group, 1.0)
            for name, messages in streams.items():
                s = await store.logs.open_stream(g.group_id, name, 2.0)
                events = [(T0_MS + i, m) for i, m in enumerate(messages)]
                await store.logs.append([StreamBatch(s.stream_id, events)], T0_MS + 10_000)
        finally:
            await store.close()

    asyncio.run(main())


def error(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def test_groups_and_retention_policies(api: ApiServer) -> None:
    logs = client(api)
    logs.create_log_group(logGroupName="/hatchway/a")
    logs.create_log_group(logGroupName="/hatchway/b")
    with pytest.raises(ClientError) as exc:
        logs.create_log_group(logGroupName="/hatchway/a")
    assert error(exc) == "ResourceAlreadyExistsException"
    logs.put_retention_policy(logGroupName="/hatchway/a", retentionInDays=7)
    groups = [
        g
        for page in logs.get_paginator("describe_log_groups").paginate(
            logGroupNamePrefix="/hatchway/", PaginationConfig={"PageSize": 1}
        )
        for g in page["logGroups"]
    ]
    assert [g["logGroupName"] for g in groups] == ["/hatchway/a", "/hatchway/b"]
    assert groups[0]["retentionInDays"] == 7 and "retentionInDays" not in groups[1]
    account = api.server.account_id
    assert groups[0]["arn"] == f"arn:aws:logs:{api.region}:{account}:log-group:/hatchway/a:*"
    logs.delete_retention_policy(logGroupName="/hatchway/a")
    (a,) = logs.describe_log_groups(logGroupNamePrefix="/hatchway/a")["logGroups"]
    assert "retentionInDays" not in a
    with pytest.raises(ClientError) as exc:
        logs.put_retention_policy(logGroupName="/hatchway/a", retentionInDays=2)
    assert error(exc) == "InvalidParameterException"
    logs.delete_log_group(logGroupName="/hatchway/b")
    with pytest.raises(ClientError) as exc:
        logs.delete_log_group(logGroupName="/hatchway/b")
    assert error(exc) == "ResourceNotFoundException"
    for bad in ("no spaces!", "a:b"):
        with pytest.raises(ClientError) as exc:
            logs.create_log_group(logGroupName=bad)
        assert error(exc) == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        logs.create_log_group(logGroupName="/hatchway/c", kmsKeyId="alias/x")
    assert error(exc) == "InvalidParameterException"


def test_get_log_events_pages_forward_and_backward_with_cloudwatchs_tokens(
    api: ApiServer,
) -> None:
    fill(api, "get", {"alice-1": [f"line {i}\r\n" for i in range(5)], "bob-2": ["other\n"]})
    logs = client(api)
    got, token = [], None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"nextToken": token} if token else {"startFromHead": True}
        page = logs.get_log_events(logGroupName="get", logStreamName="alice-1", limit=2, **kwargs)
        got += [e["message"] for e in page["events"]]
        pages += 1
        if page["nextForwardToken"] == token:
            break  # the same token again: the end, as with CloudWatch
        token = page["nextForwardToken"]
    assert got == [f"line {i}\r\n" for i in range(5)] and pages == 4
    newest = logs.get_log_events(logGroupName="get", logStreamName="alice-1", limit=2)
    assert [e["message"] for e in newest["events"]] == ["line 3\r\n", "line 4\r\n"]
    assert newest["events"][0]["timestamp"] == T0_MS + 3
    assert newest["events"][0]["ingestionTime"] == T0_MS + 10_000
    older = logs.get_log_events(
        logGroupName="get", logStreamName="alice-1", nextToken=newest["nextBackwardToken"]
    )
    assert [e["message"] for e in older["events"]] == [f"line {i}\r\n" for i in range(3)]
    timed = logs.get_log_events(
        logGroupIdentifier=f"arn:aws:logs:{api.region}:{api.server.account_id}:log-group:get",
        logStreamName="alice-1",
        startTime=T0_MS + 1,
        endTime=T0_MS + 2,
        startFromHead=True,
    )
    assert [e["message"] for e in timed["events"]] == ["line 1\r\n", "line 2\r\n"]
    for kwargs, expected in (
        ({"logStreamName": "nobody"}, "ResourceNotFoundException"),
        ({"logStreamName": "alice-1", "nextToken": "x/12"}, "InvalidParameterException"),
        ({"logStreamName": "a*b"}, "InvalidParameterException"),
    ):
        with pytest.raises(ClientError) as exc:
            logs.get_log_events(logGroupName="get", **kwargs)
        assert error(exc) == expected, kwargs
    (first, second) = logs.describe_log_streams(
        logGroupName="get", orderBy="LastEventTime", descending=True
    )["logStreams"]
    assert (first["logStreamName"], second["logStreamName"]) == ("alice-1", "bob-2")
    assert first["lastEventTimestamp"] == T0_MS + 4 and first["storedBytes"] == 5 * len(
        "line 0\r\n"
    )


def test_filter_log_events_pages_filters_and_names_streams(api: ApiServer) -> None:
    fill(api, "filter", {"carol-1": ["a ERROR b\n", "fine\n"], "dave-2": ["ERROR too\n"]})
    logs = client(api)
    paged = [
        e
        for page in logs.get_paginator("filter_log_events").paginate(
            logGroupName="filter", PaginationConfig={"PageSize": 1}
        )
        for e in page["events"]
    ]
    assert [(e["logStreamName"], e["message"]) for e in paged] == [
        ("carol-1", "a ERROR b\n"),
        ("carol-1", "fine\n"),
        ("dave-2", "ERROR too\n"),
    ]
    ids = [int(e["eventId"]) for e in paged]
    assert ids == sorted(ids)
    found = logs.filter_log_events(logGroupName="filter", filterPattern='"ERROR"')["events"]
    assert [e["logStreamName"] for e in found] == ["carol-1", "dave-2"]
    only = logs.filter_log_events(logGroupName="filter", logStreamNames=["dave-2", "nobody"])
    assert [e["message"] for e in only["events"]] == ["ERROR too\n"]
    assert logs.filter_log_events(logGroupName="filter", logStreamNames=["nobody"])["events"] == []
    after = logs.filter_log_events(logGroupName="filter", nextToken=f"e/{ids[0]}")["events"]
    assert [e["message"] for e in after] == ["fine\n", "ERROR too\n"]
    prefixed = logs.filter_log_events(logGroupName="filter", logStreamNamePrefix="car")
    assert {e["logStreamName"] for e in prefixed["events"]} == {"carol-1"}
    with pytest.raises(ClientError) as exc:
        logs.filter_log_events(logGroupName="filter", logStreamNames=["a"], logStreamNamePrefix="a")
    assert error(exc) == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        logs.filter_log_events(logGroupName="nope")
    assert error(exc) == "ResourceNotFoundException"


OWN_STREAMS = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["logs:GetLogEvents", "logs:FilterLogEvents"],
            "Resource": "arn:aws:logs:*:*:log-group:shared:log-stream:${aws:username}-*",
        },
        {"Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "*"},
    ],
}


def test_policies_can_limit_reading_to_ones_own_sessions_streams(api: ApiServer) -> None:
    fill(api, "shared", {"erin-1": ["mine\n"], "frank-2": ["not mine\n"]})
    api.post("CreateUser", {"UserName": "erin"}, service=HATCHWAY)
    policy = {"UserName": "erin", "PolicyName": "own", "PolicyDocument": json.dumps(OWN_STREAMS)}
    assert api.post("PutUserPolicy", policy, service=HATCHWAY).status == 200
    key = api.post("CreateAccessKey", {"UserName": "erin"}, service=HATCHWAY).body["AccessKey"]
    erin = client(api, key["AccessKeyId"], key["SecretAccessKey"])
    own = erin.get_log_events(logGroupName="shared", logStreamName="erin-1", startFromHead=True)
    assert [e["message"] for e in own["events"]] == ["mine\n"]
    assert erin.describe_log_groups()["logGroups"]
    mine = erin.filter_log_events(logGroupName="shared", logStreamNames=["erin-1"])["events"]
    assert [e["message"] for e in mine] == ["mine\n"]
    for call in (
        lambda: erin.get_log_events(logGroupName="shared", logStreamName="frank-2"),
        lambda: erin.filter_log_events(logGroupName="shared"),
        lambda: erin.filter_log_events(logGroupName="shared", logStreamNames=["erin-1", "frank-2"]),
        lambda: erin.delete_log_group(logGroupName="shared"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert error(exc) == "AccessDeniedException"
        assert "logs:" in exc.value.response["Error"]["Message"]


def test_a_request_signed_for_another_service_is_refused(api: ApiServer) -> None:
    body = json.dumps({}).encode()
    headers = api.signed_headers("DescribeLogGroups", body, service=LOGS)
    assert api.send(body, headers).status == 200
    # Signed for "ssm" (the scope names the service): refused.
    headers = api.signed_headers("DescribeSessions", body, service="AmazonSSM")
    headers["X-Amz-Target"] = f"{LOGS}.DescribeLogGroups"
    answer = api.send(body, headers)
    assert answer.status == 400 and answer.type in (
        "InvalidSignatureException",
        "IncompleteSignatureException",
    ), answer.body


def test_log_group_calls_are_in_the_audit_trail(api: ApiServer) -> None:
    logs = client(api)
    logs.create_log_group(logGroupName="/audited/x")
    logs.describe_log_streams(logGroupName="/audited/x")

    async def main() -> list[dict[str, Any]]:
        from hatchway.store.audit import AuditQuery

        store = Store.open(sqlite_url(api.server.settings.db_path), run_migrations=False)
        try:
            await store.audit.settle()
            rows = await store.audit.lookup(AuditQuery(resource_name="/audited/x"), limit=10)
            return [r.event() for r in rows]
        finally:
            await store.close()

    events = asyncio.run(main())
    assert [e["eventName"] for e in events] == ["DescribeLogStreams", "CreateLogGroup"]
    created = events[1]
    assert created["eventSource"] == "logs.amazonaws.com"
    assert created["action"] == "logs:CreateLogGroup" and created["eventCode"] == "HWA001"
    assert created["resources"][0]["type"] == "AWS::Logs::LogGroup"
