"""Session ends the server decides (a client that vanishes and does not come back, a node that
dies) and what sessions survive (a server restart)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.integration.cluster import HATCHWAY, Cluster, reap, wait_for


@pytest.fixture
def quick_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_server("--disconnect-grace", "1")
    try:
        yield c
    finally:
        c.close()


def test_vanished_client_ends_the_session_after_the_grace(quick_cluster: Cluster) -> None:
    c = quick_cluster
    node, state = c.register("a")
    c.start_agent(state, node)
    marker = f"/tmp/hatchway-test-{os.getpid()}-{node}"
    client = subprocess.Popen(
        [HATCHWAY, "start-session", "--target", node],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=c.env(),
    )  # fmt: skip
    try:
        assert client.stdin is not None
        # a long-running shell that leaves a trace of its pid, then the client dies hard
        client.stdin.write(f"echo $$ > {marker}; sleep 1000\n".encode())
        client.stdin.flush()
        shell_pid = int(wait_for(lambda: _read(marker), 20, what="the remote shell's pid"))

        def status() -> str | None:
            for s in c.sessions("Active") + c.sessions("History"):
                if s["Target"] == node:
                    return str(s["Status"])
            return None

        assert wait_for(lambda: status() == "Connected", 20, what="Connected")
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        wait_for(lambda: status() == "Terminated", 20, what="Terminated after the grace")
        history = [s for s in c.sessions("History") if s["Target"] == node]
        assert history and "EndDate" in history[0]
        # the node side ended too: the shell was hung up
        wait_for(lambda: not Path(f"/proc/{shell_pid}").exists(), 10, what="shell to end")
    finally:
        reap(client)
        Path(marker).unlink(missing_ok=True)


def _read(path: str) -> str | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return text or None


def _sleeping_client(c: Cluster, node: str) -> subprocess.Popen[bytes]:
    client = subprocess.Popen(
        [HATCHWAY, "start-session", "--target", node],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=c.env(),
    )  # fmt: skip
    assert client.stdin is not None
    client.stdin.write(b"sleep 1000\n")
    client.stdin.flush()
    wait_for(
        lambda: any(s["Target"] == node and s["Status"] == "Connected"
                    for s in c.sessions("Active")),
        20, what="a connected session",
    )  # fmt: skip
    return client


def test_agent_sigterm_ends_its_sessions_and_exits(quick_cluster: Cluster) -> None:
    c = quick_cluster
    node, state = c.register("b")
    agent = c.start_agent(state, node)
    client = _sleeping_client(c, node)
    try:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(15) == 0
        assert client.wait(30) == 255  # the session ended under it, with no exit status
        assert client.stderr is not None
        assert b"ended" in client.stderr.read()
        ended = [s for s in c.sessions("History") if s["Target"] == node]
        assert ended and ended[0]["Status"] == "Terminated"
    finally:
        reap(client)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_session_survives_a_server_restart(tmp_path: Path, how: signal.Signals) -> None:
    """Output streams while the server is stopped and started again on the same port: the
    client resumes, the agent re-dials, and every line arrives exactly once (docs/protocol.md
    §9.7)."""
    c = Cluster(tmp_path)
    c.start_server()
    try:
        node, state = c.register("r")
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
        wait_for(lambda: b"tick-15" in out.read_bytes(), 30, what="output to stream")
        assert c.server_proc is not None
        c.server_proc.send_signal(how)
        c.server_proc.wait(15)
        c.start_server()  # same data directory, same port
        assert client.wait(120) == 0, err.read_text()
        ticks = re.findall(r"(?m)(?:^|\r)tick-(\d+)\r?$", out.read_text(errors="replace"))
        assert ticks == [str(i) for i in range(1, 61)]
        (done,) = [s for s in c.sessions("History") if s["Target"] == node]
        assert done["Status"] == "Terminated" and done["ExitCode"] == 0
    finally:
        c.close()


def test_the_client_hears_at_once_when_the_node_dies(quick_cluster: Cluster) -> None:
    c = quick_cluster
    node, state = c.register("k")
    agent = c.start_agent(state, node)
    client = _sleeping_client(c, node)
    try:
        agent.kill()  # no goodbye: the server sees the control channel drop
        assert client.stderr is not None
        said = _read_until(client.stderr, b"the node went away", 10)
        assert b"hatchway: the node went away; waiting up to 1 s for it to come back" in said
        assert client.wait(30) == 255
        rest = said + client.stderr.read()
        assert b"the node did not come back within 1 s" in rest
    finally:
        reap(client)


def _read_until(stream: IO[bytes], wanted: bytes, timeout: float) -> bytes:
    """Read ``stream`` until ``wanted`` appears (or fail after ``timeout`` seconds)."""
    got = b""
    end = time.monotonic() + timeout
    fd = stream.fileno()
    while wanted not in got:
        left = end - time.monotonic()
        assert left > 0, f"no {wanted!r} within {timeout} s; got {got!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"stream closed before {wanted!r}; got {got!r}"
            got += chunk
    return got
