"""The audit trail end to end, through the real CLI against a real server and agent: a
session, a refused call and an IAM change show up in ``audit list``; ``audit verify`` passes
on the untouched chain and names the record when the SQLite file is edited behind the
server's back (a row changed, a row removed, two rows swapped); exports verify offline."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hatchway.agent.dialer import Dialer
from hatchway.agent.state import AgentState
from hatchway.auth.sigv4 import Credentials
from hatchway.errors import AuthError
from hatchway.transport.apiclient import ApiClient, ApiError
from tests.integration.cluster import Cluster, wait_for


def listed(cluster: Cluster, *args: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = cluster.cli_json("audit", "list", *args)["Events"]
    return events


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["EventName"] for e in events]


@contextmanager
def database(cluster: Cluster) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(cluster.data_dir / "hatchway.db", timeout=30)
    try:
        with db:
            yield db
    finally:
        db.close()


def verify(cluster: Cluster) -> tuple[int, str, str]:
    result = cluster.cli("audit", "verify", check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def sequence_of(cluster: Cluster, event_name: str) -> int:
    with database(cluster) as db:
        row = db.execute(
            "SELECT sequence FROM audit_events WHERE event_name = ? ORDER BY sequence LIMIT 1",
            (event_name,),
        ).fetchone()
    assert row is not None, f"no {event_name} record"
    return int(row[0])


@pytest.fixture(scope="module")
def trail(cluster: Cluster, shared_agent: Any) -> Cluster:
    """A session, a refused call and an IAM change, each done once."""
    node = shared_agent.node_id
    out = cluster.cli("start-session", "--target", node, input=b"echo audit-$((2*3))\nexit\n")
    assert b"audit-6" in out.stdout
    cluster.cli("iam", "create-user", "--user-name", "auditee")
    key = cluster.cli_json("iam", "create-access-key", "--user-name", "auditee")["AccessKey"]
    cluster.cli("iam", "create-group", "--group-name", "auditors")
    api = ApiClient(
        cluster.endpoint,
        region="local",
        credentials=Credentials(key["AccessKeyId"], key["SecretAccessKey"]),
        ca_file=cluster.ca_file,
    )
    with pytest.raises(ApiError, match="not authorized"):
        api.call("StartSession", {"Target": node})
    wait_for(
        lambda: "SessionEnded" in names(listed(cluster, "--action", "SessionEnded")),
        30,
        what="the session's end in the trail",
    )
    return cluster


def test_audit_list_shows_sessions_denials_and_iam_changes(trail: Cluster) -> None:
    events = listed(trail)
    seen = names(events)
    for name in ("StartSession", "SessionStarted", "SessionEnded", "CreateUser", "CreateGroup"):
        assert name in seen, name
    denied = listed(trail, "--user", "auditee", "--action", "ssm:StartSession")
    assert len(denied) == 1
    record = json.loads(denied[0]["CloudTrailEvent"])
    assert record["errorCode"] == "AccessDeniedException"
    assert record["decision"]["outcome"] == "implicitDeny"
    assert record["userAgent"].startswith("hatchway-cli/")
    started = json.loads(listed(trail, "--action", "SessionStarted")[0]["CloudTrailEvent"])
    session_id = started["additionalEventData"]["sessionId"]
    assert session_id.startswith("admin-")
    by_session = names(listed(trail, "--resource", session_id))
    assert by_session == ["SessionEnded", "SessionStarted"]  # newest first
    assert listed(trail, "--since", "2099-01-01T00:00:00Z") == []
    table = trail.cli("audit", "list", "--since", "1h", "--action", "CreateGroup").stdout.decode()
    assert "CreateGroup" in table and "admin" in table
    bad = trail.cli("audit", "list", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and b"neither an ISO 8601 time" in bad.stderr
    assert b"Traceback" not in bad.stderr


def test_a_refused_channel_upgrade_is_recorded(trail: Cluster, shared_agent: Any) -> None:
    """A node may open only its own control channel: another node's is refused and recorded."""
    other = "mi-0000000000000000f"

    async def dial() -> None:
        dialer = Dialer(AgentState.load(shared_agent.state))
        try:
            await dialer.connect(f"/v1/control-channel/{other}")
        finally:
            await dialer.close()

    with pytest.raises(AuthError):
        asyncio.run(dial())
    refused = listed(trail, "--action", "OpenControlChannel")
    assert len(refused) == 1
    record = json.loads(refused[0]["CloudTrailEvent"])
    assert record["eventCode"] == "HWA003"
    assert record["eventSource"] == "ssmmessages.amazonaws.com"
    assert record["userIdentity"] == {"type": "Node", "nodeId": shared_agent.node_id}
    assert record["resources"][0]["name"] == other
    assert record["errorCode"] == "AccessDeniedException"


def test_verify_passes_on_an_untouched_chain_and_exports_verify_offline(
    trail: Cluster, tmp_path: Path
) -> None:
    status, out, err = verify(trail)
    assert status == 0, err
    assert out.startswith("audit chain intact:") and out.count("\n") == 1
    export = trail.cli("audit", "export", "--format", "jsonl").stdout.decode()
    lines = export.splitlines()
    assert json.loads(lines[0])["sequence"] == 1
    path = tmp_path / "trail.jsonl"
    path.write_text(export)
    result = trail.cli("audit", "verify", "--file", str(path))
    assert result.stdout.decode().startswith(f"audit chain intact: {len(lines)} records")
    head = json.loads(lines[-1])
    anchored = trail.cli("audit", "verify", "--anchor", f"{head['sequence']}:{head['hash']}")
    assert anchored.returncode == 0
    edited = [json.loads(line) for line in lines]
    edited[2]["event"]["eventName"] = "Nothing"
    path.write_text("".join(json.dumps(e) + "\n" for e in edited))
    result = trail.cli("audit", "verify", "--file", str(path), check=False)
    assert result.returncode == 1
    assert "record 3 " in result.stderr.decode()


def test_verify_names_a_changed_row(trail: Cluster) -> None:
    seq = sequence_of(trail, "CreateGroup")
    with database(trail) as db:
        (original,) = db.execute(
            "SELECT record FROM audit_events WHERE sequence = ?", (seq,)
        ).fetchone()
        db.execute(
            "UPDATE audit_events SET record = ? WHERE sequence = ?",
            (original.replace("auditors", "nobodies"), seq),
        )
    try:
        status, _, err = verify(trail)
        assert status == 1
        assert f"record {seq} " in err and "changed" in err
    finally:
        with database(trail) as db:
            db.execute("UPDATE audit_events SET record = ? WHERE sequence = ?", (original, seq))
    assert verify(trail)[0] == 0


def test_verify_names_a_removed_row(trail: Cluster) -> None:
    seq = sequence_of(trail, "SessionStarted")
    with database(trail) as db:
        row = db.execute("SELECT * FROM audit_events WHERE sequence = ?", (seq,)).fetchone()
        db.execute("DELETE FROM audit_events WHERE sequence = ?", (seq,))
    try:
        status, _, err = verify(trail)
        assert status == 1
        assert f"record {seq} " in err and "removed" in err
    finally:
        with database(trail) as db:
            marks = ",".join("?" * len(row))
            db.execute(f"INSERT INTO audit_events VALUES ({marks})", row)
    assert verify(trail)[0] == 0


def test_verify_names_the_first_of_two_swapped_rows(trail: Cluster) -> None:
    first, second = sequence_of(trail, "CreateUser"), sequence_of(trail, "CreateGroup")
    assert first < second

    def swap(db: sqlite3.Connection) -> None:
        db.execute("UPDATE audit_events SET sequence = -1 WHERE sequence = ?", (first,))
        db.execute("UPDATE audit_events SET sequence = ? WHERE sequence = ?", (first, second))
        db.execute("UPDATE audit_events SET sequence = ? WHERE sequence = -1", (second,))

    with database(trail) as db:
        swap(db)
    try:
        status, _, err = verify(trail)
        assert status == 1
        assert f"record {first} " in err
        assert f"found record {second} where record {first} belongs" in err
    finally:
        with database(trail) as db:
            swap(db)
    assert verify(trail)[0] == 0
