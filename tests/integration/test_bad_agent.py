"""The agent side: damaged agent state, a bad control-channel frame, sessions to targets
that are not connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from hatchway.auth.agentkey import generate_private_key, save_private_key
from hatchway.protocol.frames import MessageType
from tests.integration.bad_input import (
    CLOSE_TOO_BIG,
    OK_INPUT,
    MiB,
    assert_undisturbed,
    closed_as,
    drain,
    healthz,
    one_line_error,
    other_ca_file,
    run_async,
    sessions_on,
)
from tests.integration.cluster import HATCHWAY, RUN_AS, Cluster, wait_for

# ---- the agent's own state ----------------------------------------------------------------


def tamper_registration(state: Path, **changes: str) -> None:
    path = state / "registration.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


AGENT_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "another key (bad signature)": (
        lambda state: save_private_key(_fresh(state / "private-key.pem"), generate_private_key()),
        "the server refused this node: ",
    ),
    "garbage key": (
        lambda state: (state / "private-key.pem").write_text("garbage\n"),
        "is corrupt",
    ),
    "registration not JSON": (
        lambda state: (state / "registration.json").write_text("{"),
        "registration.json is damaged",
    ),
    "registration a list": (
        lambda state: (state / "registration.json").write_text("[1]"),
        "registration.json is damaged",
    ),
    "endpoint port out of range": (
        lambda state: tamper_registration(state, endpoint="https://127.0.0.1:99999"),
        "registration.json is damaged",
    ),
    "pinned CA of another server": (
        lambda state: shutil.copyfile(other_ca_file(state.parent / "other-ca"), state / "ca.pem"),
        "TLS verification failed",
    ),
    "wrong region": (
        lambda state: tamper_registration(state, region="us-east-1"),
        "region",
    ),
    "unknown node id": (
        lambda state: tamper_registration(state, node_id="mi-0000000000000000a"),
        "UnrecognizedClientException",
    ),
}


def _fresh(path: Path) -> Path:
    path.unlink()
    return path


@pytest.mark.parametrize("damage", list(AGENT_DAMAGE))
def test_agent_with_damaged_state_exits_with_a_clear_error(
    cluster: Cluster, node: str, damage: str
) -> None:
    damaged, state = cluster.register(f"damaged-{list(AGENT_DAMAGE).index(damage)}")
    spoil, expected = AGENT_DAMAGE[damage]
    spoil(state)
    result = subprocess.run(
        [str(HATCHWAY), "agent", "run", "--state-dir", str(state), "--run-as-default", RUN_AS],
        capture_output=True,
        env=cluster.env(),
        timeout=60,
    )
    line = one_line_error(result)
    assert expected in line
    assert cluster.node_status(damaged) == "ConnectionLost"  # it never got on
    assert_undisturbed(cluster, node)


def test_agent_without_state_exits_with_a_clear_error(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            str(HATCHWAY),
            "agent",
            "run",
            "--state-dir",
            str(tmp_path / "nothing"),
            "--run-as-default",
            RUN_AS,
        ],
        capture_output=True,
        env=cluster.env(),
        timeout=60,
    )
    assert "holds no registration" in one_line_error(result)
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize("bad", ["malformed", "oversize"])
def test_bad_control_channel_frame_disturbs_nothing(cluster: Cluster, node: str, bad: str) -> None:
    """A node's own (correctly signed) control channel sends a bad frame."""
    from hatchway.agent.dialer import Dialer
    from hatchway.agent.facts import NodeFacts
    from hatchway.agent.state import AgentState
    from hatchway.protocol.control import control_frame

    node_id, state_dir = cluster.register(f"control-{bad}")
    state = AgentState.load(state_dir)

    async def attempt() -> tuple[int | None, str]:
        dialer = Dialer(state)  # its HTTP session is closed when the attempt ends
        try:
            ws = await dialer.connect(f"/v1/control-channel/{node_id}?role=subscribe")
            try:
                if bad == "oversize":
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(b"\x00" * (MiB + 1))
                    await drain(ws)
                    return closed_as(ws)
                await ws.send(b"\xff" * 200)
                # The bad frame is dropped; the channel still carries the node's heartbeats.
                beat = NodeFacts(state.endpoint).collect(()).to_json()
                await ws.send(control_frame(MessageType.AGENT_HEARTBEAT, beat, now=time.time()))
                await asyncio.to_thread(
                    wait_for, lambda: cluster.node_status(node_id) == "Online", 15, 0.1, "Online"
                )
                return None, ""
            finally:
                await ws.close()
        finally:
            await dialer.close()

    code, reason = run_async(attempt)
    if bad == "oversize":
        # The server answers 1009 and closes at once; with ~1 MiB of our message still unread
        # its kernel may reset the connection, and the reset can overtake the close frame on
        # the agent's side (1006). Either way the connection was refused.
        assert code in (CLOSE_TOO_BIG, 1006), (code, reason)
        assert healthz(cluster) == {"status": "ok"}
    # The node's real agent still gets on, and the shared node is untouched.
    proc = cluster.start_agent(state_dir, node_id)
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    assert_undisturbed(cluster, node)


# ---- targets ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["mi-0123456789abcdef0", "i-not-a-node"])
def test_unknown_target_is_not_connected(cluster: Cluster, node: str, target: str) -> None:
    result = cluster.cli("start-session", "--target", target, input=OK_INPUT, check=False)
    assert one_line_error(result) == f"hatchway: TargetNotConnected: {target} is not connected."
    assert b"ok-2" not in result.stdout
    assert sessions_on(cluster, target) == []
    assert_undisturbed(cluster, node)


def test_registered_node_without_agent_is_not_connected(cluster: Cluster, node: str) -> None:
    offline, _ = cluster.register("never-run")
    assert cluster.node_status(offline) == "ConnectionLost"
    result = cluster.cli("start-session", "--target", offline, input=OK_INPUT, check=False)
    assert one_line_error(result) == f"hatchway: TargetNotConnected: {offline} is not connected."
    assert sessions_on(cluster, offline) == []
    assert_undisturbed(cluster, node)


def test_node_whose_agent_stopped_is_not_connected(cluster: Cluster, node: str) -> None:
    stopped, state = cluster.register("stopped")
    proc = cluster.start_agent(state, stopped)
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    wait_for(lambda: cluster.node_status(stopped) != "Online", 15, what="node offline")
    result = cluster.cli("start-session", "--target", stopped, input=OK_INPUT, check=False)
    assert one_line_error(result) == f"hatchway: TargetNotConnected: {stopped} is not connected."
    assert sessions_on(cluster, stopped) == []
    assert_undisturbed(cluster, node)
