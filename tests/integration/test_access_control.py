"""Access control end to end: users, a group policy by node tag, own sessions only, live
revocation; driven through the real CLI and through boto3, against a real server and agents."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.integration.cluster import HATCHWAY, Cluster, reap, wait_for

DEV_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "ShellOnDevNodes",
            "Effect": "Allow",
            "Action": "ssm:StartSession",
            "Resource": "arn:aws:ssm:*:*:managed-instance/*",
            "Condition": {"StringEquals": {"ssm:resourceTag/Env": "dev"}},
        },
        {
            "Sid": "ShellDocument",
            "Effect": "Allow",
            "Action": "ssm:StartSession",
            "Resource": "arn:aws:ssm:*:*:document/SSM-SessionManagerRunShell",
        },
        {
            "Sid": "SeeNodesAndSessions",
            "Effect": "Allow",
            "Action": ["ssm:DescribeInstanceInformation", "ssm:DescribeSessions"],
            "Resource": "*",
        },
        {
            "Sid": "OwnSessionsOnly",
            "Effect": "Allow",
            "Action": ["ssm:TerminateSession", "ssm:ResumeSession"],
            "Resource": "arn:aws:ssm:*:*:session/${aws:username}-*",
        },
    ],
}
OK_INPUT = b"echo ok-$((40+2))\nexit\n"


@dataclass
class User:
    name: str
    key_id: str
    secret: str


@dataclass
class World:
    cluster: Cluster
    dev_node: str
    prod_node: str
    policy_arn: str
    dev: User
    other: User
    config: Path

    def as_user(
        self, user: User, *args: str, input: bytes | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        return self.cluster.cli(
            "--config", str(self.config), "--profile", user.name, *args, input=input, check=check
        )

    def ssm(self, user: User) -> Any:
        return boto3.session.Session().client(
            "ssm",
            endpoint_url=self.cluster.endpoint,
            region_name="local",
            aws_access_key_id=user.key_id,
            aws_secret_access_key=user.secret,
            verify=str(self.cluster.ca_file),
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )


@pytest.fixture(scope="module")
def world(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("access")
    dev_node, dev_state = cluster.register("dev", "--tag", "Env=dev")
    prod_node, prod_state = cluster.register("prod", "--tag", "Env=prod")
    cluster.start_agent(dev_state, dev_node)
    cluster.start_agent(prod_state, prod_node)
    policy_file = root / "dev-policy.json"
    policy_file.write_text(json.dumps(DEV_POLICY))
    cluster.cli_json("iam", "create-group", "--group-name", "devs")
    policy = cluster.cli_json(
        "iam",
        "create-policy",
        "--policy-name",
        "SessionsOnDev",
        "--policy-document",
        f"file://{policy_file}",
    )
    arn = policy["Policy"]["Arn"]
    cluster.cli("iam", "attach-group-policy", "--group-name", "devs", "--policy-arn", arn)
    config = root / "users.toml"
    users = []
    for name in ("dev-user", "other-user"):
        cluster.cli_json("iam", "create-user", "--user-name", name)
        key = cluster.cli_json("iam", "create-access-key", "--user-name", name)["AccessKey"]
        user = User(name, key["AccessKeyId"], key["SecretAccessKey"])
        cluster.cli(
            "--config",
            str(config),
            "configure",
            "--profile",
            name,
            "--endpoint",
            cluster.endpoint,
            "--ca-file",
            str(cluster.ca_file),
            "--access-key-id",
            user.key_id,
            "--secret-access-key",
            user.secret,
        )
        users.append(user)
    cluster.cli("iam", "add-user-to-group", "--user-name", "dev-user", "--group-name", "devs")
    yield World(cluster, dev_node, prod_node, arn, users[0], users[1], config)


def denied(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode(errors="replace")
    assert result.returncode != 0, err
    assert "Traceback" not in err
    assert "AccessDeniedException" in err, err
    return err


def test_configure_writes_a_private_profile(world: World) -> None:
    assert world.config.stat().st_mode & 0o777 == 0o600
    text = world.config.read_text()
    assert "[profiles.dev-user]" in text or '[profiles."dev-user"]' in text


def test_dev_user_reaches_a_dev_node(world: World) -> None:
    result = world.as_user(world.dev, "start-session", "--target", world.dev_node, input=OK_INPUT)
    assert b"ok-42" in result.stdout, result.stderr
    assert result.returncode == 0


def test_dev_user_is_denied_a_prod_node_with_the_reason(world: World) -> None:
    err = denied(world.as_user(world.dev, "start-session", "--target", world.prod_node))
    assert "ssm:StartSession" in err
    assert f"managed-instance/{world.prod_node}" in err
    assert "dev-user" in err


def test_a_user_without_policies_is_denied_everything(world: World) -> None:
    denied(world.as_user(world.other, "start-session", "--target", world.dev_node))
    denied(world.as_user(world.other, "nodes"))
    denied(world.as_user(world.other, "sessions"))
    denied(world.as_user(world.other, "iam", "list-users"))


def test_the_same_through_boto3(world: World) -> None:
    ssm = world.ssm(world.dev)
    nodes = ssm.describe_instance_information()["InstanceInformationList"]
    assert world.dev_node in {n["InstanceId"] for n in nodes}
    with pytest.raises(ClientError) as caught:
        ssm.start_session(Target=world.prod_node)
    error = caught.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert "ssm:StartSession" in error["Message"]
    started = ssm.start_session(Target=world.dev_node)
    assert started["SessionId"].startswith("dev-user-")
    # Its own session: dev-user may terminate it.
    assert ssm.terminate_session(SessionId=started["SessionId"])["SessionId"]
    with pytest.raises(ClientError) as caught:
        world.ssm(world.other).describe_sessions(State="Active")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"


def test_dev_user_cannot_terminate_another_users_session(world: World) -> None:
    admin = world.cluster.api().call("StartSession", {"Target": world.dev_node})
    sid = admin["SessionId"]
    try:
        assert sid.startswith("admin-")
        denied(world.as_user(world.dev, "terminate-session", sid))
        with pytest.raises(ClientError) as caught:
            world.ssm(world.dev).terminate_session(SessionId=sid)
        assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
        with pytest.raises(ClientError):
            world.ssm(world.dev).resume_session(SessionId=sid)
    finally:
        world.cluster.cli("terminate-session", sid)


def test_simulate_explains_both_decisions(world: World) -> None:
    out = world.cluster.cli(
        "iam",
        "simulate",
        "--user",
        "dev-user",
        "--action",
        "ssm:StartSession",
        "--resource",
        world.prod_node,
    ).stdout.decode()
    assert "implicitDeny" in out
    data = world.cluster.cli_json(
        "iam",
        "simulate",
        "--user",
        "dev-user",
        "--action",
        "ssm:StartSession",
        "--resource",
        world.dev_node,
    )
    (result,) = data["EvaluationResults"]
    assert result["EvalDecision"] == "allowed"
    assert result["EvalResourceName"].endswith(f":managed-instance/{world.dev_node}")
    assert "ShellOnDevNodes" in result["Explanation"]
    assert result["MatchedStatements"][0]["SourcePolicyId"] == world.policy_arn


def _held_session(world: World, user: User, node: str) -> subprocess.Popen[bytes]:
    """A session of ``user`` kept open (its stdin stays open), once it answered."""
    proc = subprocess.Popen(
        [HATCHWAY, "--config", str(world.config), "--profile", user.name, "start-session",
         "--target", node],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=world.cluster.env(),
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"echo live-$((1+1))\n")
    proc.stdin.flush()
    seen = b""
    while b"live-2" not in seen:
        chunk = proc.stdout.read1(4096)
        assert chunk, f"session ended before it answered: {seen!r}"
        seen += chunk
    return proc


def test_detaching_the_policy_ends_the_live_session(world: World) -> None:
    c = world.cluster
    proc = _held_session(world, world.dev, world.dev_node)
    try:
        c.cli(
            "iam", "detach-group-policy", "--group-name", "devs", "--policy-arn", world.policy_arn
        )
        wait_for(lambda: proc.poll() is not None, 15, what="the revoked session to end")
        assert proc.stdout is not None
        rest = proc.stdout.read().decode(errors="replace")
        assert "access revoked" in rest, rest
        history = {s["SessionId"]: s for s in c.sessions("History")}
        ended = [s for s in history.values() if s["Owner"].endswith("user/dev-user")]
        assert any("access revoked" in s.get("Details", "") for s in ended)
    finally:
        reap(proc)
        c.cli(
            "iam", "attach-group-policy", "--group-name", "devs", "--policy-arn", world.policy_arn
        )


def test_retagging_a_node_moves_access_live(world: World) -> None:
    c = world.cluster
    proc = _held_session(world, world.dev, world.dev_node)
    try:
        c.cli("nodes", "tag", world.dev_node, "--tags", "Key=Env,Value=prod")
        wait_for(
            lambda: proc.poll() is not None, 15, what="the session on the retagged node to end"
        )
        denied(world.as_user(world.dev, "start-session", "--target", world.dev_node))
    finally:
        reap(proc)
        c.cli("nodes", "tag", world.dev_node, "--tags", "Key=Env,Value=dev")
    result = world.as_user(world.dev, "start-session", "--target", world.dev_node, input=OK_INPUT)
    assert b"ok-42" in result.stdout, result.stderr


def test_a_deactivated_key_stops_at_the_next_request(world: World) -> None:
    c = world.cluster
    key = c.cli_json("iam", "create-access-key", "--user-name", "other-user")["AccessKey"]
    user = User("other-user", key["AccessKeyId"], key["SecretAccessKey"])
    ssm = world.ssm(user)
    with pytest.raises(ClientError) as caught:  # no policy, but the key is valid
        ssm.describe_sessions(State="Active")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    c.cli("iam", "update-access-key", "--user-name", "other-user", "--access-key-id",
          user.key_id, "--status", "Inactive")  # fmt: skip
    with pytest.raises(ClientError) as caught:
        ssm.describe_sessions(State="Active")
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
    c.cli("iam", "delete-access-key", "--user-name", "other-user", "--access-key-id", user.key_id)
