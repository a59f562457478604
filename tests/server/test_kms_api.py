"""The key service through boto3's ``kms`` client against the server's real app (in process):
AWS's shapes, key states, aliases, errors, and ``kms:*`` actions through the authorizer."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hatchway.auth.kmsblob import KEY_MATERIAL_BYTES
from hatchway.server.operations import HATCHWAY, KMS
from tests.server.apiserver import ApiServer, running_api

CTX = {"aws:ssm:SessionId": "alice-0123456789abcdef0"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(tmp_path_factory.mktemp("kms")) as server:
        yield server


@pytest.fixture(scope="module")
def kms(api: ApiServer) -> Any:
    return api.client("kms")


def error(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    err = caught.value.response["Error"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return err["Code"], err["Message"]


def new_key(kms: Any, **kwargs: Any) -> dict[str, Any]:
    meta: dict[str, Any] = kms.create_key(**kwargs)["KeyMetadata"]
    return meta


def test_create_and_describe_a_key(api: ApiServer, kms: Any) -> None:
    meta = new_key(kms, Description="sessions", Tags=[{"TagKey": "team", "TagValue": "ops"}])
    account = api.server.account_id
    assert meta["Arn"] == f"arn:aws:kms:local:{account}:key/{meta['KeyId']}"
    assert uuid.UUID(meta["KeyId"])
    assert (meta["KeyState"], meta["Enabled"], meta["Description"]) == ("Enabled", True, "sessions")
    assert (meta["KeyUsage"], meta["KeySpec"]) == ("ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT")
    assert meta["AWSAccountId"] == account and meta["Origin"] == "AWS_KMS"
    for ref in (meta["KeyId"], meta["Arn"]):
        assert kms.describe_key(KeyId=ref)["KeyMetadata"]["Arn"] == meta["Arn"]


def test_key_material_is_encrypted_at_rest(api: ApiServer, kms: Any) -> None:
    meta = new_key(kms)
    with contextlib.closing(sqlite3.connect(api.server.settings.db_path)) as db:
        (stored,) = db.execute(
            "SELECT material_encrypted FROM kms_keys WHERE key_id = ?", (meta["KeyId"],)
        ).fetchone()
    assert stored.startswith("v1:")
    raw = base64.b64decode(stored[3:])
    assert len(raw) == 12 + KEY_MATERIAL_BYTES + 16  # nonce, sealed material, tag


def test_only_symmetric_keys_and_no_key_policies(kms: Any) -> None:
    code, message = error(lambda: kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"))
    assert code == "ValidationException" and "symmetric" in message
    code, message = error(lambda: kms.create_key(Policy=json.dumps({"Version": "2012-10-17"})))
    assert code == "ValidationException" and "identity policies" in message


def test_data_key_round_trip_with_context(kms: Any) -> None:
    key = new_key(kms)["KeyId"]
    dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=CTX)
    assert len(dk["Plaintext"]) == 32 and dk["KeyId"].endswith(key)
    back = kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=CTX)
    assert back["Plaintext"] == dk["Plaintext"] and back["KeyId"] == dk["KeyId"]
    assert len(kms.generate_data_key(KeyId=key, KeySpec="AES_128")["Plaintext"]) == 16
    assert len(kms.generate_data_key(KeyId=key, NumberOfBytes=7)["Plaintext"]) == 7
    only = kms.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_256")
    assert "Plaintext" not in only
    assert len(kms.decrypt(CiphertextBlob=only["CiphertextBlob"])["Plaintext"]) == 32


def test_a_wrong_context_or_altered_blob_is_invalid_ciphertext(kms: Any) -> None:
    key = new_key(kms)["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"secret", EncryptionContext=CTX)["CiphertextBlob"]
    other = {"aws:ssm:SessionId": "bob-0123456789abcdef0"}
    for ctx in (other, {}, {**CTX, "extra": "x"}):
        code, _ = error(lambda c=ctx: kms.decrypt(CiphertextBlob=blob, EncryptionContext=c))
        assert code == "InvalidCiphertextException"
    altered = blob[:-1] + bytes([blob[-1] ^ 1])
    code, _ = error(lambda: kms.decrypt(CiphertextBlob=altered, EncryptionContext=CTX))
    assert code == "InvalidCiphertextException"
    code, _ = error(lambda: kms.decrypt(CiphertextBlob=b"not a blob at all, no"))
    assert code == "InvalidCiphertextException"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=CTX)["Plaintext"] == b"secret"


def test_decrypt_with_the_wrong_key_id_is_incorrect_key(kms: Any) -> None:
    one, two = new_key(kms)["KeyId"], new_key(kms)["KeyId"]
    blob = kms.encrypt(KeyId=one, Plaintext=b"x")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, KeyId=one)["Plaintext"] == b"x"
    code, _ = error(lambda: kms.decrypt(CiphertextBlob=blob, KeyId=two))
    assert code == "IncorrectKeyException"


def test_a_disabled_key_cannot_be_used_until_enabled(kms: Any) -> None:
    key = new_key(kms)["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    kms.disable_key(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    for call in (
        lambda: kms.generate_data_key(KeyId=key, KeySpec="AES_256"),
        lambda: kms.encrypt(KeyId=key, Plaintext=b"x"),
        lambda: kms.decrypt(CiphertextBlob=blob),
    ):
        code, message = error(call)
        assert code == "DisabledException" and "is disabled" in message
    kms.enable_key(KeyId=key)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_pending_deletion_blocks_use_and_can_be_cancelled(kms: Any) -> None:
    key = new_key(kms)["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    for days in (6, 31):
        code, _ = error(lambda d=days: kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=d))
        assert code == "ValidationException"
    scheduled = kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingDeletion" and scheduled["PendingWindowInDays"] == 7
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and "DeletionDate" in meta
    for call in (
        lambda: kms.decrypt(CiphertextBlob=blob),
        lambda: kms.generate_data_key(KeyId=key, KeySpec="AES_256"),
        lambda: kms.enable_key(KeyId=key),
        lambda: kms.disable_key(KeyId=key),
        lambda: kms.schedule_key_deletion(KeyId=key),
        lambda: kms.create_alias(AliasName="alias/doomed", TargetKeyId=key),
    ):
        code, message = error(call)
        assert code == "KMSInvalidStateException" and "pending deletion" in message
    assert kms.cancel_key_deletion(KeyId=key)["KeyId"].endswith(key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    code, _ = error(lambda: kms.cancel_key_deletion(KeyId=key))
    assert code == "KMSInvalidStateException"
    kms.enable_key(KeyId=key)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_aliases_name_keys_everywhere(api: ApiServer, kms: Any) -> None:
    meta = new_key(kms)
    kms.create_alias(AliasName="alias/recordings", TargetKeyId=meta["KeyId"])
    alias_arn = f"arn:aws:kms:local:{api.server.account_id}:alias/recordings"
    for ref in ("alias/recordings", alias_arn):
        assert kms.describe_key(KeyId=ref)["KeyMetadata"]["KeyId"] == meta["KeyId"]
        blob = kms.encrypt(KeyId=ref, Plaintext=b"y")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"y"
    listed = kms.list_aliases(KeyId=meta["KeyId"])["Aliases"]
    assert [(a["AliasName"], a["AliasArn"], a["TargetKeyId"]) for a in listed] == [
        ("alias/recordings", alias_arn, meta["KeyId"])
    ]
    code, _ = error(
        lambda: kms.create_alias(AliasName="alias/recordings", TargetKeyId=meta["KeyId"])
    )
    assert code == "AlreadyExistsException"
    code, _ = error(lambda: kms.create_alias(AliasName="alias/aws/x", TargetKeyId=meta["KeyId"]))
    assert code == "ValidationException"
    code, _ = error(lambda: kms.create_alias(AliasName="alias/x", TargetKeyId="alias/recordings"))
    assert code == "ValidationException"
    kms.delete_alias(AliasName="alias/recordings")
    code, _ = error(lambda: kms.describe_key(KeyId="alias/recordings"))
    assert code == "NotFoundException"
    code, _ = error(lambda: kms.delete_alias(AliasName="alias/recordings"))
    assert code == "NotFoundException"


@pytest.mark.parametrize(
    "ref",
    [
        "00000000-0000-4000-8000-000000000000",
        "alias/none",
        "not-a-key",
        "arn:aws:kms:elsewhere:111122223333:key/00000000-0000-4000-8000-000000000000",
    ],
)
def test_unknown_keys_are_not_found(kms: Any, ref: str) -> None:
    code, _ = error(lambda: kms.describe_key(KeyId=ref))
    assert code == "NotFoundException"


def test_list_keys_pages_with_markers(kms: Any) -> None:
    for _ in range(3):
        new_key(kms)
    everything = {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]}
    seen: list[str] = []
    marker: str | None = None
    while True:
        page = kms.list_keys(Limit=2, **({"Marker": marker} if marker else {}))
        assert len(page["Keys"]) <= 2
        seen += [k["KeyId"] for k in page["Keys"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert len(seen) == len(set(seen)) and set(seen) == everything
    assert len(everything) >= 3
    paginated = kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2})
    assert {k["KeyId"] for page in paginated for k in page["Keys"]} == everything
    code, _ = error(lambda: kms.list_keys(Marker="\u00e9\u00e9"))
    assert code == "InvalidMarkerException"


def test_bad_input_is_a_validation_error(api: ApiServer) -> None:
    answer = api.post("GenerateDataKey", {"KeyId": "alias/x", "KeySpec": "AES_512"}, service=KMS)
    assert answer.type == "ValidationException", answer.body
    answer = api.post("Decrypt", {"CiphertextBlob": "***"}, service=KMS)
    assert answer.type == "ValidationException" and "base64" in answer.message
    key = api.post("CreateKey", {}, service=KMS).body["KeyMetadata"]["KeyId"]
    both = {"KeyId": key, "KeySpec": "AES_256", "NumberOfBytes": 32}
    assert api.post("GenerateDataKey", both, service=KMS).type == "ValidationException"
    assert api.post("GenerateDataKey", {"KeyId": key}, service=KMS).type == "ValidationException"
    big = {"KeyId": key, "Plaintext": base64.b64encode(b"x" * 4097).decode()}
    answer = api.post("Encrypt", big, service=KMS)
    assert answer.type == "ValidationException" and "4096" in answer.message


def test_requests_must_be_signed_for_kms(api: ApiServer) -> None:
    raw = b"{}"
    headers = api.signed_headers("ListKeys", raw, service=KMS)
    assert api.send(raw, headers).status == 200
    ssm_signed = api.signed_headers("ListKeys", raw, service="AmazonSSM")
    ssm_signed["X-Amz-Target"] = f"{KMS}.ListKeys"
    answer = api.send(raw, ssm_signed)
    assert answer.type == "InvalidSignatureException", answer.body


def test_policies_grant_kms_actions_per_key(api: ApiServer, kms: Any) -> None:
    allowed, other = new_key(kms), new_key(kms)
    kms.create_alias(AliasName="alias/dana", TargetKeyId=allowed["KeyId"])
    api.post("CreateUser", {"UserName": "dana"}, service=HATCHWAY)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey"],
                "Resource": allowed["Arn"],
            }
        ],
    }
    body = {"UserName": "dana", "PolicyName": "k", "PolicyDocument": json.dumps(policy)}
    assert api.post("PutUserPolicy", body, service=HATCHWAY).status == 200
    access = api.post("CreateAccessKey", {"UserName": "dana"}, service=HATCHWAY).body
    dana = api.client(
        "kms",
        key_id=access["AccessKey"]["AccessKeyId"],
        secret=access["AccessKey"]["SecretAccessKey"],
    )
    for ref in (allowed["KeyId"], allowed["Arn"], "alias/dana"):
        dk = dana.generate_data_key(KeyId=ref, KeySpec="AES_256", EncryptionContext=CTX)
        assert dana.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=CTX)
    code, message = error(lambda: dana.generate_data_key(KeyId=other["KeyId"], KeySpec="AES_256"))
    assert code == "AccessDeniedException"
    assert "kms:GenerateDataKey" in message and other["Arn"] in message
    theirs = kms.encrypt(KeyId=other["KeyId"], Plaintext=b"z")["CiphertextBlob"]
    code, message = error(lambda: dana.decrypt(CiphertextBlob=theirs))
    assert code == "AccessDeniedException" and "kms:Decrypt" in message
    for call in (
        lambda: dana.create_key(),
        lambda: dana.list_keys(),
        lambda: dana.disable_key(KeyId=allowed["KeyId"]),
        lambda: dana.create_alias(AliasName="alias/mine", TargetKeyId=allowed["KeyId"]),
    ):
        assert error(call)[0] == "AccessDeniedException"
    # A key that does not exist is denied like any other key the policy does not name.
    code, _ = error(lambda: dana.describe_key(KeyId=str(uuid.uuid4())))
    assert code == "AccessDeniedException"


def test_read_only_access_grants_no_key_use(api: ApiServer, kms: Any) -> None:
    key = new_key(kms)
    api.post("CreateUser", {"UserName": "erin"}, service=HATCHWAY)
    attach = {"UserName": "erin", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}
    assert api.post("AttachUserPolicy", attach, service=HATCHWAY).status == 200, "attach"
    access = api.post("CreateAccessKey", {"UserName": "erin"}, service=HATCHWAY).body
    erin = api.client(
        "kms",
        key_id=access["AccessKey"]["AccessKeyId"],
        secret=access["AccessKey"]["SecretAccessKey"],
    )
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"z")["CiphertextBlob"]
    assert error(lambda: erin.decrypt(CiphertextBlob=blob))[0] == "AccessDeniedException"
    assert error(lambda: erin.list_keys())[0] == "AccessDeniedException"


def test_key_service_calls_are_audited_without_their_secrets(api: ApiServer, kms: Any) -> None:
    key = new_key(kms)
    secret = b"the plaintext of a secret"
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=secret, EncryptionContext=CTX)
    kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext=CTX)
    kms.disable_key(KeyId=key["KeyId"])

    def latest(name: str) -> dict[str, Any]:
        lookup = {"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": name}]}
        answer = api.post("LookupEvents", lookup, service=HATCHWAY)
        assert answer.status == 200 and answer.body["Events"], answer.body
        record: dict[str, Any] = json.loads(answer.body["Events"][0]["CloudTrailEvent"])
        return record

    encrypt = latest("Encrypt")
    assert encrypt["eventSource"] == "kms.amazonaws.com"
    assert encrypt["requestParameters"]["Plaintext"] == "***"
    assert encrypt["requestParameters"]["KeyId"] == key["KeyId"]
    assert encrypt["requestParameters"]["EncryptionContext"] == CTX
    assert encrypt["resources"] == [
        {"type": "AWS::KMS::Key", "name": key["KeyId"], "arn": key["Arn"]}
    ]
    decrypt = latest("Decrypt")
    size = len(blob["CiphertextBlob"])
    assert decrypt["requestParameters"]["CiphertextBlob"] == f"({size} bytes)"
    disable = latest("DisableKey")
    assert disable["eventSource"] == "kms.amazonaws.com" and disable["eventCode"] != "HWI001"
    everything = json.dumps([latest(n) for n in ("Encrypt", "Decrypt", "GenerateDataKey")])
    assert base64.b64encode(secret).decode() not in everything
