"""The document operations through boto3's ``ssm`` client against the real app: AWS's shapes,
versions, the default version, YAML, filters and paging, and every refusal with its error type
and the field path of what is wrong."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.server.apiserver import ApiServer

GREET: dict[str, Any] = {
    "schemaVersion": "1.0",
    "description": "greet",
    "sessionType": "InteractiveCommands",
    "parameters": {"who": {"type": "String", "allowedPattern": "^[a-z]+$", "default": "world"}},
    "properties": {"linux": {"commands": "echo greet-{{ who }}", "runAsElevated": False}},
}


@pytest.fixture(scope="module")
def ssm(api: ApiServer) -> Any:
    return boto3.session.Session().client(
        "ssm",
        endpoint_url=api.endpoint,
        region_name=api.region,
        aws_access_key_id=api.admin.access_key_id,
        aws_secret_access_key=api.admin.secret_access_key,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def name() -> str:
    return f"Doc-{uuid.uuid4().hex[:10]}"


def error_of(call: Callable[[], Any]) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def create(ssm: Any, doc_name: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = ssm.create_document(
        Name=doc_name,
        DocumentType="Session",
        Content=json.dumps(content or GREET),
        DocumentFormat="JSON",
    )["DocumentDescription"]
    return answer


def test_create_describe_get(ssm: Any) -> None:
    doc = name()
    described = create(ssm, doc)
    assert described["Name"] == doc and described["Status"] == "Active"
    assert (described["DocumentVersion"], described["LatestVersion"]) == ("1", "1")
    assert described["DefaultVersion"] == "1" and described["HashType"] == "Sha256"
    assert described["DocumentType"] == "Session" and described["SchemaVersion"] == "1.0"
    assert described["Description"] == "greet"
    assert described["Parameters"] == [{"Name": "who", "Type": "String", "DefaultValue": "world"}]
    assert len(described["Hash"]) == 64
    got = ssm.get_document(Name=doc)
    assert json.loads(got["Content"]) == GREET
    assert (got["DocumentVersion"], got["DocumentFormat"], got["Status"]) == ("1", "JSON", "Active")
    assert ssm.describe_document(Name=doc)["Document"]["Owner"] == described["Owner"]


def test_versions_and_the_default_version(ssm: Any) -> None:
    doc = name()
    create(ssm, doc)
    second = dict(GREET, description="second")
    updated = ssm.update_document(Name=doc, Content=json.dumps(second), DocumentVersion="$LATEST")[
        "DocumentDescription"
    ]
    assert (updated["DocumentVersion"], updated["LatestVersion"], updated["DefaultVersion"]) == (
        "2",
        "2",
        "1",
    )
    # Sessions run the default version; $LATEST and numbers reach the others.
    assert json.loads(ssm.get_document(Name=doc)["Content"])["description"] == "greet"
    latest = ssm.get_document(Name=doc, DocumentVersion="$LATEST")
    assert json.loads(latest["Content"])["description"] == "second"
    assert ssm.get_document(Name=doc, DocumentVersion="2")["DocumentVersion"] == "2"
    # Only the latest version can be updated.
    third = json.dumps(dict(GREET, description="third"))
    status, code, message = error_of(
        lambda: ssm.update_document(Name=doc, Content=third, DocumentVersion="1")
    )
    assert (status, code) == (400, "InvalidDocumentVersion") and "latest" in message
    # The same content again is a duplicate.
    status, code, _ = error_of(lambda: ssm.update_document(Name=doc, Content=json.dumps(second)))
    assert code == "DuplicateDocumentContent"
    answer = ssm.update_document_default_version(Name=doc, DocumentVersion="2")
    assert answer["Description"] == {"Name": doc, "DefaultVersion": "2"}
    assert ssm.describe_document(Name=doc)["Document"]["DefaultVersion"] == "2"
    versions = ssm.list_document_versions(Name=doc)["DocumentVersions"]
    assert [(v["DocumentVersion"], v["IsDefaultVersion"]) for v in versions] == [
        ("1", False),
        ("2", True),
    ]
    status, code, _ = error_of(lambda: ssm.get_document(Name=doc, DocumentVersion="9"))
    assert code == "InvalidDocumentVersion"
    status, code, _ = error_of(
        lambda: ssm.update_document_default_version(Name=doc, DocumentVersion="7")
    )
    assert code == "InvalidDocumentVersion"
    # One version can go, the default cannot; then the whole document.
    status, code, _ = error_of(lambda: ssm.delete_document(Name=doc, DocumentVersion="2"))
    assert code == "InvalidDocumentVersion"
    ssm.delete_document(Name=doc, DocumentVersion="1")
    assert [
        v["DocumentVersion"] for v in ssm.list_document_versions(Name=doc)["DocumentVersions"]
    ] == ["2"]
    ssm.delete_document(Name=doc)
    status, code, message = error_of(lambda: ssm.get_document(Name=doc))
    assert (status, code) == (400, "InvalidDocument") and doc in message
    assert error_of(lambda: ssm.delete_document(Name=doc))[1] == "InvalidDocument"


def test_yaml_content_and_format_conversion(ssm: Any) -> None:
    doc = name()
    text = yaml.safe_dump(GREET, sort_keys=False)
    ssm.create_document(Name=doc, DocumentType="Session", Content=text, DocumentFormat="YAML")
    got = ssm.get_document(Name=doc)
    assert got["DocumentFormat"] == "YAML" and got["Content"] == text
    as_json = ssm.get_document(Name=doc, DocumentFormat="JSON")
    assert json.loads(as_json["Content"]) == GREET and as_json["DocumentFormat"] == "JSON"
    status, code, message = error_of(
        lambda: ssm.create_document(
            Name=name(), DocumentType="Session", Content="a: [1, 2", DocumentFormat="YAML"
        )
    )
    assert (status, code) == (400, "InvalidDocumentContent") and "line 1" in message


@pytest.mark.parametrize(
    ("change", "path", "what"),
    [
        ({"sessionType": "Nope"}, "sessionType", "is not one of Standard_Stream"),
        ({"schemaVersion": 1}, "schemaVersion", "must be the string"),
        ({"mainSteps": []}, "mainSteps", "is not a field of session documents"),
        (
            {"parameters": {"who": {"type": "Text"}}},
            "parameters.who.type",
            "'Text' is not one of String",
        ),
        (
            {"parameters": {"who": {"type": "String", "allowedPattern": "("}}},
            "parameters.who.allowedPattern",
            "is not a regular expression",
        ),
        (
            {"parameters": {"who": {"type": "String", "allowedValues": ["a"], "default": "b"}}},
            "parameters.who.default",
            "'b' is not one of allowedValues",
        ),
        (
            {"properties": {"linux": {"commands": 5}}},
            "properties.linux.commands",
            "must be a string or a list of strings",
        ),
        (
            {"properties": {"linux": {"commands": "echo {{ whom }}"}}},
            "properties.linux.commands",
            "refers to {{ whom }}",
        ),
        (
            {"sessionType": "Standard_Stream", "inputs": {"idleSessionTimeout": "90"}},
            "inputs.idleSessionTimeout",
            "from 1 to 60",
        ),
        (
            {"sessionType": "Standard_Stream", "inputs": {"runAsEnabled": "yes"}},
            "inputs.runAsEnabled",
            "must be true or false",
        ),
        (
            {"sessionType": "Standard_Stream", "inputs": {"idleTimeout": "5"}},
            "inputs.idleTimeout",
            "is not a Session Manager preference",
        ),
    ],
)
def test_invalid_documents_are_refused_with_the_field_path(
    ssm: Any, change: dict[str, Any], path: str, what: str
) -> None:
    content = {**GREET, **change}
    if content["sessionType"] == "Standard_Stream":
        content.pop("parameters")
        content.pop("properties")
    status, code, message = error_of(lambda: create(ssm, name(), content))
    assert status == 400
    assert code == "InvalidDocumentContent", message
    assert f"{path}: " in message and what in message, message


def test_schema_version_and_json_errors(ssm: Any) -> None:
    status, code, message = error_of(lambda: create(ssm, name(), {**GREET, "schemaVersion": "2.2"}))
    assert (status, code) == (400, "InvalidDocumentSchemaVersion") and "1.0" in message
    status, code, message = error_of(
        lambda: ssm.create_document(Name=name(), DocumentType="Session", Content="{")
    )
    assert code == "InvalidDocumentContent" and "not valid JSON at line 1" in message
    status, code, message = error_of(
        lambda: ssm.create_document(Name=name(), DocumentType="Session", Content="[1]")
    )
    assert code == "InvalidDocumentContent" and "object" in message
    big = json.dumps({**GREET, "description": "x" * 70_000})
    assert (
        error_of(lambda: ssm.create_document(Name=name(), DocumentType="Session", Content=big))[1]
        == "MaxDocumentSizeExceeded"
    )


def test_names_types_and_owners(ssm: Any) -> None:
    doc = name()
    create(ssm, doc)
    assert error_of(lambda: create(ssm, doc))[1] == "DocumentAlreadyExists"
    for reserved in ("AWS-Mine", "amazon-thing", "awsFoo"):
        status, code, message = error_of(lambda n=reserved: create(ssm, n))  # type: ignore[misc]
        assert (status, code) == (400, "ValidationException") and "reserved" in message
    status, code, message = error_of(
        lambda: ssm.create_document(Name=name(), Content=json.dumps(GREET), DocumentType="Command")
    )
    assert code == "ValidationException" and "--document-type Session" in message
    # Without a DocumentType, a session document is what this server keeps.
    ssm.create_document(Name=name(), Content=json.dumps(GREET))
    # The model's name pattern.
    assert error_of(lambda: create(ssm, "a b"))[1] == "ValidationException"


def test_builtin_documents_are_read_only_except_the_preferences(ssm: Any) -> None:
    content = ssm.get_document(Name="AWS-StartSSHSession")["Content"]
    changed = json.dumps({**json.loads(content), "description": "mine"})
    for call in (
        lambda: ssm.update_document(Name="AWS-StartSSHSession", Content=changed),
        lambda: ssm.delete_document(Name="AWS-StartSSHSession"),
        lambda: ssm.update_document_default_version(
            Name="AWS-StartSSHSession", DocumentVersion="1"
        ),
    ):
        status, code, message = error_of(call)
        assert (status, code) == (400, "InvalidDocumentOperation") and "read-only" in message
    prefs = json.loads(ssm.get_document(Name="SSM-SessionManagerRunShell")["Content"])
    prefs["inputs"]["idleSessionTimeout"] = "15"
    answer = ssm.update_document(Name="SSM-SessionManagerRunShell", Content=json.dumps(prefs))
    assert int(answer["DocumentDescription"]["DocumentVersion"]) >= 2
    assert error_of(lambda: ssm.delete_document(Name="SSM-SessionManagerRunShell"))[1] == (
        "InvalidDocumentOperation"
    )
    port = json.dumps({**prefs, "sessionType": "Port", "inputs": {}})
    status, code, message = error_of(
        lambda: ssm.update_document(Name="SSM-SessionManagerRunShell", Content=port)
    )
    assert code == "InvalidDocumentContent" and "Standard_Stream" in message


def test_list_filters_and_pages(ssm: Any) -> None:
    prefix = f"Page-{uuid.uuid4().hex[:6]}"
    mine = [f"{prefix}-{i}" for i in range(5)]
    for doc in mine:
        create(ssm, doc)
    pages = ssm.get_paginator("list_documents").paginate(
        Filters=[{"Key": "Name", "Values": [prefix]}], PaginationConfig={"PageSize": 2}
    )
    seen = [d["Name"] for page in pages for d in page["DocumentIdentifiers"]]
    assert seen == mine
    everything = ssm.list_documents(
        Filters=[{"Key": "DocumentType", "Values": ["Session"]}], MaxResults=50
    )["DocumentIdentifiers"]
    names = {d["Name"] for d in everything}
    assert "SSM-SessionManagerRunShell" in names
    amazon = ssm.list_documents(Filters=[{"Key": "Owner", "Values": ["Amazon"]}])
    assert all(d["Owner"] == "Amazon" for d in amazon["DocumentIdentifiers"])
    assert "AWS-StartSSHSession" in {d["Name"] for d in amazon["DocumentIdentifiers"]}
    own = ssm.list_documents(
        Filters=[{"Key": "Owner", "Values": ["Self"]}, {"Key": "Name", "Values": [prefix]}]
    )["DocumentIdentifiers"]
    assert [d["Name"] for d in own] == mine
    legacy = ssm.list_documents(DocumentFilterList=[{"key": "Name", "value": prefix}])
    assert len(legacy["DocumentIdentifiers"]) == 5
    identifier = own[0]
    assert identifier["DocumentType"] == "Session" and identifier["DocumentVersion"] == "1"
    assert identifier["SchemaVersion"] == "1.0" and identifier["DocumentFormat"] == "JSON"
    _status, code, _ = error_of(
        lambda: ssm.list_documents(Filters=[{"Key": "PlatformTypes", "Values": ["Linux"]}])
    )
    assert code == "InvalidFilterKey"
    _, code, _ = error_of(lambda: ssm.list_document_versions(Name="NoSuchDocument"))
    assert code == "InvalidDocument"
