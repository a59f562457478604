"""Every API operation is authorized: it has an action and resources, and a user without
policies is refused every one of them; AWS's published example policies are accepted verbatim."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.loaders import Loader
from botocore.model import ServiceModel, Shape

from hatchway.server.iam import IamService
from hatchway.server.logs import LOGS
from hatchway.server.operations import HATCHWAY, KMS, SSM
from hatchway.server.validation import HATCHWAY_MODEL
from tests.policy import test_aws_examples as examples
from tests.server.apiserver import ApiServer, running_api

NODE = "mi-0123456789abcdef0"
ACCOUNT_ARN = "arn:aws:iam::123456789012"
# A valid value for each required member of the served operations, by member name.
VALUES: dict[str, Any] = {
    "UserName": "someone",
    "GroupName": "some-group",
    "PolicyName": "SomePolicy",
    "PolicyArn": f"{ACCOUNT_ARN}:policy/SomePolicy",
    "PolicyDocument": '{"Version": "2012-10-17", "Statement": []}',
    "PolicySourceArn": f"{ACCOUNT_ARN}:user/someone",
    "ActionNames": ["ssm:StartSession"],
    "AccessKeyId": "HWAKAAAAAAAAAAAAAAAA",
    "Status": "Inactive",
    "Tags": [{"Key": "k", "Value": "v"}],
    "TagKeys": ["k"],
    "Password": "correct horse battery staple",
    "VersionId": "v1",
    "Target": NODE,
    "InstanceId": NODE,
    "ResourceId": NODE,
    "ResourceType": "ManagedInstance",
    "SessionId": "someone-0123456789abcdef0",
    "State": "Active",
    "IamRole": "SSMServiceRole",
    "ActivationId": str(uuid.uuid4()),
    "Url": "https://hooks.example/hatchway",
    "Events": ["session.started"],
    "Secret": "s3cret-value",
    "SubscriptionId": "sub-0123456789abcdef",
    "KeyId": "alias/some-key",
    "TargetKeyId": str(uuid.uuid4()),
    "AliasName": "alias/some-alias",
    "Plaintext": "c2VjcmV0",
    "logGroupName": "some-group",
    "logStreamName": "someone-0123456789abcdef0",
    "retentionInDays": 7,
    "Name": "SomeDocument",
    "Content": '{"schemaVersion": "1.0", "sessionType": "Standard_Stream"}',
    "DocumentVersion": "1",
}
PREFIXES = {SSM: "ssm", HATCHWAY: "hatchway", KMS: "kms", LOGS: "logs"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(tmp_path_factory.mktemp("ops")) as server:
        yield server


def _model(service: str) -> ServiceModel:
    return ServiceModel(Loader().load_service_model(service, "service-2"))


# Members the model does not require but the operation needs.
EXTRA: dict[str, dict[str, Any]] = {
    f"{KMS}.Decrypt": {"CiphertextBlob": "bm90IGEgYmxvYg=="},
    f"{KMS}.GenerateDataKey": {"KeySpec": "AES_256"},
    f"{KMS}.GenerateDataKeyWithoutPlaintext": {"KeySpec": "AES_256"},
}


def minimal_body(name: str, shape: Shape | None) -> dict[str, Any]:
    members = getattr(shape, "required_members", []) if shape is not None else []
    if name.startswith(f"{LOGS}.") and name != f"{LOGS}.DescribeLogGroups":
        # Logs' model makes the group optional (logGroupIdentifier may name it instead).
        members = sorted({*members, "logGroupName"})
    missing = [m for m in members if m not in VALUES]
    assert not missing, f"{name}: no test value for required member(s) {missing}"
    return {**{m: VALUES[m] for m in members}, **EXTRA.get(name, {})}


def _input_shape(target: str) -> Shape | None:
    service, _, name = target.partition(".")
    model = _model({SSM: "ssm", KMS: "kms", LOGS: "logs"}.get(service, "iam"))
    if name not in model.operation_names:  # a Hatchway-only operation (SetPassword)
        model = ServiceModel(dict(HATCHWAY_MODEL))
    return model.operation_model(name).input_shape


def test_every_operation_has_its_action_and_resources(api: ApiServer) -> None:
    operations = api.server.api.operations
    iam = IamService(api.server.store, api.server.box, "123456789012", lambda: 0.0)
    expected = {f"{HATCHWAY}.{name}" for name in iam.operations()}
    expected.add(f"{HATCHWAY}.SimulatePrincipalPolicy")
    assert expected <= set(operations)
    for target, op in operations.items():
        prefix = PREFIXES[op.service]
        assert op.action == f"{prefix}:{op.name}", target
        assert op.target == target
        assert callable(op.resources), target


def test_a_user_without_policies_is_refused_every_operation(api: ApiServer) -> None:
    created = api.post("CreateUser", {"UserName": "nobody"}, service=HATCHWAY).body
    assert created["User"]["UserName"] == "nobody"
    key = api.post("CreateAccessKey", {"UserName": "nobody"}, service=HATCHWAY).body["AccessKey"]
    refused = []
    for target, op in api.server.api.operations.items():
        body = minimal_body(target, _input_shape(target))
        answer = api.post(
            op.name,
            body,
            service=op.service,
            key_id=key["AccessKeyId"],
            secret=key["SecretAccessKey"],
        )
        assert answer.type == "AccessDeniedException", (target, answer.status, answer.body)
        assert op.action in answer.message, (target, answer.message)
        refused.append(target)
    assert len(refused) == len(api.server.api.operations)


def test_the_same_bodies_are_valid_for_the_administrator(api: ApiServer) -> None:
    """The bodies above pass validation (so the refusals were authorization's, not the
    validator's): the administrator gets no ValidationException with them."""
    for target, op in api.server.api.operations.items():
        if op.changes_access:
            continue  # reads only: the administrator must not change the fixture's state
        body = minimal_body(target, _input_shape(target))
        answer = api.post(op.name, body, service=op.service)
        assert answer.type not in ("ValidationException", "AccessDeniedException"), (
            target,
            answer.body,
        )


@pytest.mark.parametrize(
    "document",
    [
        examples.EXAMPLE_1,
        examples.EXAMPLE_2,
        examples.EXAMPLE_2_TWO_TAGS,
        examples.EXAMPLE_3_USERNAME,
        examples.EXAMPLE_3_USERID_TAG,
        examples.EXAMPLE_4,
        examples.QUICKSTART_EC2,
    ],
)
def test_aws_published_policies_are_accepted_verbatim(api: ApiServer, document: str) -> None:
    name = f"Aws{uuid.uuid4().hex[:8]}"
    answer = api.post(
        "CreatePolicy", {"PolicyName": name, "PolicyDocument": document}, service=HATCHWAY
    )
    assert answer.status == 200, answer.body
    assert answer.body["Policy"]["Arn"].endswith(f":policy/{name}")


def test_an_invalid_policy_is_refused_with_its_path(api: ApiServer) -> None:
    answer = api.post(
        "CreatePolicy",
        {"PolicyName": "Broken", "PolicyDocument": examples.QUICKSTART_CLI},
        service=HATCHWAY,
    )
    assert answer.type == "MalformedPolicyDocumentException"
    assert answer.message.startswith("Statement[3].Resource")


def test_simulate_takes_a_bare_node_id_and_explains(api: ApiServer, tmp_path: Path) -> None:
    api.post("CreateUser", {"UserName": "sim-user"}, service=HATCHWAY)
    api.post(
        "PutUserPolicy",
        {"UserName": "sim-user", "PolicyName": "Anywhere", "PolicyDocument": examples.EXAMPLE_4},
        service=HATCHWAY,
    )
    user_arn = api.post("GetUser", {"UserName": "sim-user"}, service=HATCHWAY).body["User"]["Arn"]
    answer = api.post(
        "SimulatePrincipalPolicy",
        {
            "PolicySourceArn": user_arn,
            "ActionNames": ["ssm:StartSession", "hatchway:CreateUser"],
            "ResourceArns": [NODE],
        },
        service=HATCHWAY,
    )
    assert answer.status == 200, answer.body
    start, create = answer.body["EvaluationResults"]
    assert start["EvalDecision"] == "allowed"
    assert start["EvalResourceName"].endswith(f":managed-instance/{NODE}")
    assert start["MatchedStatements"][0]["SourcePolicyId"] == "user/sim-user/Anywhere"
    assert create["EvalDecision"] == "implicitDeny"
    assert "implicit deny" in create["Explanation"]
