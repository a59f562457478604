"""The key service and encrypted recordings end to end: a real TLS server started with
``--recordings-kms-key``, a real agent, the CLI and boto3's ``kms`` client."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from hatchway.client.config import load_profile
from hatchway.protocol.asciicast import parse_event, parse_header
from tests.integration.cluster import Cluster, SharedAgent

CTX = {"aws:ssm:SessionId": "x"}
SECRET_INPUT = b"echo top-secret-$((6*7))\nexit\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server whose recordings key does not exist yet: it starts anyway, and encrypts once
    the key is created through it."""
    c = Cluster(tmp_path_factory.mktemp("kms"))
    c.start_server("--recordings-kms-key", "alias/recordings")
    try:
        yield c
    finally:
        c.close()


def kms_client(cluster: Cluster, key_id: str | None = None, secret: str | None = None) -> Any:
    p = load_profile(str(cluster.profile), "default")
    return boto3.session.Session().client(
        "kms",
        endpoint_url=p.endpoint,
        region_name=p.region,
        aws_access_key_id=key_id or p.access_key_id,
        aws_secret_access_key=secret or p.secret_access_key,
        verify=str(cluster.ca_file),
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture(scope="module")
def kms(cluster: Cluster) -> Any:
    return kms_client(cluster)


def code_of(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


def test_the_acceptance_round_trip_through_boto3(kms: Any) -> None:
    """The KMS part of shared/checks/preferences.sh, verbatim in substance."""
    key = kms.create_key(Description="sessions")["KeyMetadata"]
    assert key["Arn"].startswith("arn:aws:kms:"), key
    dk = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256", EncryptionContext=CTX)
    back = kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=CTX)
    assert back["Plaintext"] == dk["Plaintext"] and len(dk["Plaintext"]) == 32
    assert code_of(lambda: kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])) == (
        "InvalidCiphertextException"
    )
    kms.disable_key(KeyId=key["KeyId"])
    with pytest.raises(kms.exceptions.DisabledException):
        kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
    kms.enable_key(KeyId=key["KeyId"])
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=CTX)
    kms.cancel_key_deletion(KeyId=key["KeyId"])
    kms.create_alias(AliasName="alias/boto", TargetKeyId=key["KeyId"])
    with pytest.raises(kms.exceptions.AlreadyExistsException):
        kms.create_alias(AliasName="alias/boto", TargetKeyId=key["KeyId"])
    assert any(a["AliasName"] == "alias/boto" for a in kms.list_aliases()["Aliases"])
    kms.enable_key(KeyId="alias/boto")
    blob = kms.encrypt(KeyId="alias/boto", Plaintext=b"hello")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"hello"
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId="alias/nothing")


def test_the_cli_manages_keys(cluster: Cluster) -> None:
    created = cluster.cli_json("kms", "create-key", "--description", "cli", "--alias", "cli")
    key_id = created["KeyMetadata"]["KeyId"]
    table = cluster.cli("kms", "list-keys").stdout.decode()
    row = next(line for line in table.splitlines() if key_id in line)
    assert "Enabled" in row and "alias/cli" in row
    cluster.cli("kms", "disable-key", "alias/cli")
    described = cluster.cli_json("kms", "describe-key", key_id)["KeyMetadata"]
    assert described["KeyState"] == "Disabled" and described["CreationDate"].endswith("+00:00")
    cluster.cli("kms", "enable-key", key_id)
    assert "Enabled" in cluster.cli("kms", "describe-key", "alias/cli").stdout.decode()
    missing = cluster.cli("kms", "disable-key", "alias/none", check=False)
    err = missing.stderr.decode()
    assert missing.returncode == 1 and err.startswith("hatchway: NotFoundException")
    assert len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def recordings_key(cluster: Cluster) -> str:
    created = cluster.cli_json("kms", "create-key", "--alias", "recordings")
    return str(created["KeyMetadata"]["Arn"])


def _user(cluster: Cluster, name: str, actions: list[str], key_arn: str, config: Path) -> None:
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["hatchway:GetSessionRecording", "ssm:DescribeSessions"],
            "Resource": "*",
        }
    ]
    if actions:
        statements.append({"Effect": "Allow", "Action": actions, "Resource": key_arn})
    document = json.dumps({"Version": "2012-10-17", "Statement": statements})
    cluster.cli("iam", "create-user", "--user-name", name)
    cluster.cli(
        "iam", "put-user-policy", "--user-name", name, "--policy-name", "rec",
        "--policy-document", document,
    )  # fmt: skip
    key = cluster.cli_json("iam", "create-access-key", "--user-name", name)["AccessKey"]
    cluster.cli(
        "--config", str(config), "configure", "--profile", name, "--endpoint", cluster.endpoint,
        "--ca-file", str(cluster.ca_file), "--access-key-id", key["AccessKeyId"],
        "--secret-access-key", key["SecretAccessKey"],
    )  # fmt: skip


def test_an_encrypted_recording(
    cluster: Cluster, shared_agent: SharedAgent, recordings_key: str, tmp_path: Path
) -> None:
    cluster.ensure_server()
    shared_agent.ensure_online()
    # The key did not exist when the server started: it said so, and started anyway.
    assert "--recordings-kms-key alias/recordings cannot be used now" in (
        cluster.server_log.read_text()
    )
    node = shared_agent.node_id
    result = cluster.cli("start-session", "--target", node, input=SECRET_INPUT)
    assert b"top-secret-42" in result.stdout
    found = [s for s in cluster.sessions("History") if s["Target"] == node]
    sid = str(max(found, key=lambda s: s["StartDate"])["SessionId"])
    (session,) = cluster.cli_json("sessions", "get", sid)["Sessions"]
    assert session["Recording"]["KmsKeyId"] == recordings_key
    # At rest: no plaintext, the encrypted format's header naming the key.
    on_disk = (cluster.data_dir / "recordings" / f"{sid}.cast").read_bytes()
    assert on_disk.startswith(b"HWREC1 ") and recordings_key.encode() in on_disk
    assert b"top-secret" not in on_disk and b'"version"' not in on_disk
    # The admin reads the asciicast as if it were plain.
    cast = tmp_path / "s.cast"
    cluster.cli("sessions", "get-recording", sid, "-o", str(cast))
    data = cast.read_bytes()
    assert parse_header(data.splitlines()[0]).title == sid
    output = "".join(parse_event(line).data for line in data.splitlines()[1:])
    assert "top-secret-42" in output
    played = cluster.cli("sessions", "play", sid, "--speed", "100", "--idle-limit", "0.01")
    assert b"top-secret-42" in played.stdout
    # A user allowed to read recordings but not kms:Decrypt on the key is refused.
    config = tmp_path / "users.toml"
    _user(cluster, "auditor", ["kms:Decrypt"], recordings_key, config)
    _user(cluster, "snoop", [], recordings_key, config)

    def as_user(name: str) -> subprocess.CompletedProcess[bytes]:
        return cluster.cli(
            "--config", str(config), "--profile", name, "sessions", "get-recording", sid,
            "-o", "-", check=False,
        )  # fmt: skip

    refused = as_user("snoop")
    err = refused.stderr.decode()
    assert refused.returncode == 1 and "AccessDeniedException" in err, err
    assert "kms:Decrypt" in err and recordings_key in err
    allowed = as_user("auditor")
    assert allowed.returncode == 0, allowed.stderr.decode()
    assert allowed.stdout == data
    # A disabled key: a clear error, and reading works again once it is enabled.
    cluster.cli("kms", "disable-key", "alias/recordings")
    try:
        disabled = as_user("auditor")
        err = disabled.stderr.decode()
        assert disabled.returncode == 1 and "DisabledException" in err, err
        assert "enable the key" in err and len(err.strip().splitlines()) == 1
    finally:
        cluster.cli("kms", "enable-key", "alias/recordings")
    assert as_user("auditor").stdout == data
