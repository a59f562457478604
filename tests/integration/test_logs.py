"""Live log streams end to end: a real server started with ``--log-group``, a real agent and the
real CLI: ``logs tail --follow`` shows a shell's output while the session runs, ``logs get``
has all of it afterwards (ANSI kept, or stripped), boto3's ``logs`` client reads it, and the
retention job deletes old recordings and events."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from hatchway.client.config import load_profile
from tests.integration.cluster import HATCHWAY, Cluster, wait_for
from tests.integration.test_shell_pty import Terminal

GROUP = "team/shells"


@pytest.fixture
def streaming(tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    c = Cluster(tmp_path)
    c.start_server("--log-group", GROUP)
    try:
        node, state = c.register("logs")
        c.start_agent(state, node)
        yield c, node
    finally:
        c.close()


class Reader:
    """A process's stdout read without blocking, kept whole."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc, self.fd, self.buf = proc, proc.stdout.fileno(), b""
        os.set_blocking(self.fd, False)

    def expect(self, needle: bytes, timeout: float = 10.0) -> float:
        """Seconds it took ``needle`` to appear."""
        start = time.monotonic()
        while needle not in self.buf:
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{needle!r} not seen; got {self.buf[-400:]!r}")
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                with contextlib.suppress(BlockingIOError):
                    self.buf += os.read(self.fd, 65536)
        return time.monotonic() - start


def _active_session(c: Cluster, node: str) -> str:
    found = wait_for(
        lambda: [s for s in c.sessions("Active") if s["Target"] == node], 20, what="a session"
    )
    return str(found[0]["SessionId"])


def test_tail_follows_a_live_shell_and_get_has_everything(
    streaming: tuple[Cluster, str],
) -> None:
    c, node = streaming
    term = Terminal(c, node)
    tail = None
    try:
        term.expect(rb"\$ ")
        sid = _active_session(c, node)
        tail = subprocess.Popen(
            [HATCHWAY, "logs", "tail", "--group", GROUP, "--follow", "--session", sid],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=c.env(),
        )  # fmt: skip
        reader = Reader(tail)
        term.type("printf '\\033[1;31mred\\033[0m live-%d\\n' $((6*7))\r")
        term.expect(rb"live-42\r\n")
        # Seen by the follower while the session runs, within a few seconds.
        assert reader.expect(b"\x1b[1;31mred\x1b[0m live-42") < 5
        term.type("echo second-$((1+1)); printf 'no newline-%d' 7\r")
        term.expect(rb"no newline-7")
        reader.expect(b"second-2\r\n")
        reader.expect(b"no newline-7")  # text without a newline comes out too (flushed)
        term.type("exit\r")
        assert term.wait() == 0
    finally:
        term.close()
        if tail is not None:
            tail.send_signal(signal.SIGINT)  # Ctrl-C: exit 0
            try:
                assert tail.wait(10) == 0, tail.stderr.read() if tail.stderr else b""
            finally:
                if tail.poll() is None:
                    tail.kill()
                    tail.wait()
                for pipe in (tail.stdout, tail.stderr):
                    if pipe is not None:
                        pipe.close()
    got = c.cli("logs", "get", "--group", GROUP, "--session", sid).stdout
    assert b"\x1b[1;31mred\x1b[0m live-42\r\n" in got
    assert b"second-2\r\n" in got and b"no newline-7" in got and b"exit" in got
    stripped = c.cli("logs", "get", "--group", GROUP, "--session", sid, "--strip-ansi").stdout
    assert b"red live-42\r\n" in stripped and b"\x1b" not in stripped
    as_json = c.cli_json("logs", "get", "--group", GROUP, "--session", sid)
    assert "".join(e["message"] for e in as_json["events"]).encode() == got
    assert all(isinstance(e["timestamp"], int) for e in as_json["events"])
    (group,) = c.cli_json("logs", "groups")["logGroups"]
    assert group["logGroupName"] == GROUP and group["storedBytes"] >= len(got)
    tail_all = c.cli("logs", "tail", "--group", GROUP, "--strip-ansi").stdout
    line = next(line for line in tail_all.split(b"\n") if b"red live-42" in line)
    assert line.startswith(f"{sid} ".encode()) and b"\x1b" not in line

    # boto3's own client, signed for the "logs" service.
    profile = load_profile(str(c.profile), "default")
    client = boto3.client(
        "logs",
        endpoint_url=profile.endpoint,
        region_name=profile.region,
        aws_access_key_id=profile.access_key_id,
        aws_secret_access_key=profile.secret_access_key,
        verify=str(profile.ca_file),
    )
    events = client.get_log_events(logGroupName=GROUP, logStreamName=sid, startFromHead=True)
    assert "".join(e["message"] for e in events["events"]).encode() == got
    found = client.filter_log_events(logGroupName=GROUP, filterPattern="second-2")["events"]
    assert [e["logStreamName"] for e in found] == [sid]
    (stream,) = client.describe_log_streams(logGroupName=GROUP)["logStreams"]
    assert stream["logStreamName"] == sid


def test_bad_log_options_are_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [HATCHWAY, "server", "--data-dir", str(tmp_path), "--log-group", "no spaces!"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.decode().startswith("hatchway: --log-group must be"), result.stderr
    assert b"Traceback" not in result.stderr


def test_retention_deletes_old_recordings_and_log_events(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.start_server(
        "--log-group", GROUP, "--recordings-retention-days", "0", "--logs-retention-days", "0",
        "--retention-interval", "1",
    )  # fmt: skip
    try:
        node, state = c.register("retention")
        c.start_agent(state, node)
        result = subprocess.run(
            [HATCHWAY, "start-session", "--target", node],
            input=b"echo retained-$((2*21))\nexit\n", capture_output=True, env=c.env(),
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        (session,) = [s for s in c.sessions("History") if s["Target"] == node]
        sid = session["SessionId"]
        recordings = c.data_dir / "recordings"

        def gone() -> bool:
            (row,) = c.cli_json("sessions", "get", sid)["Sessions"]
            logs = c.cli("logs", "get", "--group", GROUP, "--session", sid, check=False)
            # Its events expired, then the ended stream left empty went too.
            return not row.get("Recording") and b"ResourceNotFoundException" in logs.stderr

        wait_for(gone, 30, 0.5, "the retention job")
        assert not list(recordings.glob(f"{sid}*"))
        log = c.server_log.read_text()
        assert f"retention: deleted 1 recording(s) ({sid})" in log
        # The audit trail has the deletion, and its chain still verifies.
        found = c.cli_json("audit", "list", "--action", "RetentionDeleted", "--resource", sid)
        (event,) = found["Events"]
        details = json.loads(event["CloudTrailEvent"])["additionalEventData"]
        assert [r["sessionId"] for r in details["recordingsDeleted"]] == [sid]
        c.cli("audit", "verify")
    finally:
        c.close()
