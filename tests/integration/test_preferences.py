"""Custom session documents and the Session Manager preferences end to end, with a real
server, agent and CLI: ``hatchway documents …`` and ``start-session --document``, the shell
profile (before the first prompt, never echoed), the idle timeout and the maximum duration with
their warnings (a "minute" is one second here: ``--preference-minute 1``, the test-only
setting), and run-as via the default user, the user's ``SSMSessionRunAs`` tag, and refusal
when that OS user is missing."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import HATCHWAY, Cluster, reap
from tests.integration.conftest import _end_processes_of, _uid_of

GREET = {
    "schemaVersion": "1.0",
    "description": "greet",
    "sessionType": "InteractiveCommands",
    "parameters": {"who": {"type": "String", "allowedPattern": "^[a-z]+$", "default": "world"}},
    "properties": {"linux": {"commands": "echo greet-{{ who }}-$((6*7))", "runAsElevated": False}},
}
DEFAULTS = (
    "idleSessionTimeout=20",
    "maxSessionDuration=",
    "runAsEnabled=false",
    "runAsDefaultUser=",
    "shellProfile.linux=",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """This module's own server, whose preference "minutes" are seconds."""
    c = Cluster(tmp_path_factory.mktemp("prefs"))
    c.start_server("--preference-minute", "1")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def defaults(cluster: Cluster) -> Iterator[None]:
    """Each test starts and ends with the default preferences."""
    cluster.cli("preferences", "set", *DEFAULTS)
    yield
    cluster.cli("preferences", "set", *DEFAULTS)


@pytest.fixture(scope="module")
def os_users() -> Iterator[tuple[str, str]]:
    """Two OS users of this run's own (run-as targets), removed afterwards."""
    names = (f"hwra-{secrets.token_hex(3)}", f"hwrb-{secrets.token_hex(3)}")
    for name in names:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", name],
            check=True,
            capture_output=True,
        )
    try:
        yield names
    finally:
        for name in names:
            uid = _uid_of(name)
            if uid is not None:
                _end_processes_of(uid)
                subprocess.run(["userdel", "-r", name], capture_output=True, check=False)


def shell(cluster: Cluster, node: str, script: bytes) -> subprocess.CompletedProcess[bytes]:
    return cluster.cli("start-session", "--target", node, input=script, check=False)


# ---- documents ----------------------------------------------------------------------------


def test_documents_cli_and_a_custom_document_with_parameters(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    path = tmp_path / "greet.json"
    path.write_text(json.dumps(GREET))
    created = cluster.cli_json("documents", "create", "Greet", "--content", str(path))
    assert created["DocumentDescription"]["DocumentVersion"] == "1"
    listed = cluster.cli("documents", "list").stdout.decode()
    assert "Greet" in listed and "SSM-SessionManagerRunShell" in listed
    assert json.loads(cluster.cli("documents", "get", "Greet").stdout) == GREET

    ran = cluster.cli(
        "start-session", "--target", node, "--document", "Greet", "--parameters", "who=hatch"
    )
    assert b"greet-hatch-42" in ran.stdout, ran.stderr
    ran = cluster.cli(
        "start-session", "--target", node, "--document", "Greet",
        "--parameters", '{"who": ["json"]}',
    )  # fmt: skip
    assert b"greet-json-42" in ran.stdout, ran.stderr
    refused = cluster.cli(
        "start-session", "--target", node, "--document", "Greet",
        "--parameters", "who=Bad;rm", check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert b"allowed pattern" in refused.stderr and b"Traceback" not in refused.stderr

    # A YAML version made the default is what the next session runs.
    yaml_path = tmp_path / "greet.yaml"
    yaml_path.write_text(
        "schemaVersion: '1.0'\nsessionType: InteractiveCommands\n"
        "properties:\n  linux:\n    commands: echo yaml-$((2+3))\n"
    )
    updated = cluster.cli_json(
        "documents", "update", "Greet", "--content", str(yaml_path), "--default"
    )
    assert updated["DocumentDescription"]["DefaultVersion"] == "2"
    ran = cluster.cli("start-session", "--target", node, "--document", "Greet")
    assert b"yaml-5" in ran.stdout, ran.stderr
    versions = cluster.cli("documents", "versions", "Greet").stdout.decode()
    assert versions.count("\n") == 3  # header and two versions

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schemaVersion": "1.0", "sessionType": "Nope"}))
    failed = cluster.cli("documents", "create", "Bad", "--content", str(bad), check=False)
    assert failed.returncode != 0
    assert b"InvalidDocumentContent" in failed.stderr and b"sessionType" in failed.stderr

    cluster.cli("documents", "delete", "Greet")
    gone = cluster.cli("documents", "get", "Greet", check=False)
    assert gone.returncode != 0 and b"InvalidDocument" in gone.stderr


# ---- shell profile ------------------------------------------------------------------------


@pytest.mark.usefixtures("defaults")
def test_the_shell_profile_runs_before_the_prompt_and_is_not_echoed(
    cluster: Cluster, node: str
) -> None:
    cluster.cli("preferences", "set", "shellProfile.linux=echo profile-$((5*5)); PS1='hw> '")
    shown = cluster.cli_json("preferences", "get")["Preferences"]
    assert shown["shellProfile"]["linux"].startswith("echo profile")
    result = shell(cluster, node, b"echo typed-$((2*3))\nexit\n")
    out = result.stdout.decode(errors="replace")
    assert "profile-25" in out, out
    assert "echo profile" not in out, out
    assert out.index("profile-25") < out.index("typed-6"), out


# ---- time limits --------------------------------------------------------------------------


def _session_id_of(cluster: Cluster, before: set[str]) -> str:
    history = cluster.sessions("History")
    new = [s["SessionId"] for s in history if s["SessionId"] not in before]
    assert len(new) == 1, history
    return new[0]


def _silent_shell(cluster: Cluster, node: str, script: bytes = b"") -> tuple[int, str, str]:
    """A shell session whose stdin stays open (no end of input); returns when it ends."""
    proc = subprocess.Popen(
        [HATCHWAY, "start-session", "--target", node],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env(),
    )
    try:
        assert proc.stdin is not None
        if script:
            proc.stdin.write(script)
            proc.stdin.flush()
        out, err = _wait(proc)
        return proc.returncode, out, err
    finally:
        reap(proc)


def _wait(proc: subprocess.Popen[bytes]) -> tuple[str, str]:
    assert proc.stdout is not None and proc.stderr is not None
    proc.wait(60)
    return proc.stdout.read().decode(errors="replace"), proc.stderr.read().decode(errors="replace")


@pytest.mark.usefixtures("defaults")
def test_an_idle_session_is_warned_then_ended(cluster: Cluster, node: str) -> None:
    cluster.cli("preferences", "set", "idleSessionTimeout=3")
    before = {s["SessionId"] for s in cluster.sessions("History")}
    _, out, err = _silent_shell(cluster, node)
    assert "idle and ends in 1 minute" in err, err
    assert "idle for 3 minutes (idleSessionTimeout)" in out + err, (out, err)
    session = _session_id_of(cluster, before)
    got = cluster.cli_json("sessions", "get", session)["Sessions"][0]
    assert got["Status"] == "Terminated" and "idleSessionTimeout" in got["Details"]
    assert got["Preferences"]["IdleSessionTimeout"] == 3


@pytest.mark.usefixtures("defaults")
def test_output_keeps_a_session_alive_until_its_maximum_duration(
    cluster: Cluster, node: str
) -> None:
    cluster.cli("preferences", "set", "idleSessionTimeout=2", "maxSessionDuration=5")
    before = {s["SessionId"] for s in cluster.sessions("History")}
    _, out, err = _silent_shell(cluster, node, b"while :; do echo tick; sleep 0.2; done\n")
    # Output every 0.2 s: never idle for 2 s, so the maximum duration ends it.
    assert "reaches its maximum duration and ends in 1 minute" in err, err
    assert "maximum duration of 5 minutes (maxSessionDuration)" in out + err, (out, err)
    assert "idle" not in err, err
    assert out.count("tick") > 5
    got = cluster.cli_json("sessions", "get", _session_id_of(cluster, before))["Sessions"][0]
    assert got["Preferences"]["MaxSessionDuration"] == 5 and got["MaxSessionDuration"] == "5"
    table = cluster.cli("sessions", "get", got["SessionId"]).stdout.decode()
    assert "idle 2 min, max 5 min" in table, table


# ---- run as -------------------------------------------------------------------------------


@pytest.mark.usefixtures("defaults")
def test_run_as_the_default_user_then_the_users_tag(
    cluster: Cluster, node: str, os_users: tuple[str, str]
) -> None:
    default_user, tagged_user = os_users
    cluster.cli("preferences", "set", "runAsEnabled=true", f"runAsDefaultUser={default_user}")
    result = shell(cluster, node, b"echo me-$(id -un)\nexit\n")
    assert f"me-{default_user}".encode() in result.stdout, result.stderr
    cluster.cli(
        "iam", "tag-user", "--user-name", "admin", "--tags",
        f"Key=SSMSessionRunAs,Value={tagged_user}",
    )  # fmt: skip
    try:
        result = shell(cluster, node, b"echo me-$(id -un)\nexit\n")
        assert f"me-{tagged_user}".encode() in result.stdout, result.stderr
    finally:
        cluster.cli("iam", "untag-user", "--user-name", "admin", "--tag-keys", "SSMSessionRunAs")


@pytest.mark.usefixtures("defaults")
def test_run_as_a_missing_user_fails_the_session_and_creates_nobody(
    cluster: Cluster, node: str
) -> None:
    missing = f"hwno-{secrets.token_hex(3)}"
    cluster.cli("preferences", "set", "runAsEnabled=true", f"runAsDefaultUser={missing}")
    before = {s["SessionId"] for s in cluster.sessions("History")}
    result = shell(cluster, node, b"echo should-not-run\nexit\n")
    assert result.returncode != 0
    assert b"should-not-run" not in result.stdout
    assert f"{missing} does not exist on this node".encode() in result.stderr, result.stderr
    assert _uid_of(missing) is None
    got = cluster.cli_json("sessions", "get", _session_id_of(cluster, before))["Sessions"][0]
    assert got["Status"] == "Failed", got
