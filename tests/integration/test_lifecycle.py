"""Session ends the server decides: a client that vanishes and does not come back."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

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


def test_server_restart_ends_sessions_it_can_no_longer_relay(quick_cluster: Cluster) -> None:
    c = quick_cluster
    node, state = c.register("c")
    c.start_agent(state, node)
    client = _sleeping_client(c, node)
    try:
        assert c.server_proc is not None
        c.server_proc.kill()  # no clean shutdown: the database still says Connected
        c.server_proc.wait(10)
        c.start_server("--disconnect-grace", "1")
        history = [s for s in c.sessions("History") if s["Target"] == node]
        assert history and history[0]["Details"] == "the server restarted"
        assert client.wait(60) == 255  # ResumeSession told it the session has ended
        wait_for(lambda: c.node_status(node) == "Online", 30, what="agent back Online")
    finally:
        reap(client)


def test_redial_with_the_same_token_keeps_the_session(quick_cluster: Cluster) -> None:
    """AWS's plugin re-dials with its token: the newer connection replaces the older one, and
    the session must neither pause nor expire (grace is 1 s here)."""
    import asyncio

    from tests.integration.bad_input import (
        api_client,
        client_ssl,
        closed_as,
        dial,
        drain,
        open_accepted,
    )

    c = quick_cluster
    node, state = c.register("d")
    c.start_agent(state, node)
    api = api_client(c)
    start = api.call("StartSession", {"Target": node})

    async def scenario() -> tuple[int | None, str]:
        ctx = client_ssl(c)
        first = await dial(start["StreamUrl"], ctx)
        await open_accepted(first, start["TokenValue"])
        second = await dial(start["StreamUrl"], ctx)
        await open_accepted(second, start["TokenValue"])
        await drain(first)  # the older connection is closed by the server
        await asyncio.sleep(2.5)  # longer than the grace: nothing may expire
        assert second.close_code is None
        active = await asyncio.to_thread(
            api.call, "DescribeSessions",
            {"State": "Active", "Filters": [{"key": "SessionId", "value": start["SessionId"]}]},
        )  # fmt: skip
        assert [s["Status"] for s in active["Sessions"]] == ["Connected"]
        await second.close()
        return closed_as(first)

    code, _reason = asyncio.run(scenario())
    assert code == 4000

    # now that the client is really gone, the grace runs out as it should
    def ended() -> list[dict]:
        return [s for s in c.sessions("History") if s["SessionId"] == start["SessionId"]]

    done = wait_for(ended, 20, what="the session to end after its client left")
    assert done[0]["Status"] == "Terminated"
    assert done[0]["Details"] == "the client did not reconnect"
