"""Session recordings end to end: a real server, agent and CLI; the recording read back with a
terminal emulator (pyte) and with the real asciinema; a server killed with SIGKILL mid-session;
S3 uploads to a local S3-compatible server that goes away and comes back."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyte
import pytest

from hatchway.protocol.asciicast import complete_length, parse_event, parse_header
from tests.integration.cluster import HATCHWAY, Cluster, wait_for
from tests.integration.s3server import CREDENTIALS, REGION, S3Server
from tests.integration.test_shell_pty import Terminal

BIN = Path(sys.executable).parent
ASCIINEMA = str(BIN / "asciinema")


def newest_session(c: Cluster, node: str, state: str = "History") -> str:
    found = [s for s in c.sessions(state) if s["Target"] == node]
    assert found, f"no {state} session on {node}"
    return str(max(found, key=lambda s: s["StartDate"])["SessionId"])


def events(cast: bytes) -> list[tuple[float, str, str]]:
    out = []
    for line in cast.splitlines()[1:]:
        e = parse_event(line)
        out.append((e.time, e.code, e.data))
    return out


def recording_info(c: Cluster, sid: str) -> dict:
    (session,) = c.cli_json("sessions", "get", sid)["Sessions"]
    return dict(session.get("Recording") or {})


def test_a_shell_recording_replays_to_the_live_screen(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    term = Terminal(cluster, node, rows=30, cols=100)
    try:
        term.expect(rb"\$ ")
        term.type("printf '\\033[1;31mred\\033[0m h\\303\\251llo \\344\\270\\226 rec-9\\n'\r")
        term.expect(rb"rec-9\r\n")
        term.type("seq 1 40\r")
        term.expect(rb"\n40\r\n")
        term.type("printf 'tab\\there\\n'; echo done-$((6*7))\r")
        term.expect(rb"done-42\r\n[^\n]*\$ $")
        cut = len(term.buf)  # what the terminal showed at 100x30
        term.resize(35, 110)
        term.type("stty size\r")
        term.expect(rb"35 110")
        term.type("exit\r")
        assert term.wait() == 0
    finally:
        term.close()
    sid = newest_session(cluster, node)
    cast = tmp_path / "s.cast"
    cluster.cli("sessions", "get-recording", sid, "-o", str(cast))
    data = cast.read_bytes()
    assert stat.S_IMODE(cast.stat().st_mode) == 0o600
    header = parse_header(data.splitlines()[0])
    assert json.loads(data.splitlines()[0])["version"] == 2
    assert (header.width, header.height, header.title) == (100, 30, sid)
    recorded = events(data)
    assert ("r", "110x35") in [(code, text) for _, code, text in recorded]
    times = [t for t, _, _ in recorded]
    assert times == sorted(times)
    # The same screen as the live terminal showed: replay both through a terminal emulator
    # (the resize is applied where the recording has it).
    live_screen = pyte.Screen(100, 30)
    live_stream = pyte.Stream(live_screen)
    live_stream.feed(term.buf[:cut].decode())
    live_screen.resize(35, 110)
    live_stream.feed(term.buf[cut:].decode())
    live = list(live_screen.display)
    screen = pyte.Screen(header.width, header.height)
    stream = pyte.Stream(screen)
    for _, code, text in recorded:
        if code == "o":
            stream.feed(text)
        elif code == "r":
            cols, rows = map(int, text.split("x"))
            screen.resize(rows, cols)
    assert list(screen.display) == live
    assert "done-42" in "\n".join(screen.display)
    output = "".join(text for _, code, text in recorded if code == "o")
    assert "\x1b[1;31mred\x1b[0m héllo 世 rec-9" in output
    # Byte for byte the same on stdout, and the real asciinema reads it.
    assert cluster.cli("sessions", "get-recording", sid, "-o", "-").stdout == data
    shown = subprocess.run([ASCIINEMA, "cat", str(cast)], capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr.decode()
    assert b"rec-9" in shown.stdout
    # Play replays the output, idle gaps capped.
    played = cluster.cli("sessions", "play", sid, "--speed", "100", "--idle-limit", "0.01")
    assert b"rec-9" in played.stdout and b"done-42" in played.stdout
    info = recording_info(cluster, sid)
    assert info["State"] == "Complete" and info["Size"] == len(data)


def test_get_recording_errors_are_one_line(cluster: Cluster, node: str, tmp_path: Path) -> None:
    missing = cluster.cli("sessions", "get-recording", "admin-00000000000000000", "-o", "-",
                          check=False)  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("hatchway: ")
    assert "Traceback" not in missing.stderr.decode()
    assert len(missing.stderr.decode().strip().splitlines()) == 1
    # A port session is not recorded.
    subprocess.run(
        [HATCHWAY, "ssh-proxy", "--target", node, "--port", "9"],
        capture_output=True, env=cluster.env(), timeout=60, input=b"",
    )  # fmt: skip
    sid = newest_session(cluster, node)
    none = cluster.cli("sessions", "get-recording", sid, "-o", str(tmp_path / "x"), check=False)
    assert none.returncode == 1 and b"has no recording" in none.stderr
    assert not (tmp_path / "x").exists()


def test_a_recording_survives_sigkill_of_the_server(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.start_server()
    try:
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
        sid = newest_session(c, node, "Active")
        time.sleep(1.2)  # the flusher writes at least every second
        seen = max(map(int, re.findall(rb"tick-(\d+)", out.read_bytes())))
        assert c.server_proc is not None
        c.server_proc.send_signal(signal.SIGKILL)
        c.server_proc.wait(15)
        # What is on disk right after the kill: whole lines up to about the last second.
        spool = (c.data_dir / "recordings" / f"{sid}.cast").read_bytes()
        whole = spool[: complete_length(spool)]
        parse_header(whole.splitlines()[0])
        on_disk = "".join(t for _, code, t in events(whole) if code == "o")
        ticks = [int(n) for n in re.findall(r"tick-(\d+)\r?\n", on_disk)]
        assert ticks and max(ticks) >= seen - 12, (seen, ticks[-3:])
        # The session goes on after the restart; the recording too, each tick once.
        c.start_server()
        assert client.wait(120) == 0, err.read_text()
        wait_for(lambda: recording_info(c, sid).get("State") == "Complete", 30,
                 what="the recording to complete")  # fmt: skip
        cast = tmp_path / "s.cast"
        c.cli("sessions", "get-recording", sid, "-o", str(cast))
        text = "".join(t for _, code, t in events(cast.read_bytes()) if code == "o")
        final = [int(n) for n in re.findall(r"tick-(\d+)\r?\n", text)]
        assert final == sorted(set(final)), "a tick recorded twice or out of order"
        assert final[-1] == 60 and len(final) >= 50, final
        shown = subprocess.run([ASCIINEMA, "cat", str(cast)], capture_output=True, timeout=60)
        assert shown.returncode == 0 and b"tick-60" in shown.stdout
    finally:
        c.close()


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server = S3Server(tmp_path / "moto.log")
    server.start()
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)  # the Hatchway server's boto3 chain reads them
    try:
        yield server
    finally:
        server.stop()


def _shell(c: Cluster, node: str, script: bytes) -> None:
    result = subprocess.run(
        [HATCHWAY, "start-session", "--target", node],
        input=script, capture_output=True, env=c.env(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()


def test_s3_uploads_survive_a_store_that_goes_away(tmp_path: Path, s3: S3Server) -> None:
    bucket = "recs"
    s3.client().create_bucket(Bucket=bucket)
    c = Cluster(tmp_path)
    options = ("--recordings", f"s3://{bucket}/team/a", "--recordings-endpoint-url", s3.url,
               "--recordings-region", REGION)  # fmt: skip
    c.start_server(*options)
    try:
        node, state = c.register("s3")
        c.start_agent(state, node)
        # 1. The store is up: uploaded when the session ends, the spool file removed.
        _shell(c, node, b"echo first-upload; exit\n")
        first = newest_session(c, node)
        wait_for(lambda: recording_info(c, first).get("State") == "Complete", 30,
                 what="the upload")  # fmt: skip
        key = f"team/a/{first}.cast"
        assert recording_info(c, first)["Location"] == f"s3://{bucket}/{key}"
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert b"first-upload" in body
        assert c.cli("sessions", "get-recording", first, "-o", "-").stdout == body
        assert not (c.data_dir / "recordings" / f"{first}.cast").exists()

        # 2. The store goes away: the recording waits in the spool, readable meanwhile.
        s3.stop()
        _shell(c, node, b"echo while-down; exit\n")
        second = newest_session(c, node)
        wait_for(lambda: recording_info(c, second).get("State") == "PendingUpload", 30,
                 what="the recording to wait for its upload")  # fmt: skip
        spooled = c.cli("sessions", "get-recording", second, "-o", "-").stdout
        assert b"while-down" in spooled
        # ...also across a server restart, the store still away.
        c.stop_server()
        c.start_server(*options)
        assert recording_info(c, second)["State"] == "PendingUpload"

        # 3. The store is back (empty: moto keeps buckets in memory): the retry uploads it.
        s3.start()
        s3.client().create_bucket(Bucket=bucket)
        # The retry interval has grown while the store was away (2 s doubling, at most 5 min).
        wait_for(lambda: recording_info(c, second).get("State") == "Complete", 330, 0.5,
                 what="the retried upload")  # fmt: skip
        uploaded = s3.client().get_object(Bucket=bucket, Key=f"team/a/{second}.cast")
        assert uploaded["Body"].read() == spooled
        assert c.cli("sessions", "get-recording", second, "-o", "-").stdout == spooled
        assert "testing" not in c.server_log.read_text()  # no secret in the log
    finally:
        c.close()


def test_server_refuses_a_bad_recordings_option(tmp_path: Path) -> None:
    result = subprocess.run(
        [HATCHWAY, "server", "--data-dir", str(tmp_path / "d"), "--recordings", "ftp://x"],
        capture_output=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        "hatchway: --recordings must be 'local' or s3://BUCKET[/PREFIX], not 'ftp://x'"
    )
