"""The key service and encrypted recordings end to end: a real TLS server started with
``--recordings-kms-key``, a real agent, the CLI and boto3's ``kms`` client."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from hatchway.client.config import load_profile
from hatchway.protocol.asciicast import parse_event, parse_header
from tests.integration.cluster import HATCHWAY, Cluster, SharedAgent, wait_for
from tests.integration.s3server import CREDENTIALS, REGION, S3Server

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


def _sealed_plaintext(data: bytes, kms: Any, sid: str) -> tuple[bytes, bool]:
    """Decrypt an encrypted recording file the way the server does (for checks on disk)."""
    from hatchway.auth.sealedrecording import ChunkOpener
    from hatchway.auth.sealedrecording import parse_header as parse_sealed

    header, line = parse_sealed(data)
    data_key = kms.decrypt(CiphertextBlob=header.wrapped_key, EncryptionContext=header.context)
    assert header.context == {"aws:ssm:SessionId": sid}
    opened = ChunkOpener(data_key["Plaintext"], line).open(data[len(line) :])
    return opened.plaintext, opened.final


def test_an_encrypted_recording_survives_sigkill_of_the_server(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.start_server("--recordings-kms-key", "alias/rec")
    try:
        c.cli("kms", "create-key", "--alias", "rec")
        node, state = c.register("k")
        c.start_agent(state, node)
        out, err = tmp_path / "client.out", tmp_path / "client.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            client = subprocess.Popen(
                [HATCHWAY, "start-session", "--target", node],
                stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=c.env(),
            )  # fmt: skip
        assert client.stdin is not None
        client.stdin.write(b"for i in $(seq 1 60); do echo tick-$i; sleep 0.1; done; exit\n")
        client.stdin.close()
        wait_for(lambda: b"tick-20" in out.read_bytes(), 30, what="output to stream")
        sid = max(c.sessions("Active"), key=lambda s: s["StartDate"])["SessionId"]
        time.sleep(1.2)  # the flusher writes at least every second
        seen = max(map(int, re.findall(rb"tick-(\d+)", out.read_bytes())))
        assert c.server_proc is not None
        c.server_proc.send_signal(signal.SIGKILL)
        c.server_proc.wait(15)
        spool = (c.data_dir / "recordings" / f"{sid}.cast").read_bytes()
        assert b"tick-" not in spool
        c.start_server("--recordings-kms-key", "alias/rec")
        kms = kms_client(c)
        # What was on disk right after the kill: sealed chunks up to about the last second.
        plain, final = _sealed_plaintext(spool, kms, sid)
        assert not final
        on_disk_text = "".join(parse_event(line).data for line in plain.splitlines()[1:])
        ticks = [int(n) for n in re.findall(r"tick-(\d+)\r?\n", on_disk_text)]
        assert ticks and max(ticks) >= seen - 12, (seen, ticks[-3:])
        # The session goes on after the restart; the recording too, each tick once.
        assert client.wait(120) == 0, err.read_text()
        wait_for(
            lambda: (
                c.cli_json("sessions", "get", sid)["Sessions"][0]["Recording"]["State"]
                == "Complete"
            ),
            30,
            what="the recording to complete",
        )
        cast = c.cli("sessions", "get-recording", sid, "-o", "-").stdout
        text = "".join(parse_event(line).data for line in cast.splitlines()[1:])
        final_ticks = [int(n) for n in re.findall(r"tick-(\d+)\r?\n", text)]
        assert final_ticks == sorted(set(final_ticks)), "a tick recorded twice or out of order"
        assert final_ticks[-1] == 60 and len(final_ticks) >= 50, final_ticks
        on_disk, final = _sealed_plaintext(
            (c.data_dir / "recordings" / f"{sid}.cast").read_bytes(), kms, sid
        )
        assert final and on_disk == cast
    finally:
        c.close()


def test_an_encrypted_recording_goes_to_s3_sealed(tmp_path: Path, s3: S3Server) -> None:
    bucket = "sealed"
    s3.client().create_bucket(Bucket=bucket)
    c = Cluster(tmp_path)
    c.start_server(
        "--recordings", f"s3://{bucket}/p", "--recordings-endpoint-url", s3.url,
        "--recordings-region", REGION, "--recordings-kms-key", "alias/s3",
    )  # fmt: skip
    try:
        c.cli("kms", "create-key", "--alias", "s3")
        node, state = c.register("s3")
        c.start_agent(state, node)
        c.cli("start-session", "--target", node, input=SECRET_INPUT)
        sid = max(c.sessions("History"), key=lambda s: s["StartDate"])["SessionId"]
        wait_for(
            lambda: (
                c.cli_json("sessions", "get", sid)["Sessions"][0]["Recording"]["State"]
                == "Complete"
            ),
            30,
            what="the upload",
        )
        body = s3.client().get_object(Bucket=bucket, Key=f"p/{sid}.cast")["Body"].read()
        assert body.startswith(b"HWREC1 ") and b"top-secret" not in body
        cast = c.cli("sessions", "get-recording", sid, "-o", "-").stdout
        assert b"top-secret-42" in cast
        assert _sealed_plaintext(body, kms_client(c), sid) == (cast, True)
    finally:
        c.close()


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    server = S3Server(tmp_path / "moto.log")
    server.start()
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)  # the Hatchway server's boto3 chain reads them
    try:
        yield server
    finally:
        server.stop()
