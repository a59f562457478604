"""``hatchway iam …`` and ``hatchway nodes tag/untag/tags``: the request each command sends
(checked against the API contract of issue 6) and how responses print."""

from __future__ import annotations

import json
import stat
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from hatchway.cli import main
from hatchway.client.exitstatus import ExitStatus
from hatchway.transport.apiclient import ApiError
from tests.client.fakeapi import FakeApi, install, invoke

ARN = "arn:aws:iam::123456789012:policy/Dev"
DOC = '{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}'
USER = {
    "Path": "/",
    "UserName": "dev-user",
    "UserId": "AIDA0123456789ABCDEF",
    "Arn": "arn:aws:iam::123456789012:user/dev-user",
    "CreateDate": 1795000000.5,
}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return install(monkeypatch)


def tags(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in pairs]


HW = "Hatchway"
SSM = "AmazonSSM"

REQUESTS: list[tuple[list[str], str, str, dict[str, Any]]] = [
    (
        ["iam", "create-user", "--user-name", "dev-user", "--tags",
         "Key=team,Value=a,b", "env=dev"],
        HW, "CreateUser",
        {"UserName": "dev-user", "Tags": tags(("team", "a,b"), ("env", "dev"))},
    ),
    (["iam", "create-user", "--user-name", "u"], HW, "CreateUser", {"UserName": "u"}),
    (["iam", "delete-user", "--user-name", "u"], HW, "DeleteUser", {"UserName": "u"}),
    (["iam", "get-user"], HW, "GetUser", {}),
    (["iam", "get-user", "--user-name", "u"], HW, "GetUser", {"UserName": "u"}),
    (
        ["iam", "tag-user", "--user-name", "u", "--tags", "Key=a,Value=1",
         "--tags", "Value=2,Key=b"],
        HW, "TagUser", {"UserName": "u", "Tags": tags(("a", "1"), ("b", "2"))},
    ),
    (
        ["iam", "tag-user", "--user-name", "u", "--tags", '[{"Key": "a", "Value": "1"}]'],
        HW, "TagUser", {"UserName": "u", "Tags": tags(("a", "1"))},
    ),
    (
        ["iam", "untag-user", "--tag-keys", "a", "b", "--user-name", "u"],
        HW, "UntagUser", {"UserName": "u", "TagKeys": ["a", "b"]},
    ),
    (
        ["iam", "set-password", "--user-name", "u", "--password", "correct horse battery"],
        HW, "SetPassword", {"UserName": "u", "Password": "correct horse battery"},
    ),
    (["iam", "create-group", "--group-name", "devs"], HW, "CreateGroup", {"GroupName": "devs"}),
    (["iam", "delete-group", "--group-name", "devs"], HW, "DeleteGroup", {"GroupName": "devs"}),
    (["iam", "get-group", "--group-name", "devs"], HW, "GetGroup", {"GroupName": "devs"}),
    (["iam", "list-groups"], HW, "ListGroups", {}),
    (
        ["iam", "add-user-to-group", "--group-name", "devs", "--user-name", "u"],
        HW, "AddUserToGroup", {"GroupName": "devs", "UserName": "u"},
    ),
    (
        ["iam", "remove-user-from-group", "--group-name", "devs", "--user-name", "u"],
        HW, "RemoveUserFromGroup", {"GroupName": "devs", "UserName": "u"},
    ),
    (
        ["iam", "list-groups-for-user", "--user-name", "u"],
        HW, "ListGroupsForUser", {"UserName": "u"},
    ),
    (["iam", "create-access-key"], HW, "CreateAccessKey", {}),
    (["iam", "create-access-key", "--user-name", "u"], HW, "CreateAccessKey", {"UserName": "u"}),
    (
        ["iam", "update-access-key", "--access-key-id", "HWAK1", "--status", "Inactive"],
        HW, "UpdateAccessKey", {"AccessKeyId": "HWAK1", "Status": "Inactive"},
    ),
    (
        ["iam", "update-access-key", "--access-key-id", "K", "--status", "Active",
         "--user-name", "u"],
        HW, "UpdateAccessKey", {"AccessKeyId": "K", "Status": "Active", "UserName": "u"},
    ),
    (
        ["iam", "delete-access-key", "--access-key-id", "K", "--user-name", "u"],
        HW, "DeleteAccessKey", {"AccessKeyId": "K", "UserName": "u"},
    ),
    (["iam", "list-access-keys"], HW, "ListAccessKeys", {}),
    (["iam", "list-access-keys", "--user-name", "u"], HW, "ListAccessKeys", {"UserName": "u"}),
    (
        ["iam", "create-policy", "--policy-name", "Dev", "--policy-document", DOC,
         "--description", "for devs"],
        HW, "CreatePolicy", {"PolicyName": "Dev", "PolicyDocument": DOC, "Description": "for devs"},
    ),
    (["iam", "delete-policy", "--policy-arn", ARN], HW, "DeletePolicy", {"PolicyArn": ARN}),
    (["iam", "get-policy", "--policy-arn", ARN], HW, "GetPolicy", {"PolicyArn": ARN}),
    (
        ["iam", "get-policy-version", "--policy-arn", ARN, "--version-id", "v2"],
        HW, "GetPolicyVersion", {"PolicyArn": ARN, "VersionId": "v2"},
    ),
    (["iam", "list-policies"], HW, "ListPolicies", {}),
    (
        ["iam", "list-policies", "--scope", "Local", "--only-attached"],
        HW, "ListPolicies", {"Scope": "Local", "OnlyAttached": True},
    ),
    (["iam", "list-policies", "--no-only-attached"], HW, "ListPolicies", {"OnlyAttached": False}),
    (
        ["iam", "create-policy-version", "--policy-arn", ARN, "--policy-document", DOC,
         "--set-as-default"],
        HW, "CreatePolicyVersion", {"PolicyArn": ARN, "PolicyDocument": DOC, "SetAsDefault": True},
    ),
    (
        ["iam", "attach-user-policy", "--user-name", "u", "--policy-arn", ARN],
        HW, "AttachUserPolicy", {"UserName": "u", "PolicyArn": ARN},
    ),
    (
        ["iam", "detach-user-policy", "--user-name", "u", "--policy-arn", ARN],
        HW, "DetachUserPolicy", {"UserName": "u", "PolicyArn": ARN},
    ),
    (
        ["iam", "attach-group-policy", "--group-name", "g", "--policy-arn", ARN],
        HW, "AttachGroupPolicy", {"GroupName": "g", "PolicyArn": ARN},
    ),
    (
        ["iam", "detach-group-policy", "--group-name", "g", "--policy-arn", ARN],
        HW, "DetachGroupPolicy", {"GroupName": "g", "PolicyArn": ARN},
    ),
    (
        ["iam", "put-user-policy", "--user-name", "u", "--policy-name", "P",
         "--policy-document", DOC],
        HW, "PutUserPolicy", {"UserName": "u", "PolicyName": "P", "PolicyDocument": DOC},
    ),
    (
        ["iam", "put-group-policy", "--group-name", "g", "--policy-name", "P",
         "--policy-document", DOC],
        HW, "PutGroupPolicy", {"GroupName": "g", "PolicyName": "P", "PolicyDocument": DOC},
    ),
    (
        ["iam", "get-user-policy", "--user-name", "u", "--policy-name", "P"],
        HW, "GetUserPolicy", {"UserName": "u", "PolicyName": "P"},
    ),
    (
        ["iam", "delete-user-policy", "--user-name", "u", "--policy-name", "P"],
        HW, "DeleteUserPolicy", {"UserName": "u", "PolicyName": "P"},
    ),
    (["iam", "list-user-policies", "--user-name", "u"], HW, "ListUserPolicies", {"UserName": "u"}),
    (
        ["iam", "list-attached-user-policies", "--user-name", "u"],
        HW, "ListAttachedUserPolicies", {"UserName": "u"},
    ),
    (
        ["iam", "list-attached-group-policies", "--group-name", "g"],
        HW, "ListAttachedGroupPolicies", {"GroupName": "g"},
    ),
    (
        ["iam", "simulate", "--user", "arn:aws:iam::123456789012:user/dev-user",
         "--action", "ssm:StartSession",
         "ssm:TerminateSession", "--resource", "mi-0123456789abcdef0",
         "--context", "aws:SourceIp=10.0.0.1", "--context", "aws:x=1", "aws:x=2"],
        HW, "SimulatePrincipalPolicy",
        {
            "PolicySourceArn": "arn:aws:iam::123456789012:user/dev-user",
            "ActionNames": ["ssm:StartSession", "ssm:TerminateSession"],
            "ResourceArns": ["mi-0123456789abcdef0"],
            "ContextEntries": [
                {"ContextKeyName": "aws:SourceIp", "ContextKeyValues": ["10.0.0.1"],
                 "ContextKeyType": "string"},
                {"ContextKeyName": "aws:x", "ContextKeyValues": ["1", "2"],
                 "ContextKeyType": "stringList"},
            ],
        },
    ),
    (
        ["iam", "simulate", "--user", "arn:aws:iam::123456789012:user/u", "--action",
         "ssm:DescribeSessions"],
        HW, "SimulatePrincipalPolicy",
        {"PolicySourceArn": "arn:aws:iam::123456789012:user/u",
         "ActionNames": ["ssm:DescribeSessions"]},
    ),
    (
        ["nodes", "tag", "mi-1", "--tags", "Key=Env,Value=dev", "Team=x"],
        SSM, "AddTagsToResource",
        {"ResourceType": "ManagedInstance", "ResourceId": "mi-1",
         "Tags": tags(("Env", "dev"), ("Team", "x"))},
    ),
    (
        ["nodes", "untag", "mi-1", "--tag-keys", "Env", "Team"],
        SSM, "RemoveTagsFromResource",
        {"ResourceType": "ManagedInstance", "ResourceId": "mi-1", "TagKeys": ["Env", "Team"]},
    ),
    (
        ["nodes", "tags", "mi-1"],
        SSM, "ListTagsForResource", {"ResourceType": "ManagedInstance", "ResourceId": "mi-1"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("args", "service", "operation", "body"), REQUESTS)
def test_each_command_sends_the_contracts_request(
    api: FakeApi, args: list[str], service: str, operation: str, body: dict[str, Any]
) -> None:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert api.calls == [(service, operation, body)]


def test_every_iam_command_has_output_json_and_table() -> None:
    from hatchway.client.iam_cli import iam

    for name, command in iam.commands.items():
        output = [p for p in command.params if p.name == "output"]
        assert output, name
        assert list(getattr(output[0].type, "choices", ())) == ["table", "json"], name


def test_listings_fetch_every_page(api: FakeApi) -> None:
    second = {**USER, "UserName": "other-user"}
    pages = [
        {"Users": [USER], "IsTruncated": True, "Marker": "m1"},
        {"Users": [second], "IsTruncated": False},
    ]
    api.responses["ListUsers"] = list(pages)
    result = invoke("iam", "list-users", "--output", "json")
    assert result.exit_code == 0, result.output
    assert [c[2] for c in api.calls] == [{}, {"Marker": "m1"}]
    printed = json.loads(result.stdout)
    assert printed == {
        "Users": [
            {**USER, "CreateDate": "2026-11-18T11:06:40.500000+00:00"},
            {**second, "CreateDate": "2026-11-18T11:06:40.500000+00:00"},
        ]
    }

    api.responses["ListUsers"] = list(pages)
    table = invoke("iam", "list-users").stdout.splitlines()
    assert table[0].split()[:3] == ["USER", "NAME", "USER"]
    assert [line.split()[0] for line in table[1:]] == ["dev-user", "other-user"]
    assert "2026-11-18 11:06:40" in table[1]


def test_a_server_repeating_its_marker_is_an_error_not_a_loop(api: FakeApi) -> None:
    api.responses["ListGroups"] = {"Groups": [], "IsTruncated": True, "Marker": "same"}
    result = invoke("iam", "list-groups")
    assert result.exit_code != 0
    assert "repeated the marker" in str(result.exception)
    assert len(api.calls) == 2


def test_names_listing_prints_one_name_per_row(api: FakeApi) -> None:
    api.responses["ListUserPolicies"] = [
        {"PolicyNames": ["A"], "IsTruncated": True, "Marker": "x"},
        {"PolicyNames": ["B"], "IsTruncated": False},
    ]
    result = invoke("iam", "list-user-policies", "--user-name", "u")
    assert result.stdout.split() == ["POLICY", "NAME", "A", "B"]


def test_an_entity_prints_as_a_one_row_table(api: FakeApi) -> None:
    api.responses["GetUser"] = {"User": {**USER, "Tags": tags(("team", "a"))}}
    lines = invoke("iam", "get-user").stdout.splitlines()
    assert len(lines) == 2
    assert lines[1].split() == [
        "dev-user", "AIDA0123456789ABCDEF", USER["Arn"], "2026-11-18", "11:06:40", "-", "team=a",
    ]  # fmt: skip


def test_empty_answers_print_nothing_to_stdout_and_say_what_was_done(api: FakeApi) -> None:
    for output in ("table", "json"):
        result = invoke("iam", "attach-user-policy", "--user-name", "u", "--policy-arn", ARN,
                        "--output", output)  # fmt: skip
        assert result.exit_code == 0
        assert result.stdout == ""
        assert result.stderr == f"attached {ARN} to user u\n"


def test_create_access_key_shows_the_secret_once_with_a_warning(api: FakeApi) -> None:
    key = {
        "UserName": "u",
        "AccessKeyId": "HWAK0123456789ABCDEF",
        "Status": "Active",
        "SecretAccessKey": "s3cr3t/KEY+value",
        "CreateDate": 1795000000,
    }
    api.responses["CreateAccessKey"] = {"AccessKey": key}
    result = invoke("iam", "create-access-key", "--user-name", "u")
    assert "s3cr3t/KEY+value" in result.stdout
    assert result.stdout.count("s3cr3t/KEY+value") == 1
    assert "shown only now" in result.stderr

    as_json = invoke("iam", "create-access-key", "--output", "json")
    assert json.loads(as_json.stdout)["AccessKey"]["SecretAccessKey"] == "s3cr3t/KEY+value"
    assert as_json.stderr == ""


def test_simulate_prints_decision_and_explanation_and_exits_0(api: FakeApi) -> None:
    resource = "arn:aws:ssm:local:123456789012:managed-instance/mi-0123456789abcdef0"
    results = [
        {
            "EvalActionName": "ssm:StartSession",
            "EvalResourceName": resource,
            "EvalDecision": "implicitDeny",
            "MatchedStatements": [],
            "Explanation": "no policy allows it (implicit deny)",
        },
        {
            "EvalActionName": "ssm:TerminateSession",
            "EvalResourceName": resource,
            "EvalDecision": "allowed",
            "MatchedStatements": [{"SourcePolicyId": ARN, "SourcePolicyType": "IAM Policy"}],
            "Explanation": f'allowed by statement "Mine" of policy {ARN}',
        },
    ]
    api.responses["SimulatePrincipalPolicy"] = {"EvaluationResults": results, "IsTruncated": False}
    api.responses["GetUser"] = {"User": {"UserName": "u", "Arn": "arn:aws:iam::1:user/u"}}
    args = ["iam", "simulate", "--user", "u", "--action", "ssm:StartSession",
            "ssm:TerminateSession", "--resource", "mi-0123456789abcdef0"]  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["DECISION", "ACTION", "RESOURCE", "EXPLANATION"]
    assert lines[1].split(maxsplit=3) == [
        "implicitDeny", "ssm:StartSession", resource, "no policy allows it (implicit deny)",
    ]  # fmt: skip
    assert lines[2].split(maxsplit=3)[0] == "allowed"
    assert lines[2].endswith(f'allowed by statement "Mine" of policy {ARN}')

    as_json = invoke(*args, "--output", "json")
    assert json.loads(as_json.stdout) == {"EvaluationResults": results}
    # A user name is turned into the user's ARN (GetUser) first: IAM's operation takes an ARN.
    assert api.calls[0] == ("Hatchway", "GetUser", {"UserName": "u"})
    assert api.calls[1][2]["PolicySourceArn"] == "arn:aws:iam::1:user/u"


@pytest.mark.parametrize("encode", [False, True])
def test_policy_documents_print_as_json_objects(api: FakeApi, encode: bool) -> None:
    wire = urllib.parse.quote(DOC) if encode else DOC
    api.responses["GetPolicyVersion"] = {
        "PolicyVersion": {
            "Document": wire,
            "VersionId": "v1",
            "IsDefaultVersion": True,
            "CreateDate": 0,
        }
    }
    args = ["iam", "get-policy-version", "--policy-arn", ARN, "--version-id", "v1"]
    printed = json.loads(invoke(*args, "--output", "json").stdout)
    assert printed["PolicyVersion"]["Document"] == json.loads(DOC)
    assert printed["PolicyVersion"]["CreateDate"] == "1970-01-01T00:00:00+00:00"

    table = invoke(*args).stdout
    assert table.splitlines()[1].split()[:2] == ["v1", "True"]
    assert json.loads(table.split("\n\n", 1)[1]) == json.loads(DOC)


def test_inline_policy_getter_shows_the_document(api: FakeApi) -> None:
    api.responses["GetGroupPolicy"] = {"GroupName": "g", "PolicyName": "P", "PolicyDocument": DOC}
    result = invoke("iam", "get-group-policy", "--group-name", "g", "--policy-name", "P")
    assert api.calls == [("Hatchway", "GetGroupPolicy", {"GroupName": "g", "PolicyName": "P"})]
    head, document = result.stdout.split("\n\n", 1)
    assert head.splitlines()[1].split() == ["g", "P"]
    assert json.loads(document) == json.loads(DOC)


def test_get_group_prints_the_group_and_all_its_members(api: FakeApi) -> None:
    group = {"Path": "/", "GroupName": "devs", "GroupId": "AGPA1", "Arn": "arn:g", "CreateDate": 0}
    api.responses["GetGroup"] = [
        {"Group": group, "Users": [USER], "IsTruncated": True, "Marker": "m"},
        {"Group": group, "Users": [{**USER, "UserName": "b"}], "IsTruncated": False},
    ]
    result = invoke("iam", "get-group", "--group-name", "devs")
    groups, members = result.stdout.split("\n\n")
    assert groups.splitlines()[1].split()[0] == "devs"
    assert [line.split()[0] for line in members.splitlines()[1:]] == ["dev-user", "b"]
    assert api.calls[1][2] == {"GroupName": "devs", "Marker": "m"}


def test_nodes_tags_lists_the_tag_list(api: FakeApi) -> None:
    api.responses["ListTagsForResource"] = {"TagList": tags(("Env", "dev"))}
    assert invoke("nodes", "tags", "mi-1").stdout.split() == ["KEY", "VALUE", "Env", "dev"]
    as_json = invoke("nodes", "tags", "mi-1", "--output", "json").stdout
    assert json.loads(as_json) == {"TagList": tags(("Env", "dev"))}


def test_node_id_after_the_tags_is_a_usage_error(api: FakeApi) -> None:
    result = invoke("nodes", "tag", "--tags", "Env=dev", "mi-1")
    assert result.exit_code == ExitStatus.USAGE
    assert api.calls == []


# ---- policy documents from files ------------------------------------------------------------


def test_policy_document_from_a_relative_file(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "p.json").write_text(DOC)
    monkeypatch.chdir(tmp_path)
    result = invoke("iam", "create-policy", "--policy-name", "Dev",
                    "--policy-document", "file://p.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert api.calls[0][2]["PolicyDocument"] == DOC


def test_policy_document_from_home_and_as_bytes(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "p.json").write_bytes(b"\xef\xbb\xbf" + DOC.encode())  # with a BOM
    monkeypatch.setenv("HOME", str(tmp_path))
    for url in ("file://~/p.json", "fileb://~/p.json"):
        result = invoke("iam", "put-user-policy", "--user-name", "u", "--policy-name", "P",
                        "--policy-document", url)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert api.calls[-1][2]["PolicyDocument"] == DOC


def test_a_missing_policy_file_is_a_usage_error(api: FakeApi, tmp_path: Path) -> None:
    result = invoke("iam", "create-policy", "--policy-name", "Dev",
                    "--policy-document", f"file://{tmp_path}/nope.json")  # fmt: skip
    assert result.exit_code == ExitStatus.USAGE
    assert "--policy-document" in result.stderr and "nope.json" in result.stderr
    assert api.calls == []


# ---- passwords ------------------------------------------------------------------------------


def test_set_password_reads_one_line_from_a_pipe(api: FakeApi) -> None:
    result = invoke("iam", "set-password", "--user-name", "u", input="pa ss word 12\nmore\n")
    assert result.exit_code == 0, result.output
    assert api.calls[0][2] == {"UserName": "u", "Password": "pa ss word 12"}
    assert "pa ss word" not in result.output


def test_set_password_prompts_twice_on_a_terminal_without_echo(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hatchway.client.secretprompt as secretprompt

    monkeypatch.setattr(secretprompt, "stdin_is_tty", lambda: True)
    result = invoke(
        "iam",
        "set-password",
        "--user-name",
        "u",
        input="first-try-123\nother\nright-one-123\nright-one-123\n",
    )
    assert result.exit_code == 0, result.output
    assert api.calls[0][2]["Password"] == "right-one-123"
    assert "right-one" not in result.output and "first-try" not in result.output
    assert "do not match" in result.stderr


def test_set_password_refuses_an_empty_one(api: FakeApi) -> None:
    result = invoke("iam", "set-password", "--user-name", "u", input="\n")
    assert result.exit_code != 0
    assert api.calls == []


# ---- errors at the edge ---------------------------------------------------------------------


def test_access_denied_is_one_line_and_a_failure(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    message = (
        "User: arn:aws:iam::123456789012:user/other-user is not authorized to perform: "
        "hatchway:CreateUser on resource: arn:aws:iam::123456789012:user/x"
    )
    api.responses["CreateUser"] = ApiError("AccessDeniedException", message, 400)
    with pytest.raises(SystemExit) as exited:
        main(["iam", "create-user", "--user-name", "x"])
    assert exited.value.code == ExitStatus.ERROR
    captured = capsys.readouterr()
    assert captured.err == f"hatchway: AccessDeniedException: {message}\n"
    assert captured.out == ""


def test_config_file_written_by_configure_is_private(tmp_path: Path) -> None:
    # (covered in detail by test_configure.py; here: the mode survives a rewrite of a 0644 file)
    from hatchway.client.config import save_profile

    path = tmp_path / "c.toml"
    path.write_text('[profiles.x]\nendpoint = "http://a"\n')
    path.chmod(0o644)
    save_profile(path, "y", {"endpoint": "http://b"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sessions_get_shows_one_session_and_its_connections(api: FakeApi) -> None:
    session = {
        "SessionId": "admin-0123456789abcdef0", "Target": "mi-0123456789abcdef0",
        "Status": "Terminated", "StartDate": 1_764_500_000.0, "EndDate": 1_764_500_060.0,
        "DocumentName": "AWS-StartPortForwardingSession", "Owner": "arn:aws:iam::1:user/admin",
        "Connections": [
            {"Destination": "localhost:5432", "OpenedDate": 1_764_500_001.0,
             "ClosedDate": 1_764_500_002.0, "BytesIn": 10, "BytesOut": 20},
            {"Destination": "localhost:5433", "OpenedDate": 1_764_500_003.0,
             "ClosedDate": 1_764_500_003.0, "BytesIn": 0, "BytesOut": 0,
             "Error": "connection refused"},
        ],
    }  # fmt: skip
    api.responses["DescribeSessions"] = [{"Sessions": []}, {"Sessions": [session]}]
    result = invoke("sessions", "get", "admin-0123456789abcdef0")
    assert result.exit_code == 0, result.output
    assert [c[2]["State"] for c in api.calls] == ["Active", "History"]
    assert api.calls[0][2]["Filters"] == [{"key": "SessionId", "value": "admin-0123456789abcdef0"}]
    assert "2025-11-30 10:53:20" in result.stdout  # StartDate as a time
    assert "localhost:5433" in result.stdout and "connection refused" in result.stdout
    api.responses["DescribeSessions"] = {"Sessions": []}
    missing = invoke("sessions", "get", "admin-nope")
    assert missing.exit_code != 0
