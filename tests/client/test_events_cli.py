"""``hatchway events …``: the request each command sends and how answers print."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.client.fakeapi import FakeApi, install, invoke

HW = "Hatchway"
SUBSCRIPTION = {
    "SubscriptionId": "sub-0123456789abcdef",
    "Url": "https://hooks.example/h",
    "Events": ["session.started", "session.ended"],
    "CreatedDate": 1795000000.5,
    "CreatedBy": "arn:aws:iam::123456789012:user/admin",
}
DELIVERY = {
    "DeliveryId": 7,
    "SubscriptionId": "sub-0123456789abcdef",
    "EventId": "0b6f7c1e-0000-4000-8000-000000000000",
    "EventType": "session.started",
    "EventTime": 1795000000.5,
    "Status": "pending",
    "Attempts": 2,
    "CreatedDate": 1795000000.5,
    "LastAttemptDate": 1795000003.5,
    "LastStatusCode": 500,
    "LastError": "HTTP 500",
    "NextAttemptDate": 1795000007.5,
}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return install(monkeypatch)


REQUESTS: list[tuple[list[str], str, dict[str, Any]]] = [
    (
        ["events", "create-subscription", "--url", "https://h.example/x", "--events",
         "session.started,session.ended", "--secret", "s3cret"],
        "CreateEventSubscription",
        {"Url": "https://h.example/x", "Events": ["session.started", "session.ended"],
         "Secret": "s3cret"},
    ),
    (
        ["events", "create-subscription", "--url", "http://h/x", "--events", "node.online",
         "--events", "node.offline, access.denied", "--secret", "s3cret"],
        "CreateEventSubscription",
        {"Url": "http://h/x", "Events": ["node.online", "node.offline", "access.denied"],
         "Secret": "s3cret"},
    ),
    (["events", "list-subscriptions"], "ListEventSubscriptions", {}),
    (
        ["events", "delete-subscription", "sub-0123456789abcdef"],
        "DeleteEventSubscription",
        {"SubscriptionId": "sub-0123456789abcdef"},
    ),
    (["events", "list-deliveries"], "ListEventDeliveries", {"MaxResults": 100}),
    (
        ["events", "list-deliveries", "--subscription", "sub-0123456789abcdef", "--status",
         "failed", "--max-items", "5"],
        "ListEventDeliveries",
        {"SubscriptionId": "sub-0123456789abcdef", "Status": "failed", "MaxResults": 5},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("args", "operation", "body"), REQUESTS)
def test_each_command_sends_its_request(
    api: FakeApi, args: list[str], operation: str, body: dict[str, Any]
) -> None:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert api.calls == [(HW, operation, body)]


def test_without_secret_it_is_read_from_stdin_not_the_command_line(api: FakeApi) -> None:
    args = ["events", "create-subscription", "--url", "https://h/x", "--events", "node.online"]
    result = invoke(*args, input="piped-secret\n")
    assert result.exit_code == 0, result.output
    assert api.calls[0][2]["Secret"] == "piped-secret"


def test_no_event_type_is_a_usage_error(api: FakeApi) -> None:
    args = ["events", "create-subscription", "--url", "https://h/x", "--events", " , "]
    result = invoke(*args, "--secret", "s3cret")
    assert result.exit_code == 2 and "event type" in result.output
    assert api.calls == []


def test_subscriptions_print_as_a_table_or_json_with_iso_times(api: FakeApi) -> None:
    api.responses["ListEventSubscriptions"] = {"Subscriptions": [SUBSCRIPTION]}
    table = invoke("events", "list-subscriptions").stdout
    assert "sub-0123456789abcdef" in table and "session.started,session.ended" in table
    assert "2026-11-18 11:06:40" in table
    printed = json.loads(invoke("events", "list-subscriptions", "--output", "json").stdout)
    assert printed["Subscriptions"][0]["CreatedDate"] == "2026-11-18T11:06:40.500000+00:00"


def test_deliveries_follow_pages_up_to_max_items(api: FakeApi) -> None:
    api.responses["ListEventDeliveries"] = [
        {"Deliveries": [DELIVERY, {**DELIVERY, "DeliveryId": 6}], "NextToken": "2"},
        {"Deliveries": [{**DELIVERY, "DeliveryId": 5}]},
    ]
    result = invoke("events", "list-deliveries", "--max-items", "3", "--output", "json")
    printed = json.loads(result.stdout)
    assert [d["DeliveryId"] for d in printed["Deliveries"]] == [7, 6, 5]
    assert printed["Deliveries"][0]["NextAttemptDate"] == "2026-11-18T11:06:47.500000+00:00"
    assert api.calls[1][2] == {"MaxResults": 1, "NextToken": "2"}
    api.responses["ListEventDeliveries"] = {"Deliveries": [DELIVERY]}
    table = invoke("events", "list-deliveries").stdout
    assert "HTTP 500" in table and "2026-11-18 11:06:47" in table


def test_a_server_repeating_its_token_is_an_error_not_a_loop(api: FakeApi) -> None:
    page = {"Deliveries": [DELIVERY], "NextToken": "1"}
    api.responses["ListEventDeliveries"] = [page, page, page]
    result = invoke("events", "list-deliveries")
    assert result.exit_code != 0 and len(api.calls) == 2
