"""Webhooks end to end: a real server and agent, the real CLI, and an HTTP receiver on loopback
that fails the first attempts and checks every signature."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hatchway.server.events.signature import verify
from tests.integration.cluster import Cluster

SECRET = "s3cret"  # as short as the acceptance check's: 6 characters are accepted


@dataclass
class Received:
    status: int
    headers: dict[str, str]
    body: bytes
    signed: bool

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that answers ``failures`` (statuses) first, then 200, or
    ``refuse`` (a status) to everything while it is set."""

    failures: list[int] = field(default_factory=list)
    refuse: int | None = None
    received: list[Received] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                signed = verify(
                    SECRET,
                    headers.get("X-Hatchway-Timestamp", ""),
                    body,
                    headers.get("X-Hatchway-Signature", ""),
                    now=time.time(),
                )
                with receiver.changed:
                    if receiver.refuse is not None:
                        status = receiver.refuse
                    else:
                        status = receiver.failures.pop(0) if receiver.failures else 200
                    receiver.received.append(Received(status, headers, body, signed))
                    receiver.changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def accepted(self) -> list[Received]:
        with self.changed:
            return [r for r in self.received if r.status == 200]

    def wait(self, predicate: Any, timeout: float = 30.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self.received), timeout):
                raise AssertionError(f"timed out; received: {[r.event for r in self.received]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


def _subscribe(cluster: Cluster, url: str, events: str) -> str:
    created = cluster.cli_json(
        "events", "create-subscription", "--url", url, "--events", events, "--secret", SECRET
    )
    return str(created["Subscription"]["SubscriptionId"])


def test_session_events_arrive_signed_in_order_after_failed_attempts(
    cluster: Cluster, node: str, receiver: Receiver
) -> None:
    receiver.failures = [500, 500]
    sid = _subscribe(cluster, receiver.url, "session.started,session.ended")
    try:
        listed = cluster.cli("events", "list-subscriptions", "--output", "json").stdout.decode()
        assert sid in listed and SECRET not in listed
        result = cluster.cli(
            "start-session", "--target", node, input=b"echo hook-$((6*7))\nexit 3\n", check=False
        )
        assert b"hook-42" in result.stdout and result.returncode == 3, result.stderr

        receiver.wait(lambda got: sum(r.status == 200 for r in got) >= 2)
        assert all(r.signed for r in receiver.received)  # failed attempts were signed too
        assert [r.status for r in receiver.received[:3]] == [500, 500, 200]
        started, ended = (r.event for r in receiver.accepted()[:2])
        assert started["type"] == "session.started" and ended["type"] == "session.ended"
        session_id = started["detail"]["sessionId"]
        assert ended["detail"]["sessionId"] == session_id
        assert started["detail"]["nodeId"] == node
        assert started["detail"]["document"] == "SSM-SessionManagerRunShell"
        assert ended["detail"]["status"] == "Terminated"
        assert ended["detail"]["exitCode"] == 3
        assert ended["detail"]["durationSeconds"] > 0
        assert ended["detail"]["bytesOut"] > 0
        first = receiver.received[0]
        assert first.headers["X-Hatchway-Event-Id"] == started["id"]
        assert first.headers["X-Hatchway-Event-Type"] == "session.started"
        assert {r.event["id"] for r in receiver.received[:3]} == {started["id"]}  # one event

        log = cluster.cli_json("events", "list-deliveries", "--subscription", sid)
        by_event = {d["EventId"]: d for d in log["Deliveries"]}
        assert by_event[started["id"]]["Attempts"] == 3
        assert by_event[started["id"]]["Status"] == "delivered"
        assert by_event[started["id"]]["LastStatusCode"] == 200
        assert by_event[ended["id"]]["Attempts"] == 1
        failed = cluster.cli_json("events", "list-deliveries", "--status", "failed")
        assert failed == {"Deliveries": []}
        table = cluster.cli("events", "list-deliveries").stdout.decode()
        assert "session.started" in table and "delivered" in table
    finally:
        cluster.cli("events", "delete-subscription", sid)
    assert sid not in cluster.cli("events", "list-subscriptions").stdout.decode()


def test_pending_deliveries_survive_a_server_restart(
    fresh_cluster: Cluster, receiver: Receiver
) -> None:
    receiver.refuse = 503
    sid = _subscribe(fresh_cluster, receiver.url, "node.registered")
    node_id, _ = fresh_cluster.register("restarted")
    receiver.wait(lambda got: len(got) >= 1)  # attempted once and refused: still pending
    fresh_cluster.stop_server()
    with receiver.changed:
        receiver.refuse = None  # the receiver is fine again while the server is down
        refused = len(receiver.received)
    fresh_cluster.start_server()
    receiver.wait(lambda got: any(r.status == 200 for r in got))
    [delivered] = receiver.accepted()
    assert delivered.signed
    assert delivered.event["type"] == "node.registered"
    assert delivered.event["detail"]["nodeId"] == node_id
    assert {r.event["id"] for r in receiver.received} == {delivered.event["id"]}
    log = fresh_cluster.cli_json("events", "list-deliveries", "--subscription", sid)
    [entry] = log["Deliveries"]
    assert entry["Status"] == "delivered" and entry["Attempts"] == refused + 1


def test_bad_subscriptions_are_refused_with_a_clear_message(cluster: Cluster) -> None:
    def refused(*args: str) -> str:
        result = cluster.cli("events", "create-subscription", *args, check=False)
        assert result.returncode != 0 and b"Traceback" not in result.stderr
        return result.stderr.decode()

    url = "https://hooks.example/x"
    assert "session.begun" in refused("--url", url, "--events", "session.begun", "--secret", SECRET)
    assert "http:// or https://" in refused(
        "--url", "ftp://hooks.example/", "--events", "node.online", "--secret", SECRET
    )
    message = refused("--url", url, "--events", "node.online", "--secret", "short")
    assert "6 to 256 characters" in message and "short" not in message
    assert "credentials" in refused(
        "--url", "https://u:p@hooks.example/", "--events", "node.online", "--secret", SECRET
    )
    gone = cluster.cli("events", "delete-subscription", "sub-0123456789abcdef", check=False)
    assert gone.returncode != 0 and b"does not exist" in gone.stderr
