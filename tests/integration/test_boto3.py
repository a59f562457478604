"""boto3's ``ssm`` client against a real Hatchway server: AWS's shapes, errors and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from hatchway.client.config import load_profile
from hatchway.protocol.payloads import OpenDataChannelInput
from tests.integration.cluster import HATCHWAY, RUN_AS, Cluster

OK_INPUT = b"echo ok-$((1+1))\nexit\n"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def ssm_client(cluster: Cluster, **overrides: Any) -> Any:
    p = load_profile(str(cluster.profile), "default")
    kwargs: dict[str, Any] = {
        "endpoint_url": p.endpoint,
        "region_name": p.region,
        "aws_access_key_id": p.access_key_id,
        "aws_secret_access_key": p.secret_access_key,
        "verify": str(cluster.ca_file),
        "config": Config(retries={"max_attempts": 1, "mode": "standard"}),
        **overrides,
    }
    return boto3.session.Session().client("ssm", **kwargs)


@pytest.fixture(scope="module")
def ssm(cluster: Cluster) -> Any:
    return ssm_client(cluster)


def assert_undisturbed(cluster: Cluster, node: str) -> None:
    """The shared node is still Online and a normal piped shell still works."""
    assert cluster.node_status(node) == "Online"
    result = cluster.cli("start-session", "--target", node, input=OK_INPUT, check=False)
    assert b"ok-2" in result.stdout, result.stderr.decode(errors="replace")
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def error_of(call: Callable[[], Any]) -> tuple[int, str, str]:
    """(HTTP status, AWS error code, message) of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def session_in(ssm: Any, state: str, session_id: str) -> dict[str, Any] | None:
    found = ssm.describe_sessions(State=state, Filters=[{"key": "SessionId", "value": session_id}])[
        "Sessions"
    ]
    return found[0] if found else None


# ---- nodes --------------------------------------------------------------------------------


def test_describe_instance_information_lists_the_node_online(ssm: Any, node: str) -> None:
    pages = ssm.get_paginator("describe_instance_information").paginate()
    listed = {i["InstanceId"]: i for page in pages for i in page["InstanceInformationList"]}
    info = listed[node]
    assert info["PingStatus"] == "Online"
    assert info["ResourceType"] == "ManagedInstance"
    assert info["SourceId"] == node
    assert info["SourceType"] == "AWS::SSM::ManagedInstance"
    assert info["PlatformType"] in ("Linux", "MacOS", "Windows")
    assert info["PlatformName"] and info["PlatformVersion"] and info["ComputerName"]
    assert info["IPAddress"] and info["AgentVersion"]
    assert isinstance(info["IsLatestVersion"], bool)
    assert UUID.fullmatch(info["ActivationId"])
    # botocore parsed these by AWS's model: timestamps become aware datetimes.
    assert isinstance(info["LastPingDateTime"], datetime) and info["LastPingDateTime"].tzinfo
    assert isinstance(info["RegistrationDate"], datetime)
    assert info["RegistrationDate"] <= info["LastPingDateTime"]

    def ids(**kwargs: Any) -> list[str]:
        found = ssm.describe_instance_information(**kwargs)["InstanceInformationList"]
        return [i["InstanceId"] for i in found]

    assert ids(Filters=[{"Key": "InstanceIds", "Values": [node]}]) == [node]
    assert node in ids(Filters=[{"Key": "PingStatus", "Values": ["Online"]}])
    assert node not in ids(Filters=[{"Key": "PingStatus", "Values": ["ConnectionLost"]}])
    assert node in ids(Filters=[{"Key": "tag:Env", "Values": ["test"]}])
    assert node not in ids(Filters=[{"Key": "tag:Env", "Values": ["prod"]}])


# ---- activations --------------------------------------------------------------------------


def test_activation_lifecycle(ssm: Any, cluster: Cluster, tmp_path: Path) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    created = ssm.create_activation(
        Description="from boto3",
        DefaultInstanceName="web",
        IamRole="SSMServiceRole",
        RegistrationLimit=2,
        ExpirationDate=expires,
        Tags=[{"Key": "Team", "Value": "ops"}],
    )
    aid, code = created["ActivationId"], created["ActivationCode"]
    assert UUID.fullmatch(aid) and code

    def described() -> list[dict[str, Any]]:
        return ssm.describe_activations(
            Filters=[{"FilterKey": "ActivationIds", "FilterValues": [aid]}]
        )["ActivationList"]

    [activation] = described()
    assert activation["ActivationId"] == aid
    assert activation["Description"] == "from boto3"
    assert activation["DefaultInstanceName"] == "web"
    assert activation["IamRole"] == "SSMServiceRole"
    assert activation["RegistrationLimit"] == 2
    assert activation["RegistrationsCount"] == 0
    assert activation["Expired"] is False
    assert activation["ExpirationDate"] == expires
    assert isinstance(activation["CreatedDate"], datetime)
    assert activation["Tags"] == [{"Key": "Team", "Value": "ops"}]

    # The code boto3 got registers a node through the CLI, with the activation's defaults.
    node_id = _register(cluster, aid, code, tmp_path / "agent")
    assert described()[0]["RegistrationsCount"] == 1
    [info] = ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [node_id]}]
    )["InstanceInformationList"]
    assert info["Name"] == "web"
    assert info["ActivationId"] == aid

    ssm.delete_activation(ActivationId=aid)
    assert described() == []
    _, error, _ = error_of(lambda: ssm.delete_activation(ActivationId=aid))
    assert error == "InvalidActivationId"


def _register(cluster: Cluster, aid: str, code: str, state: Path) -> str:
    result = cluster.cli(
        "agent", "register", "--endpoint", cluster.endpoint, "--ca-file", str(cluster.ca_file),
        "--activation-id", aid, "--activation-code", code, "--state-dir", str(state),
    )  # fmt: skip
    return result.stdout.decode().strip()


# ---- sessions -----------------------------------------------------------------------------


def data_channel_close(cluster: Cluster, url: str, token: str) -> tuple[int | None, str]:
    """Open the data channel with ``token``; the close code and reason the server answers."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    opened = OpenDataChannelInput(
        token_value=token, request_id=str(uuid.uuid4()), client_id=str(uuid.uuid4())
    )

    async def attempt() -> tuple[int | None, str]:
        async with asyncio.timeout(20):
            ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
            ws = await connect(url, ssl=ctx, compression=None, close_timeout=5)
            await ws.send(opened.to_json().decode())
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
            return ws.close_code, ws.close_reason or ""

    return asyncio.run(attempt())


def test_session_lifecycle(ssm: Any, cluster: Cluster, node: str) -> None:
    started = ssm.start_session(Target=node, Reason="boto3 lifecycle")
    sid = started["SessionId"]
    assert re.fullmatch(r"admin-[0-9a-f]{17}", sid)
    assert len(started["TokenValue"]) >= 43  # >= 256 random bits, base64
    assert started["StreamUrl"].startswith("wss://")
    assert started["StreamUrl"] == (
        f"wss://127.0.0.1:{cluster.port}/v1/data-channel/{sid}?role=publish_subscribe"
    )
    try:
        active = session_in(ssm, "Active", sid)
        assert active is not None
        assert active["Target"] == node
        assert active["Status"] in ("Connecting", "Connected")
        assert active["Reason"] == "boto3 lifecycle"
        assert active["Owner"].endswith(":user/admin")
        assert active["DocumentName"] == "SSM-SessionManagerRunShell"
        assert isinstance(active["StartDate"], datetime)
        assert "EndDate" not in active

        # While it runs, ResumeSession hands out a fresh token for the same stream.
        resumed = ssm.resume_session(SessionId=sid)
        assert resumed["SessionId"] == sid
        assert resumed["TokenValue"] and resumed["TokenValue"] != started["TokenValue"]
        assert resumed["StreamUrl"] == started["StreamUrl"]
    finally:
        assert ssm.terminate_session(SessionId=sid)["SessionId"] == sid

    assert session_in(ssm, "Active", sid) is None
    ended = session_in(ssm, "History", sid)
    assert ended is not None
    assert ended["Status"] == "Terminated"
    assert isinstance(ended["EndDate"], datetime)
    assert ended["EndDate"] >= ended["StartDate"]

    # An ended session cannot be resumed: no token (AWS's plugin reads that as "ended") ...
    after = ssm.resume_session(SessionId=sid)
    assert after["SessionId"] == sid
    assert "TokenValue" not in after
    # ... and the newest token it had no longer opens its data channel.
    code, _ = data_channel_close(cluster, resumed["StreamUrl"], resumed["TokenValue"])
    assert code == 1008
    # Terminating again is harmless; the node is unaffected.
    assert ssm.terminate_session(SessionId=sid)["SessionId"] == sid
    assert_undisturbed(cluster, node)


def test_start_session_to_unknown_node_is_target_not_connected(
    ssm: Any, cluster: Cluster, node: str
) -> None:
    status, code, message = error_of(lambda: ssm.start_session(Target="mi-0123456789abcdef0"))
    assert (status, code) == (400, "TargetNotConnected")
    assert "mi-0123456789abcdef0" in message
    _, code, _ = error_of(lambda: ssm.resume_session(SessionId="admin-00000000000000000"))
    assert code == "DoesNotExistException"
    assert_undisturbed(cluster, node)


# ---- authentication -----------------------------------------------------------------------


def test_wrong_secret_is_refused(cluster: Cluster, node: str) -> None:
    bad = ssm_client(cluster, aws_secret_access_key="x" * 40)
    status, code, message = error_of(lambda: bad.describe_sessions(State="Active"))
    assert status in (400, 403)
    assert code in ("InvalidSignatureException", "UnrecognizedClientException")
    assert "signature" in message.lower()
    assert_undisturbed(cluster, node)


def test_unknown_access_key_is_unrecognized(cluster: Cluster, node: str) -> None:
    bad = ssm_client(cluster, aws_access_key_id="HWAK0000000000000000")
    status, code, _ = error_of(lambda: bad.describe_sessions(State="Active"))
    assert (status, code) == (400, "UnrecognizedClientException")
    assert_undisturbed(cluster, node)


def test_wrong_region_scope_is_refused(cluster: Cluster, node: str) -> None:
    bad = ssm_client(cluster, region_name="us-east-1")
    status, code, message = error_of(lambda: bad.describe_sessions(State="Active"))
    assert (status, code) == (400, "InvalidSignatureException")
    assert "region" in message
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize(
    ("minutes", "refused"),
    [(-10, "Signature expired"), (10, "Signature not yet current"), (-4, None), (4, None)],
)
def test_request_signed_at_another_time(
    cluster: Cluster,
    node: str,
    monkeypatch: pytest.MonkeyPatch,
    minutes: int,
    refused: str | None,
) -> None:
    """Requests signed more than 5 minutes away from the server's clock are refused."""
    real_now = botocore.auth.get_current_datetime
    skew = timedelta(minutes=minutes)
    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda *a, **k: real_now(*a, **k) + skew
    )
    client = ssm_client(cluster)
    if refused is None:
        assert "Sessions" in client.describe_sessions(State="Active")
    else:
        status, code, message = error_of(lambda: client.describe_sessions(State="Active"))
        assert (status, code) == (400, "InvalidSignatureException")
        assert message.startswith(refused)
    monkeypatch.undo()
    assert_undisturbed(cluster, node)


# ---- deregistration -----------------------------------------------------------------------


def test_deregister_drops_a_running_agent_for_good(ssm: Any, cluster: Cluster, node: str) -> None:
    doomed, state = cluster.register("doomed")
    agent = cluster.start_agent(state, doomed)
    sid = ssm.start_session(Target=doomed)["SessionId"]

    ssm.deregister_managed_instance(InstanceId=doomed)

    # Its control channel is dropped at once: the agent exits with a clear message.
    assert agent.wait(15) != 0
    log = (state.parent / f"{state.name}.log").read_text()
    assert "Traceback" not in log, log
    last = log.strip().splitlines()[-1]
    assert last.startswith("hatchway: ") and "deregistered" in last, log
    listed = ssm.describe_instance_information()["InstanceInformationList"]
    assert doomed not in [i["InstanceId"] for i in listed]
    assert (
        ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [doomed]}])[
            "InstanceInformationList"
        ]
        == []
    )
    ended = session_in(ssm, "History", sid)
    assert ended is not None and ended["Status"] == "Terminated"

    # It cannot come back: a restarted agent is refused and exits.
    again = subprocess.run(
        [str(HATCHWAY), "agent", "run", "--state-dir", str(state), "--run-as-default", RUN_AS],
        capture_output=True,
        env=cluster.env(),
        timeout=60,
    )
    assert again.returncode != 0
    err = again.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("hatchway: the server refused this node"), err
    assert (
        ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [doomed]}])[
            "InstanceInformationList"
        ]
        == []
    )
    status, code, _ = error_of(lambda: ssm.start_session(Target=doomed))
    assert (status, code) == (400, "TargetNotConnected")
    _, code, _ = error_of(lambda: ssm.deregister_managed_instance(InstanceId=doomed))
    assert code == "InvalidInstanceId"
    assert_undisturbed(cluster, node)
