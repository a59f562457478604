"""End-to-end session encryption with the ``kmsKeyId`` preference (docs/protocol.md §7.9): a
real server, agent and CLI, with every byte the server sends and receives captured.

The server listens without TLS on loopback (``--no-tls``) behind a recording TCP proxy that the
agent and the CLI use as their endpoint, so the capture holds exactly the WebSocket frames the
gateway relays: the output it passes to the client and the input it passes to the agent. The
test decodes those WebSocket messages and their data-channel frames (nothing of production
code is hooked or changed). A first session without ``kmsKeyId`` shows that the capture does
see plaintext; the encrypted one must show none, while the user sees the output as usual.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.cluster import HATCHWAY, Cluster, wait_for

TYPED = b'echo sec""ret-$((6*7)); echo done\nexit\n'
TYPED_MARK = b'sec""ret'  # what the user typed, as typed
OUTPUT_MARK = b"secret-42"  # what only the shell's output has


@dataclass
class Connection:
    up: bytearray = field(default_factory=bytearray)  # to the server
    down: bytearray = field(default_factory=bytearray)  # from the server
    sockets: list[socket.socket] = field(default_factory=list)
    open_pipes: int = 2


class CapturingProxy:
    """Forwards 127.0.0.1:<port> to the server and keeps every byte, per connection."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self.connections: list[Connection] = []
        self._all: list[Connection] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
            except OSError:
                return
            try:
                far = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                near.close()
                continue
            conn = Connection(sockets=[near, far])
            with self._lock:
                self.connections.append(conn)
                self._all.append(conn)
            for src, dst, into in ((near, far, conn.up), (far, near, conn.down)):
                threading.Thread(
                    target=self._pipe, args=(src, dst, into, conn), daemon=True
                ).start()

    def _pipe(
        self, src: socket.socket, dst: socket.socket, into: bytearray, conn: Connection
    ) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    into += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self._lock:
                conn.open_pipes -= 1
                done = conn.open_pipes == 0
            if done:
                for sock in conn.sockets:
                    sock.close()

    def reset(self) -> None:
        with self._lock:
            self.connections = []

    def snapshot(self) -> list[tuple[bytes, bytes]]:
        with self._lock:
            return [(bytes(c.up), bytes(c.down)) for c in self.connections]

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            every = [sock for conn in self._all for sock in conn.sockets]
        for sock in every:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def websocket_messages(stream: bytes) -> list[bytes]:
    """The binary messages of one direction of a WebSocket connection (after its HTTP
    upgrade), unmasked and reassembled (RFC 6455 §5.2)."""
    head_end = stream.find(b"\r\n\r\n")
    if head_end < 0:
        return []
    data, pos = stream[head_end + 4 :], 0
    messages: list[bytes] = []
    partial = bytearray()
    while pos + 2 <= len(data):
        first, second = data[pos], data[pos + 1]
        assert not first & 0x40, "a compressed WebSocket frame: the capture would see nothing"
        opcode, length, pos = first & 0x0F, second & 0x7F, pos + 2
        if length == 126:
            (length,) = struct.unpack(">H", data[pos : pos + 2])
            pos += 2
        elif length == 127:
            (length,) = struct.unpack(">Q", data[pos : pos + 8])
            pos += 8
        mask = b""
        if second & 0x80:
            mask, pos = data[pos : pos + 4], pos + 4
        payload = bytearray(data[pos : pos + length])
        if len(payload) < length:
            break  # cut off when the capture was taken
        pos += length
        if mask:
            for i in range(len(payload)):
                payload[i] ^= mask[i % 4]
        if opcode in (0x0, 0x2):
            partial += payload
            if first & 0x80:
                messages.append(bytes(partial))
                partial = bytearray()
    return messages


@dataclass(frozen=True)
class Frame:
    message_type: str
    payload_type: int
    payload: bytes


def data_channel_frames(capture: list[tuple[bytes, bytes]]) -> list[Frame]:
    """Every data-channel frame (docs/protocol.md §4.1) in the WebSocket connections of the
    capture, both directions."""
    frames = []
    for up, down in capture:
        if b" 101 " not in down.split(b"\r\n", 1)[0]:
            continue  # an API call, not a WebSocket
        for message in websocket_messages(up) + websocket_messages(down):
            if len(message) < 120 or message[:4] != b"\x00\x00\x00\x74":
                continue
            kind = message[4:36].decode("ascii").strip(" \x00")
            (payload_type,) = struct.unpack(">I", message[112:116])
            frames.append(Frame(kind, payload_type, message[120:]))
    return frames


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, CapturingProxy, str, Path]]:
    root = tmp_path_factory.mktemp("e2e")
    cluster = Cluster(root, tls=False)
    cluster.start_server()
    proxy = CapturingProxy(cluster.port)
    via = f"http://127.0.0.1:{proxy.port}"
    try:
        # The CLI and the agent reach the server only through the proxy.
        profile = root / "via-proxy.toml"
        profile.write_text(cluster.profile.read_text().replace(cluster.endpoint, via))
        aid, code = cluster.activation()
        state = root / "agent-e2e"
        node = cluster.cli(
            "agent", "register", "--endpoint", via, "--activation-id", aid,
            "--activation-code", code, "--state-dir", str(state),
        ).stdout.decode().strip()  # fmt: skip
        cluster.start_agent(state, node)
        yield cluster, proxy, node, profile
    finally:
        proxy.close()
        cluster.close()


def run(
    cluster: Cluster, profile: Path, *args: str, input: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    env = cluster.env()
    env["HATCHWAY_CONFIG"] = str(profile)
    return subprocess.run([HATCHWAY, *args], input=input, capture_output=True, env=env, timeout=90)


def session_id_of(cluster: Cluster, before: set[str]) -> str:
    history = cluster.cli_json("sessions", "--state", "History")["Sessions"]
    new = [s["SessionId"] for s in history if s["SessionId"] not in before]
    assert len(new) == 1, new
    return str(new[0])


def history_ids(cluster: Cluster) -> set[str]:
    return {s["SessionId"] for s in cluster.cli_json("sessions", "--state", "History")["Sessions"]}


def session_of(cluster: Cluster, session_id: str) -> dict:
    return json.loads(cluster.cli("sessions", "get", session_id, "--output", "json").stdout)


def finished(cluster: Cluster, session_id: str) -> dict:
    def ended() -> dict | None:
        found = session_of(cluster, session_id)
        found = found["Sessions"][0] if "Sessions" in found else found
        return found if found["Status"] in ("Terminated", "Failed") else None

    return wait_for(ended, 30, what=f"{session_id} ended")


def test_without_kms_the_capture_sees_the_plaintext(world) -> None:
    """The control: the same session unencrypted is readable in the capture, so the capture
    (not a compression or a framing it misses) is what the encrypted test relies on."""
    cluster, proxy, node, profile = world
    proxy.reset()
    result = run(cluster, profile, "start-session", "--target", node, input=TYPED)
    assert result.returncode == 0, result.stderr.decode()
    assert OUTPUT_MARK in result.stdout
    frames = data_channel_frames(proxy.snapshot())
    payloads = b"".join(f.payload for f in frames)
    assert OUTPUT_MARK in payloads and TYPED_MARK in payloads


def test_kms_key_encrypts_the_session_end_to_end(world) -> None:
    cluster, proxy, node, profile = world
    key = cluster.cli_json("kms", "create-key", "--alias", "e2e")["KeyMetadata"]
    cluster.cli("preferences", "set", "kmsKeyId=alias/e2e")
    before = history_ids(cluster)
    proxy.reset()

    result = run(cluster, profile, "start-session", "--target", node, input=TYPED)

    assert result.returncode == 0, result.stderr.decode()
    assert OUTPUT_MARK in result.stdout and b"done" in result.stdout  # the user sees it all
    assert b"This session is encrypted using AWS KMS." in result.stderr
    capture = proxy.snapshot()
    frames = data_channel_frames(capture)
    assert frames, "the capture holds the session's frames"
    everything = b"".join(up + down for up, down in capture)
    assert OUTPUT_MARK not in everything and TYPED_MARK not in everything
    assert b"done" not in b"".join(f.payload for f in frames if f.payload_type == 1)
    # The stream's Output frames went both ways sealed (nonce + tag: at least 28 bytes).
    outputs = [f for f in frames if f.payload_type == 1]
    assert {f.message_type for f in outputs} == {"input_stream_data", "output_stream_data"}
    assert all(len(f.payload) >= 28 for f in outputs)
    # The handshake asked for it with the key's ARN; the challenge ran.
    handshake = next(f for f in frames if f.payload_type == 5)
    assert b'"ActionType":"KMSEncryption"' in handshake.payload
    assert key["Arn"].encode() in handshake.payload
    assert {8, 9} <= {f.payload_type for f in frames}

    session_id = session_id_of(cluster, before)
    ended = finished(cluster, session_id)
    assert ended["Status"] == "Terminated"
    assert ended["Preferences"]["KmsKeyId"] == key["Arn"]
    # The node recorded it and sent it sealed: the server stores what it cannot read, and a
    # user allowed kms:Decrypt on the key plays it.
    recording = wait_for(
        lambda: session_of(cluster, session_id)["Sessions"][0].get("Recording"), 30,
        what="the node's recording",
    )  # fmt: skip
    assert recording["State"] == "Complete" and recording["RecordedBy"] == "node", recording
    assert recording["KmsKeyId"] == key["Arn"]
    stored = (cluster.data_dir / "recordings" / f"{session_id}.cast").read_bytes()
    assert stored.startswith(b"HWREC1 ") and OUTPUT_MARK not in stored
    played = cluster.cli("sessions", "get-recording", session_id, "-o", "-").stdout
    assert OUTPUT_MARK in played and b"done" in played
    # From the first prompt on (bash turns bracketed paste on as it prints it).
    assert 0 <= played.find(b"2004h") < played.find(b"secret-42"), played[:300]
    assert played.startswith(b'{"version": 2') or played.startswith(b'{"version":2'), played[:80]
    shown = cluster.cli("sessions", "get", session_id).stdout.decode()
    assert re.search(r"Recording +Complete, \d+ bytes", shown), shown
    assert f"encrypted end to end with {key['Arn']}" in shown, shown


def test_a_user_without_generate_data_key_is_refused_clearly(world) -> None:
    cluster, _, node, profile = world
    cluster.cli("iam", "create-user", "--user-name", "nokms")
    cluster.cli(
        "iam", "attach-user-policy", "--user-name", "nokms",
        "--policy-arn", "arn:aws:iam::aws:policy/SessionManagerUser",
    )  # fmt: skip
    created = cluster.cli_json("iam", "create-access-key", "--user-name", "nokms")["AccessKey"]
    own = profile.parent / "nokms.toml"
    text = profile.read_text()
    text = re.sub(r'access_key_id = "[^"]*"', f'access_key_id = "{created["AccessKeyId"]}"', text)
    text = re.sub(
        r'secret_access_key = "[^"]*"', f'secret_access_key = "{created["SecretAccessKey"]}"', text
    )
    own.write_text(text)
    before = history_ids(cluster)

    result = run(cluster, own, "start-session", "--target", node, input=TYPED)

    err = result.stderr.decode()
    assert result.returncode != 0
    assert "AccessDeniedException" in err and "kms:GenerateDataKey" in err, err
    assert OUTPUT_MARK not in result.stdout
    ended = finished(cluster, session_id_of(cluster, before))
    assert ended["Status"] == "Failed"
    assert "kms:GenerateDataKey" in ended["Details"], ended
    assert ended["Recording"]["State"] == "NotRecorded", ended
    shown = cluster.cli("sessions", "get", ended["SessionId"]).stdout.decode()
    assert "NotRecorded: the session was encrypted end to end" in shown, shown


def test_a_disabled_key_fails_the_session_with_the_reason(world) -> None:
    cluster, _, node, profile = world
    cluster.cli("kms", "disable-key", "alias/e2e")
    before = history_ids(cluster)
    try:
        result = run(cluster, profile, "start-session", "--target", node, input=TYPED)
    finally:
        cluster.cli("kms", "enable-key", "alias/e2e")
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "DisabledException" in err and "is disabled" in err, err
    ended = finished(cluster, session_id_of(cluster, before))
    assert ended["Status"] == "Failed"
    assert "DisabledException" in ended["Details"], ended


def test_a_node_decrypts_only_the_data_keys_of_its_own_active_sessions(world) -> None:
    """The node's kms:Decrypt (docs/protocol.md §7.9; server.sessionkeys): signed with the
    node's key, allowed only for a data key whose context names one of its active sessions."""
    import asyncio
    import base64

    from hatchway.agent.dialer import Dialer
    from hatchway.agent.state import AgentState
    from hatchway.transport.apiclient import ApiError

    cluster, _, node, _ = world
    api = cluster.api()
    ended = next(iter(history_ids(cluster)))

    def data_key(context: dict[str, str], key: str = "alias/e2e") -> bytes:
        body = {"KeyId": key, "NumberOfBytes": 64, "EncryptionContext": context}
        answer = api.call("GenerateDataKey", body, service="TrentService")
        return base64.b64decode(answer["CiphertextBlob"])

    async def node_decrypt(blob: bytes, context: dict[str, str]) -> str:
        dialer = Dialer(AgentState.load(cluster.root / "agent-e2e"))
        try:
            await dialer.decrypt_data_key(blob, context, "alias/e2e")
        except ApiError as exc:
            return f"{exc.code}: {exc.message}"
        finally:
            await dialer.close()
        return "decrypted"

    cases = {
        "an ended session": {"aws:ssm:SessionId": ended, "aws:ssm:TargetId": node},
        "another node": {"aws:ssm:SessionId": ended, "aws:ssm:TargetId": "mi-00000000000000000"},
        "not a session key": {"purpose": "recordings"},
    }
    for what, context in cases.items():
        outcome = asyncio.run(node_decrypt(data_key(context), context))
        assert outcome.startswith("AccessDeniedException: Node " + node), (what, outcome)
        assert "kms:Decrypt" in outcome


def test_exec_is_encrypted_too_stdout_stderr_and_exit_status(world) -> None:
    """NonInteractiveCommands: stdin, stdout, stderr (StdErr frames) and the exit status
    (ExitCode frame) are sealed, and still arrive apart and whole."""
    cluster, proxy, node, profile = world
    proxy.reset()
    script = "read x; echo out-$x-$((2*3)); echo err-$((3*3)) >&2; exit 3"
    result = run(cluster, profile, "exec", "--target", node, "--", "sh", "-c", script,
                 input=b"in" + b"put\n")  # fmt: skip
    assert result.returncode == 3, result.stderr.decode()
    assert result.stdout == b"out-input-6\n"
    assert b"err-9\n" in result.stderr
    capture = b"".join(up + down for up, down in proxy.snapshot())
    for mark in (b"out-input", b"err-9", b"input\n", b"EXIT_CODE"):
        assert mark not in capture, mark


def test_a_node_cannot_make_recording_keys_or_send_recordings_for_other_sessions(world) -> None:
    """The node's GenerateDataKey (recording keys) and recording upload are scoped like its
    Decrypt: only its own encrypted sessions; a session's recording is taken once."""
    import asyncio

    from hatchway.agent.dialer import Dialer
    from hatchway.agent.recording import SealedRecording, recording_context
    from hatchway.agent.state import AgentState
    from hatchway.transport.apiclient import ApiError

    cluster, _, _, _ = world
    history = [session_of(cluster, i)["Sessions"][0] for i in history_ids(cluster)]
    plain = next(s["SessionId"] for s in history if "KmsKeyId" not in s["Preferences"])
    recorded = next(
        s["SessionId"] for s in history if s.get("Recording", {}).get("RecordedBy") == "node"
    )

    async def attempt(session_id: str, upload: bytes | None) -> str:
        dialer = Dialer(AgentState.load(cluster.root / "agent-e2e"))
        try:
            if upload is None:
                await dialer.generate_recording_key("alias/e2e", recording_context(session_id))
            else:
                await dialer.upload_recording(session_id, upload, 1024)
        except ApiError as exc:
            return f"{exc.code}: {exc.message}"
        finally:
            await dialer.close()
        return "accepted"

    # A recording key for an ended session: refused.
    outcome = asyncio.run(attempt(recorded, None))
    assert outcome.startswith("AccessDeniedException: Node"), outcome
    assert "kms:GenerateDataKey" in outcome and "not an active session" in outcome
    # A recording for a session that was not encrypted (the gateway records those): refused.
    fake = SealedRecording(plain, "arn:x", bytes(32), b"blob", 0.0, 80, 24).finish(1.0)
    outcome = asyncio.run(attempt(plain, fake))
    assert outcome.startswith("AccessDeniedException:"), outcome
    assert "not encrypted end to end" in outcome
    # A second recording for a session that has one: refused (the first stays).
    fake = SealedRecording(recorded, "arn:x", bytes(32), b"blob", 0.0, 80, 24).finish(1.0)
    outcome = asyncio.run(attempt(recorded, fake + b"x" * 4096))
    assert outcome.startswith("ConflictException:"), outcome
    played = cluster.cli("sessions", "get-recording", recorded, "-o", "-").stdout
    assert OUTPUT_MARK in played
