"""Bad input: a clear one-line error, the offending request or connection refused, nothing else
disturbed.

Each test does one bad thing through the real CLI (or, for the data channel, through a real
WebSocket), checks how it was refused, and then checks that the shared node is still Online and
that a normal piped shell session through the CLI still prints ``ok-2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hatchway.auth.agentkey import generate_private_key, save_private_key
from hatchway.auth.sigv4 import Credentials
from hatchway.auth.tokens import hash_token, new_token
from hatchway.client.config import load_profile
from hatchway.client.session import ClientSession
from hatchway.protocol.events import StreamData
from hatchway.protocol.frames import MessageType, PayloadType, encode_frame, make_frame, peek_header
from hatchway.protocol.handshake import Extensions, HandshakeRequest, answer_request
from hatchway.protocol.payloads import OpenDataChannelInput
from hatchway.protocol.reliability import Endpoint, Role
from hatchway.transport.apiclient import ApiClient, ApiError
from tests.fakes import FakeClock
from tests.integration.cluster import HATCHWAY, Cluster, free_port, wait_for

MiB = 1024 * 1024
OK_INPUT = b"echo ok-$((1+1))\nexit\n"
JSON_TYPE = "application/x-amz-json-1.1"
CLOSE_POLICY = 1008
CLOSE_BAD_DATA = 1007
CLOSE_TOO_BIG = 1009
T = TypeVar("T")


# ---- helpers ------------------------------------------------------------------------------


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single ``hatchway: ...`` line a failed command printed (asserting that shape)."""
    err = result.stderr.decode(errors="replace")
    assert result.returncode != 0, f"expected a failure, got: {result.stdout!r} {err}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("hatchway: "), lines[0]
    return lines[0]


def assert_undisturbed(cluster: Cluster, node: str) -> None:
    """The shared node is still Online and a normal piped shell still works."""
    assert cluster.node_status(node) == "Online"
    result = cluster.cli("start-session", "--target", node, input=OK_INPUT, check=False)
    assert b"ok-2" in result.stdout, result.stderr.decode(errors="replace")
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def api_client(cluster: Cluster) -> ApiClient:
    """The CLI's own API client, signed with the admin profile."""
    p = load_profile(str(cluster.profile), "default")
    return ApiClient(
        p.endpoint,
        region=p.region,
        credentials=Credentials(p.access_key_id, p.secret_access_key),
        ca_file=p.ca_file,
    )


def write_profile(cluster: Cluster, path: Path, **overrides: str) -> Path:
    """A copy of the admin profile with some fields replaced."""
    p = load_profile(str(cluster.profile), "default")
    table = {
        "endpoint": p.endpoint,
        "ca_file": str(p.ca_file),
        "region": p.region,
        "access_key_id": p.access_key_id,
        "secret_access_key": p.secret_access_key,
        **overrides,
    }
    path.write_text(
        "[profiles.default]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    )
    return path


def activation_info(cluster: Cluster, activation_id: str) -> dict[str, Any]:
    listed = api_client(cluster).call(
        "DescribeActivations",
        {"Filters": [{"FilterKey": "ActivationIds", "FilterValues": [activation_id]}]},
    )["ActivationList"]
    assert len(listed) == 1, listed
    return listed[0]


def nodes_of(cluster: Cluster, activation_id: str) -> list[str]:
    data = cluster.cli_json("nodes")
    return [
        n["InstanceId"]
        for n in data["InstanceInformationList"]
        if n["ActivationId"] == activation_id
    ]


def sessions_on(cluster: Cluster, target: str) -> list[dict[str, Any]]:
    return [
        s
        for state in ("Active", "History")
        for s in cluster.sessions(state)
        if s["Target"] == target
    ]


def register_args(cluster: Cluster, aid: str, code: str, state: Path, *trust: str) -> list[str]:
    trust = trust or ("--ca-file", str(cluster.ca_file))
    return [
        "agent", "register", "--endpoint", cluster.endpoint, *trust,
        "--activation-id", aid, "--activation-code", code, "--state-dir", str(state),
    ]  # fmt: skip


def run_async(make: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await make()

    return asyncio.run(bounded())


def client_ssl(cluster: Cluster) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cluster.ca_file))


def open_message(token: str) -> str:
    return (
        OpenDataChannelInput(
            token_value=token,
            request_id=str(uuid.uuid4()),
            client_id=str(uuid.uuid4()),
            client_version="1.2.0.0",
        )
        .to_json()
        .decode()
    )


async def dial(url: str, ctx: ssl.SSLContext | None) -> ClientConnection:
    return await connect(url, ssl=ctx, max_size=None, compression=None, close_timeout=5)


def closed_as(ws: ClientConnection) -> tuple[int | None, str]:
    """The close code and reason the server sent (1006 and "" if it sent none)."""
    return ws.close_code, ws.close_reason or ""


async def drain(ws: ClientConnection) -> list[str | bytes]:
    """Everything the server sends until it closes the connection."""
    got: list[str | bytes] = []
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            got.append(message)
    return got


async def open_accepted(ws: ClientConnection, token: str) -> bytes:
    """Send the OpenDataChannelInput and wait for the server's first frame (proof of joining)."""
    await ws.send(open_message(token))
    first = await ws.recv()
    assert isinstance(first, bytes), first
    peek_header(first)  # a well-formed frame
    return first


def run_shell(api: ApiClient, start: dict[str, Any]) -> tuple[int, bytes]:
    """Drive a session's data channel with the CLI's own client, stdin a pipe, stdout a file."""
    r, w = os.pipe()
    os.write(w, OK_INPUT)
    os.close(w)
    try:
        with tempfile.TemporaryFile() as out:
            session = ClientSession.from_start(api, start, stdin_fd=r, stdout_fd=out.fileno())
            status = run_async(session.run)
            out.seek(0)
            return status, out.read()
    finally:
        os.close(r)


def terminate(api: ApiClient, session_id: str) -> None:
    api.call("TerminateSession", {"SessionId": session_id})


@contextlib.contextmanager
def started_session(cluster: Cluster, node: str) -> Iterator[tuple[ApiClient, dict[str, Any]]]:
    api = api_client(cluster)
    start = api.call("StartSession", {"Target": node})
    try:
        yield api, start
    finally:
        terminate(api, start["SessionId"])


# ---- activations --------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["code", "activation id"])
def test_wrong_activation_is_refused_and_leaves_the_activation_usable(
    cluster: Cluster, node: str, tmp_path: Path, wrong: str
) -> None:
    aid, code = cluster.activation()
    bad_aid, bad_code = (aid, code[::-1]) if wrong == "code" else (str(uuid.uuid4()), code)
    state = tmp_path / "agent"
    result = cluster.cli(*register_args(cluster, bad_aid, bad_code, state), check=False)
    line = one_line_error(result)
    assert line == "hatchway: InvalidActivation: Activation ID or code is not valid."
    assert not (state / "registration.json").exists()
    assert activation_info(cluster, aid)["RegistrationsCount"] == 0
    assert nodes_of(cluster, aid) == []
    # The failed attempt burned nothing: the right code still registers, in the same directory.
    ok = cluster.cli(*register_args(cluster, aid, code, state))
    assert re.fullmatch(r"mi-[0-9a-f]{17}", ok.stdout.decode().strip())
    assert_undisturbed(cluster, node)


def test_used_up_activation_is_refused(cluster: Cluster, node: str, tmp_path: Path) -> None:
    aid, code = cluster.activation("--registration-limit", "1")
    cluster.cli(*register_args(cluster, aid, code, tmp_path / "first"))
    result = cluster.cli(*register_args(cluster, aid, code, tmp_path / "second"), check=False)
    line = one_line_error(result)
    assert line.startswith("hatchway: InvalidActivation: ")
    assert "registration limit" in line
    assert not (tmp_path / "second" / "registration.json").exists()
    assert activation_info(cluster, aid)["RegistrationsCount"] == 1
    assert len(nodes_of(cluster, aid)) == 1
    assert_undisturbed(cluster, node)


def test_expired_activation_is_refused(cluster: Cluster, node: str, tmp_path: Path) -> None:
    aid, code = cluster.activation("--expires-in", "2s")
    assert activation_info(cluster, aid)["Expired"] is False
    wait_for(lambda: activation_info(cluster, aid)["Expired"], 15, 0.1, "activation expired")
    result = cluster.cli(*register_args(cluster, aid, code, tmp_path / "late"), check=False)
    line = one_line_error(result)
    assert line == "hatchway: InvalidActivation: Activation has expired."
    assert not (tmp_path / "late" / "registration.json").exists()
    assert activation_info(cluster, aid)["RegistrationsCount"] == 0
    assert nodes_of(cluster, aid) == []
    assert_undisturbed(cluster, node)


# ---- TLS pinning --------------------------------------------------------------------------


def ca_fingerprint(cluster: Cluster) -> str:
    der = ssl.PEM_cert_to_DER_cert(cluster.ca_file.read_text())
    return hashlib.sha256(der).hexdigest()


def test_ca_fingerprint_mismatch_is_refused(cluster: Cluster, node: str, tmp_path: Path) -> None:
    aid, code = cluster.activation()
    right = ca_fingerprint(cluster)
    wrong = hashlib.sha256(b"some other CA").hexdigest()
    state = tmp_path / "agent"
    result = cluster.cli(
        *register_args(cluster, aid, code, state, "--ca-fingerprint", wrong), check=False
    )
    line = one_line_error(result)
    assert line.startswith("hatchway: TLS fingerprint mismatch")
    assert right in line and wrong in line
    assert not (state / "ca.pem").exists()  # nothing pinned
    assert not (state / "registration.json").exists()
    assert activation_info(cluster, aid)["RegistrationsCount"] == 0  # never got to register
    assert_undisturbed(cluster, node)


def test_right_ca_fingerprint_registers_and_the_agent_connects(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    logged = re.findall(
        r"CA SHA-256 fingerprint: ([0-9a-f:]+)", (cluster.root / "server.log").read_text()
    )
    assert logged, "the server prints its CA fingerprint"
    assert logged[-1].replace(":", "") == ca_fingerprint(cluster)
    aid, code = cluster.activation()
    state = tmp_path / "agent"
    result = cluster.cli(*register_args(cluster, aid, code, state, "--ca-fingerprint", logged[-1]))
    node_id = result.stdout.decode().strip()
    assert re.fullmatch(r"mi-[0-9a-f]{17}", node_id)
    pinned = ssl.PEM_cert_to_DER_cert((state / "ca.pem").read_text())
    assert pinned == ssl.PEM_cert_to_DER_cert(cluster.ca_file.read_text())
    # The agent verifies the server against the pinned CA from then on.
    proc = cluster.start_agent(state, node_id)
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    assert_undisturbed(cluster, node)


def test_untrusted_server_certificate_is_refused(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    other_ca = _other_ca(tmp_path / "other")
    profile = write_profile(cluster, tmp_path / "p.toml", ca_file=str(other_ca))
    line = one_line_error(cluster.cli("--config", str(profile), "nodes", check=False))
    assert line.startswith(f"hatchway: TLS verification of {cluster.endpoint} failed")
    assert_undisturbed(cluster, node)


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
        lambda state: shutil.copyfile(_other_ca(state.parent / "other-ca"), state / "ca.pem"),
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


def _other_ca(directory: Path) -> Path:
    from hatchway.server.certificates import ensure_tls_identity

    return ensure_tls_identity(directory).ca_cert_path


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
        [str(HATCHWAY), "agent", "run", "--state-dir", str(state)],
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
        [str(HATCHWAY), "agent", "run", "--state-dir", str(tmp_path / "nothing")],
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
    from hatchway.agent.facts import heartbeat
    from hatchway.agent.state import AgentState
    from hatchway.protocol.control import control_frame

    node_id, state_dir = cluster.register(f"control-{bad}")
    state = AgentState.load(state_dir)

    async def attempt() -> tuple[int | None, str]:
        ws = await Dialer(state).connect(f"/v1/control-channel/{node_id}?role=subscribe")
        try:
            if bad == "oversize":
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(b"\x00" * (MiB + 1))
                await drain(ws)
                return closed_as(ws)
            await ws.send(b"\xff" * 200)
            # The bad frame is dropped; the channel still carries the node's heartbeats.
            beat = heartbeat(state.endpoint, 0).to_json()
            await ws.send(control_frame(MessageType.AGENT_HEARTBEAT, beat, now=time.time()))
            await asyncio.to_thread(
                wait_for, lambda: cluster.node_status(node_id) == "Online", 15, 0.1, "Online"
            )
            return None, ""
        finally:
            await ws.close()

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


# ---- the server and the client's configuration --------------------------------------------


@pytest.mark.parametrize("command", ["nodes", "start-session", "sessions"])
def test_unreachable_server_is_a_clear_error(
    cluster: Cluster, node: str, tmp_path: Path, command: str
) -> None:
    closed = f"https://127.0.0.1:{free_port()}"
    profile = write_profile(cluster, tmp_path / "p.toml", endpoint=closed)
    args = ["start-session", "--target", node] if command == "start-session" else [command]
    result = cluster.cli("--config", str(profile), *args, input=OK_INPUT, check=False)
    assert one_line_error(result) == (
        f"hatchway: cannot reach the server at {closed}: Connection refused"
    )
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize("trust", ["--ca-file", "--ca-fingerprint"])
def test_register_with_unreachable_server_is_a_clear_error(
    cluster: Cluster, node: str, tmp_path: Path, trust: str
) -> None:
    aid, code = cluster.activation()
    closed = f"https://127.0.0.1:{free_port()}"
    value = str(cluster.ca_file) if trust == "--ca-file" else ca_fingerprint(cluster)
    args = register_args(cluster, aid, code, tmp_path / "agent", trust, value)
    args[args.index("--endpoint") + 1] = closed
    line = one_line_error(cluster.cli(*args, check=False))
    assert closed in line and "Connection refused" in line
    assert activation_info(cluster, aid)["RegistrationsCount"] == 0
    assert_undisturbed(cluster, node)


def test_wrong_secret_is_a_signature_error(cluster: Cluster, node: str, tmp_path: Path) -> None:
    profile = write_profile(cluster, tmp_path / "p.toml", secret_access_key="x" * 40)
    line = one_line_error(cluster.cli("--config", str(profile), "nodes", check=False))
    assert line.startswith("hatchway: InvalidSignatureException: ")
    assert "signature" in line.lower()
    assert_undisturbed(cluster, node)


def test_unknown_access_key_is_refused(cluster: Cluster, node: str, tmp_path: Path) -> None:
    profile = write_profile(cluster, tmp_path / "p.toml", access_key_id="HWAK0000000000000000")
    line = one_line_error(cluster.cli("--config", str(profile), "nodes", check=False))
    assert line.startswith("hatchway: UnrecognizedClientException: ")
    assert_undisturbed(cluster, node)


def test_wrong_region_is_a_signature_error(cluster: Cluster, node: str, tmp_path: Path) -> None:
    profile = write_profile(cluster, tmp_path / "p.toml", region="us-east-1")
    line = one_line_error(cluster.cli("--config", str(profile), "nodes", check=False))
    assert line.startswith("hatchway: InvalidSignatureException: ")
    assert "region" in line
    assert_undisturbed(cluster, node)


CORRUPT_CONFIGS: dict[str, tuple[bytes, str]] = {
    "not TOML": (b"[profiles.default\nendpoint = ", "cannot read"),
    "not UTF-8": (b"\xff\xfe\x00[profiles.default]\n", "cannot read"),
    "profiles not a table": (b"profiles = 3\n", "[profiles] must be a table"),
    "profile missing": (b"[profiles.other]\nendpoint = 'https://x'\n", "not found"),
    "secret missing": (
        b"[profiles.default]\nendpoint = 'https://127.0.0.1:1'\naccess_key_id = 'HWAK'\n",
        "lacks secret_access_key",
    ),
    "endpoint not http": (
        b"[profiles.default]\nendpoint = 'ftp://x'\naccess_key_id = 'a'\nsecret_access_key = 'b'\n",
        "endpoint must be an http(s) URL",
    ),
    "port out of range": (
        b"[profiles.default]\nendpoint = 'https://127.0.0.1:99999'\naccess_key_id = 'a'\n"
        b"secret_access_key = 'b'\n",
        "invalid port",
    ),
    "CA file missing": (
        b"[profiles.default]\nendpoint = 'https://127.0.0.1:1'\naccess_key_id = 'a'\n"
        b"secret_access_key = 'b'\nca_file = '/nonexistent/ca.pem'\n",
        "cannot load CA file",
    ),
}


@pytest.mark.parametrize("kind", list(CORRUPT_CONFIGS))
def test_corrupt_config_file_is_a_clear_error(
    cluster: Cluster, node: str, tmp_path: Path, kind: str
) -> None:
    content, expected = CORRUPT_CONFIGS[kind]
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    line = one_line_error(cluster.cli("--config", str(path), "nodes", check=False))
    assert expected in line
    assert_undisturbed(cluster, node)


def test_config_path_that_is_a_directory_is_a_clear_error(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    line = one_line_error(cluster.cli("--config", str(tmp_path), "nodes", check=False))
    assert line.startswith(f"hatchway: cannot read {tmp_path}")
    assert_undisturbed(cluster, node)


# ---- the data channel ---------------------------------------------------------------------

BAD_OPENS = ["random token", "empty token", "other session's token", "not JSON", "binary"]


@pytest.mark.parametrize("bad", BAD_OPENS)
def test_bad_open_is_closed_with_1008_and_the_session_still_works(
    cluster: Cluster, node: str, bad: str
) -> None:
    ctx = client_ssl(cluster)
    with (
        started_session(cluster, node) as (api, start),
        started_session(cluster, node) as (_, other),
    ):
        messages: dict[str, str | bytes] = {
            "random token": open_message(new_token()),
            "empty token": open_message(""),
            "other session's token": open_message(other["TokenValue"]),
            "not JSON": "{not json",
            "binary": open_message(start["TokenValue"]).encode(),
        }
        first = messages[bad]

        async def attempt() -> tuple[int | None, str, list[str | bytes]]:
            ws = await dial(start["StreamUrl"], ctx)
            await ws.send(first)
            got = await drain(ws)
            return (*closed_as(ws), got)

        code, reason, got = run_async(attempt)
        assert code == CLOSE_POLICY, (code, reason)
        assert reason
        assert got == []  # nothing of the session reached the intruder
        # Both sessions are untouched: their own tokens still open them.
        for session in (start, other):
            status, out = run_shell(api, session)
            assert b"ok-2" in out, out
            assert status == 0
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize("used_before", [False, True], ids=["unused", "used"])
def test_token_revoked_by_resume_is_closed_with_1008(
    cluster: Cluster, node: str, used_before: bool
) -> None:
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (api, start):
        old = start["TokenValue"]

        async def use_once() -> None:
            ws = await dial(start["StreamUrl"], ctx)
            await open_accepted(ws, old)
            await ws.close()

        if used_before:
            run_async(use_once)
        resumed = api.call("ResumeSession", {"SessionId": start["SessionId"]})
        assert resumed["TokenValue"] and resumed["TokenValue"] != old

        async def attempt() -> tuple[int | None, str, list[str | bytes]]:
            ws = await dial(start["StreamUrl"], ctx)
            await ws.send(open_message(old))
            got = await drain(ws)
            return (*closed_as(ws), got)

        code, reason, got = run_async(attempt)
        assert code == CLOSE_POLICY, (code, reason)
        assert "revoked" in reason
        assert got == []
        status, out = run_shell(api, resumed)
        assert b"ok-2" in out, out
        assert status == 0
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize(
    "frame", [b"not a frame", b"\xff" * 120, b"\x00" * 200], ids=["short", "bad-type", "zeros"]
)
def test_malformed_frame_closes_with_1007_and_the_session_resumes(
    cluster: Cluster, node: str, frame: bytes
) -> None:
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (api, start):

        async def attempt() -> tuple[int | None, str]:
            ws = await dial(start["StreamUrl"], ctx)
            await open_accepted(ws, start["TokenValue"])
            await ws.send(frame)
            await drain(ws)
            return closed_as(ws)

        code, reason = run_async(attempt)
        assert code == CLOSE_BAD_DATA, (code, reason)
        assert reason.startswith("malformed frame")
        active = {s["SessionId"]: s["Status"] for s in cluster.sessions("Active")}
        assert start["SessionId"] in active
        resumed = api.call("ResumeSession", {"SessionId": start["SessionId"]})
        assert resumed.get("TokenValue")
        status, out = run_shell(api, resumed)
        assert b"ok-2" in out, out
        assert status == 0
    assert_undisturbed(cluster, node)


def test_oversize_message_closes_with_1009_and_the_server_stays_healthy(
    cluster: Cluster, node: str
) -> None:
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (api, start):

        async def attempt() -> tuple[int | None, str]:
            ws = await dial(start["StreamUrl"], ctx)
            await open_accepted(ws, start["TokenValue"])
            with contextlib.suppress(ConnectionClosed):
                await ws.send(b"\x00" * (MiB + 1))
            await drain(ws)
            return closed_as(ws)

        code, reason = run_async(attempt)
        assert code == CLOSE_TOO_BIG, (code, reason)
        assert healthz(cluster) == {"status": "ok"}
        resumed = api.call("ResumeSession", {"SessionId": start["SessionId"]})
        status, out = run_shell(api, resumed)
        assert b"ok-2" in out, out
        assert status == 0
    assert_undisturbed(cluster, node)


BAD_PAYLOADS = {
    "Size not JSON": (PayloadType.SIZE, b"{garbage"),
    "Size of the wrong shape": (PayloadType.SIZE, b'["cols", 80]'),
    "Flag of 3 bytes": (PayloadType.FLAG, b"\x00\x00\x01"),
}


@pytest.mark.parametrize("kind", list(BAD_PAYLOADS))
def test_malformed_payload_is_dropped_and_the_stream_goes_on(
    cluster: Cluster, node: str, kind: str
) -> None:
    """A frame whose header is fine (so the gateway relays it) but whose payload is not.

    The agent receives it out of order together with the frame after it; it must drop the bad
    payload only, and still run the command that followed.
    """
    payload_type, payload = BAD_PAYLOADS[kind]
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (_, start):

        async def attempt() -> bytes:
            ws = await dial(start["StreamUrl"], ctx)
            await ws.send(open_message(start["TokenValue"]))
            endpoint = Endpoint(Role.CLIENT, wall_clock=time.time)
            output = bytearray()
            injected = False
            async for message in ws:
                assert isinstance(message, bytes)
                for event in endpoint.receive(message, now=time.time()):
                    if not isinstance(event, StreamData):
                        continue
                    if event.payload_type == PayloadType.HANDSHAKE_REQUEST:
                        request = HandshakeRequest.from_json(event.payload)
                        response, *_ = answer_request(request, supported=Extensions())
                        endpoint.send(
                            PayloadType.HANDSHAKE_RESPONSE, response.to_json(), now=time.time()
                        )
                    elif event.payload_type == PayloadType.HANDSHAKE_COMPLETE and not injected:
                        injected = True
                        seq = endpoint.next_sequence_number
                        # The command first (buffered: out of order), then the bad frame it
                        # waits for: both are delivered to the agent at once.
                        await ws.send(stream_frame(seq + 1, PayloadType.OUTPUT, OK_INPUT))
                        await ws.send(stream_frame(seq, payload_type, payload))
                    elif event.payload_type == PayloadType.OUTPUT:
                        output += event.payload
                        if b"ok-2" in output:
                            await ws.close()
                            return bytes(output)
                for frame in endpoint.data_to_send():
                    await ws.send(frame)
            raise AssertionError(f"the data channel closed ({ws.close_code}): {output!r}")

        output = run_async(attempt, timeout=15)
        assert b"ok-2" in output
    assert_undisturbed(cluster, node)


def stream_frame(seq: int, payload_type: int, payload: bytes) -> bytes:
    frame = make_frame(
        MessageType.INPUT_STREAM_DATA,
        payload,
        now=time.time(),
        sequence_number=seq,
        payload_type=payload_type,
    )
    return encode_frame(frame)


def test_publication_frames_reach_a_joined_client(cluster: Cluster, node: str) -> None:
    """The positive control for the tests above: a valid open is answered with frames."""
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (_, start):

        async def attempt() -> bytes:
            ws = await dial(start["StreamUrl"], ctx)
            first = await open_accepted(ws, start["TokenValue"])
            await ws.close()
            return first

        first = run_async(attempt)
        assert peek_header(first).message_type in (
            MessageType.START_PUBLICATION,
            MessageType.PAUSE_PUBLICATION,
            MessageType.OUTPUT_STREAM_DATA,
        )


# ---- API bodies ---------------------------------------------------------------------------


def healthz(cluster: Cluster) -> Any:
    with urllib.request.urlopen(
        cluster.endpoint + "/healthz", context=client_ssl(cluster), timeout=10
    ) as r:
        return json.load(r)


def post_raw(cluster: Cluster, body: bytes) -> tuple[int, Any, Any]:
    """POST an unsigned body to the API; (status, headers, decoded JSON body)."""
    request = urllib.request.Request(
        cluster.endpoint + "/",
        data=body,
        method="POST",
        headers={"Content-Type": JSON_TYPE, "X-Amz-Target": "AmazonSSM.DescribeSessions"},
    )
    try:
        with urllib.request.urlopen(request, context=client_ssl(cluster), timeout=30) as r:
            return r.status, r.headers, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def padded_body(size: int) -> bytes:
    head, tail = b'{"State": "Active", "Pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_api_body_over_1_mib_is_413_with_an_aws_error(cluster: Cluster, node: str) -> None:
    status, headers, body = post_raw(cluster, padded_body(MiB + 1))
    assert status == 413
    assert headers["Content-Type"].startswith(JSON_TYPE)
    assert headers["x-amzn-RequestId"]
    assert body["__type"] == "RequestEntityTooLargeException"
    assert str(MiB) in body["message"]
    # Exactly 1 MiB is within the limit: refused for its missing signature, not its size.
    status, _, body = post_raw(cluster, padded_body(MiB))
    assert status == 400
    assert body["__type"] == "MissingAuthenticationTokenException"
    # The CLI's client turns the 413 into an error with the AWS code.
    with pytest.raises(ApiError) as caught:
        api_client(cluster).call("DescribeSessions", {"State": "Active", "Pad": "x" * MiB})
    assert caught.value.code == "RequestEntityTooLargeException"
    assert caught.value.status == 413
    assert healthz(cluster) == {"status": "ok"}
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe\xfd"])
def test_malformed_api_body_is_a_serialization_error(
    cluster: Cluster, node: str, body: bytes
) -> None:
    status, _, answer = post_raw(cluster, body)
    assert status == 400
    assert answer["__type"] == "SerializationException"
    assert_undisturbed(cluster, node)


# ---- token expiry, with an injected clock --------------------------------------------------


def test_token_must_be_first_used_within_60_s(tmp_path: Path) -> None:
    """Against the server's real app (plain HTTP, loopback) built with a fake clock."""
    from aiohttp import web

    from hatchway.server.app import build_server
    from hatchway.server.settings import ServerSettings
    from hatchway.store.records import Session, SessionStatus

    clock = FakeClock()

    async def scenario() -> dict[str, tuple[int | None, str, bytes | None]]:
        settings = ServerSettings(data_dir=tmp_path / "server", tls=False, port=0)
        server = await build_server(settings, clock=clock)
        runner = web.AppRunner(server.app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"ws://127.0.0.1:{port}/v1/data-channel/"
        try:
            tokens: dict[str, str] = {}
            for name in ("late", "in-time"):
                token = new_token()
                session = Session(
                    session_id=f"admin-{name}",
                    target="mi-0123456789abcdef0",
                    status=SessionStatus.CONNECTING,
                    start_date=clock(),
                    end_date=None,
                    document_name="SSM-SessionManagerRunShell",
                    owner="arn:aws:iam::123456789012:user/admin",
                    reason="",
                    details="",
                    max_session_duration="",
                    parameters={},
                    run_as="",
                    exit_code=None,
                    bytes_in=0,
                    bytes_out=0,
                )
                await server.store.sessions.create(session, hash_token(token), clock())
                server.sessions.gateway.expect(session.session_id, session.target)
                tokens[name] = token

            async def try_open(name: str) -> tuple[int | None, str, bytes | None]:
                ws = await dial(f"{base}admin-{name}?role=publish_subscribe", None)
                await ws.send(open_message(tokens[name]))
                try:
                    first = await ws.recv()
                except ConnectionClosed:
                    return (*closed_as(ws), None)
                await ws.close()
                assert isinstance(first, bytes)
                return (*closed_as(ws), first)

            results = {}
            clock.advance(59)
            results["in-time"] = await try_open("in-time")
            clock.advance(2)  # 61 s after issue
            results["late"] = await try_open("late")
            clock.advance(3600)  # once used, a token lasts for the session's life
            results["in-time, reused later"] = await try_open("in-time")
            return results
        finally:
            await runner.cleanup()
            await server.close()

    results = run_async(scenario)
    code, reason, frame = results["late"]
    assert (code, reason, frame) == (CLOSE_POLICY, "token expired before first use", None)
    for key in ("in-time", "in-time, reused later"):
        code, reason, frame = results[key]
        assert frame is not None, (key, code, reason)
        assert peek_header(frame).message_type == MessageType.PAUSE_PUBLICATION  # no agent yet
