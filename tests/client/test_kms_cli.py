"""``hatchway kms …``: the request each command sends and how answers print."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hatchway.cli import main
from hatchway.client.exitstatus import ExitStatus
from hatchway.transport.apiclient import ApiError
from tests.client.fakeapi import FakeApi, install, invoke

KMS = "TrentService"
KEY_ID = "6f1c2e0a-8a3b-4c1d-9e2f-0123456789ab"
ARN = f"arn:aws:kms:local:123456789012:key/{KEY_ID}"
META = {
    "AWSAccountId": "123456789012",
    "KeyId": KEY_ID,
    "Arn": ARN,
    "CreationDate": 1795000000.5,
    "Enabled": True,
    "Description": "recordings",
    "KeyState": "Enabled",
}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return install(monkeypatch)


REQUESTS: list[tuple[list[str], list[tuple[str, dict[str, Any]]]]] = [
    (["kms", "create-key"], [("CreateKey", {"Description": ""})]),
    (
        ["kms", "create-key", "--description", "rec", "--alias", "recordings", "--tag", "t=v"],
        [
            ("CreateKey", {"Description": "rec", "Tags": [{"TagKey": "t", "TagValue": "v"}]}),
            ("CreateAlias", {"AliasName": "alias/recordings", "TargetKeyId": KEY_ID}),
        ],
    ),
    (["kms", "disable-key", "alias/recordings"], [("DisableKey", {"KeyId": "alias/recordings"})]),
    (["kms", "enable-key", KEY_ID], [("EnableKey", {"KeyId": KEY_ID})]),
    (["kms", "describe-key", ARN, "--output", "json"], [("DescribeKey", {"KeyId": ARN})]),
    (
        ["kms", "schedule-key-deletion", KEY_ID, "--pending-window-in-days", "7"],
        [("ScheduleKeyDeletion", {"KeyId": KEY_ID, "PendingWindowInDays": 7})],
    ),
    (["kms", "cancel-key-deletion", KEY_ID], [("CancelKeyDeletion", {"KeyId": KEY_ID})]),
    (
        ["kms", "create-alias", "rec", KEY_ID],
        [("CreateAlias", {"AliasName": "alias/rec", "TargetKeyId": KEY_ID})],
    ),
    (["kms", "delete-alias", "alias/rec"], [("DeleteAlias", {"AliasName": "alias/rec"})]),
    (["kms", "list-aliases", "--key", KEY_ID], [("ListAliases", {"KeyId": KEY_ID})]),
]


@pytest.mark.parametrize(("args", "calls"), REQUESTS)
def test_each_command_sends_its_request(
    api: FakeApi, args: list[str], calls: list[tuple[str, dict[str, Any]]]
) -> None:
    api.responses["CreateKey"] = {"KeyMetadata": META}
    api.responses["DescribeKey"] = {"KeyMetadata": META}
    api.responses["ScheduleKeyDeletion"] = {"KeyId": ARN, "DeletionDate": 1795600000.0}
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert api.calls == [(KMS, op, body) for op, body in calls]


def test_create_key_prints_a_table_with_the_alias(api: FakeApi) -> None:
    api.responses["CreateKey"] = {"KeyMetadata": dict(META)}
    result = invoke("kms", "create-key", "--alias", "recordings")
    assert result.exit_code == 0, result.output
    header, row, arn = result.stdout.splitlines()
    assert header.split() == ["KEY", "ID", "STATE", "ALIASES", "CREATED", "DELETION", "DESCRIPTION"]
    assert KEY_ID in row and "alias/recordings" in row and "2026-" in row
    assert arn == f"ARN: {ARN}"


def test_create_key_json_is_the_whole_response(api: FakeApi) -> None:
    api.responses["CreateKey"] = {"KeyMetadata": dict(META)}
    result = invoke("kms", "create-key", "--output", "json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["KeyMetadata"]["Arn"] == ARN
    assert printed["KeyMetadata"]["CreationDate"].endswith("+00:00")


def test_list_keys_follows_markers_and_shows_states_and_aliases(api: FakeApi) -> None:
    other = "11111111-1111-4111-8111-111111111111"
    api.responses["ListKeys"] = [
        {"Keys": [{"KeyId": KEY_ID, "KeyArn": ARN}], "Truncated": True, "NextMarker": KEY_ID},
        {"Keys": [{"KeyId": other, "KeyArn": "x"}], "Truncated": False},
    ]
    api.responses["ListAliases"] = {
        "Aliases": [{"AliasName": "alias/rec", "TargetKeyId": KEY_ID}],
        "Truncated": False,
    }
    api.responses["DescribeKey"] = [
        {"KeyMetadata": META},
        {"KeyMetadata": {**META, "KeyId": other, "KeyState": "Disabled"}},
    ]
    result = invoke("kms", "list-keys")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert KEY_ID in lines[1] and "Enabled" in lines[1] and "alias/rec" in lines[1]
    assert other in lines[2] and "Disabled" in lines[2]
    assert api.calls[:2] == [(KMS, "ListKeys", {}), (KMS, "ListKeys", {"Marker": KEY_ID})]


def test_list_keys_json(api: FakeApi) -> None:
    api.responses["ListKeys"] = {"Keys": [{"KeyId": KEY_ID, "KeyArn": ARN}], "Truncated": False}
    result = invoke("kms", "list-keys", "--output", "json")
    assert json.loads(result.stdout) == {"Keys": [{"KeyId": KEY_ID, "KeyArn": ARN}]}


def test_errors_are_one_line(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    message = f"{ARN} is disabled."
    api.responses["DescribeKey"] = ApiError("DisabledException", message, 400)
    with pytest.raises(SystemExit) as exited:
        main(["kms", "describe-key", KEY_ID])
    assert exited.value.code == ExitStatus.ERROR
    captured = capsys.readouterr()
    assert captured.err == f"hatchway: DisabledException: {message}\n"
    assert captured.out == ""


def test_bad_options_are_refused_before_any_call(api: FakeApi) -> None:
    for args in (
        ["kms", "create-key", "--tag", "novalue"],
        ["kms", "schedule-key-deletion", KEY_ID, "--pending-window-in-days", "3"],
    ):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
    assert api.calls == []
