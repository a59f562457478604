"""Session types end to end with a real server, agent and CLI: exec (exit codes, stderr,
stdin, large output), interactive commands, port forwarding (many connections of random data
checked by SHA-256, half-close, refused destinations) and SSH through ``ssh-proxy`` to a real
sshd."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.cluster import HATCHWAY, Cluster, reap
from tests.integration.sshd import openssh_server

LISTENING = re.compile(rb"127\.0\.0\.1:(\d+)")


def hatchway(cluster: Cluster, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [HATCHWAY, *args], capture_output=True, env=cluster.env(), timeout=120, **kw
    )  # type: ignore[call-overload]


# ---- exec ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exec_exits_with_the_remote_exit_code(cluster: Cluster, node: str, code: int) -> None:
    result = hatchway(cluster, "exec", "--target", node, "--", "sh", "-c", f"exit {code}")
    assert result.returncode == code, result.stderr


def test_exec_keeps_stdout_and_stderr_apart(cluster: Cluster, node: str) -> None:
    result = hatchway(
        cluster, "exec", "--target", node, "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert result.returncode == 3
    assert result.stdout == b"out\n"
    assert b"err\n" in result.stderr and b"out" not in result.stderr


def test_exec_of_a_command_killed_by_a_signal(cluster: Cluster, node: str) -> None:
    result = hatchway(cluster, "exec", "--target", node, "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == 128 + signal.SIGTERM, result.stderr


def test_exec_arguments_keep_their_quoting(cluster: Cluster, node: str) -> None:
    result = hatchway(cluster, "exec", "--target", node, "--", "printf", "%s|", "a b", "$HOME", "")
    assert result.stdout == b"a b|$HOME||", result.stderr


def test_exec_forwards_stdin_to_its_end(cluster: Cluster, node: str) -> None:
    data = os.urandom(3 << 20)
    result = hatchway(cluster, "exec", "--target", node, "--", "sha256sum", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_exec_output_of_50_mib_arrives_intact(cluster: Cluster, node: str) -> None:
    """50 MiB of random data through the command and back: stdin in, stdout out."""
    data = os.urandom(50 << 20)
    result = hatchway(cluster, "exec", "--target", node, "--", "cat", input=data)
    assert result.returncode == 0, result.stderr[-500:]
    assert len(result.stdout) == len(data)
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(data).digest()


def test_exec_refuses_an_unknown_target_in_one_line(cluster: Cluster) -> None:
    result = hatchway(cluster, "exec", "--target", "mi-00000000000000000", "--", "true")
    assert result.returncode != 0
    assert b"Traceback" not in result.stderr and result.stderr.count(b"\n") == 1


# ---- documents ----------------------------------------------------------------------------


def test_interactive_command_document_runs_its_command(cluster: Cluster, node: str) -> None:
    result = hatchway(
        cluster, "start-session", "--target", node, "--document", "AWS-StartInteractiveCommand",
        "--parameters", "command=echo doc-$((2*21))", stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert b"doc-42" in result.stdout, result.stderr


def test_a_parameter_outside_its_pattern_is_refused_by_name(cluster: Cluster, node: str) -> None:
    result = hatchway(
        cluster, "start-session", "--target", node, "--document", "AWS-StartPortForwardingSession",
        "--parameters", "portNumber=99999",
    )  # fmt: skip
    assert result.returncode != 0
    assert b"portNumber" in result.stderr and b"Traceback" not in result.stderr


# ---- port forwarding ----------------------------------------------------------------------


@contextmanager
def serving(serve: Callable[[socket.socket], None], stop: threading.Event) -> Iterator[int]:
    """A TCP server on loopback running ``serve`` in a thread per connection until ``stop``
    (set on exit); yields its port."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        t.join(5)
        srv.close()


@contextmanager
def echo_server(*, reply_after_eof: bool = False) -> Iterator[int]:
    """A TCP server on loopback that echoes (or, after the client's EOF, sends back the
    SHA-256 of all it got, proving the half-close arrived)."""
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            digest = hashlib.sha256()
            while chunk := conn.recv(1 << 16):
                if reply_after_eof:
                    digest.update(chunk)
                else:
                    conn.sendall(chunk)
            if reply_after_eof:
                conn.sendall(digest.hexdigest().encode())

    with serving(serve, stop) as port:
        yield port


@contextmanager
def port_forward(cluster: Cluster, node: str, *args: str) -> Iterator[int]:
    proc = subprocess.Popen(
        [HATCHWAY, "port-forward", "--target", node, "--local-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=cluster.env(),
    )
    assert proc.stdout is not None
    try:
        seen = b""
        while (m := LISTENING.search(seen)) is None:
            line = proc.stdout.readline()
            assert line, f"port-forward printed no address: {seen!r}"
            seen += line
        yield int(m.group(1))
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends the session cleanly
        assert proc.wait(30) == 0
    finally:
        reap(proc)


def roundtrip(port: int, size: int) -> bool:
    data = os.urandom(size)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        got = bytearray()

        def read() -> None:
            while len(got) < size and (chunk := s.recv(1 << 16)):
                got.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        s.sendall(data)
        reader.join(120)
    return hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_port_forward_carries_many_connections_intact(cluster: Cluster, node: str) -> None:
    with echo_server() as target, port_forward(cluster, node, "--remote-port", str(target)) as p:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda n: roundtrip(p, n), [1 << 20] * 16 + [1, 7, 65537]))
        assert all(results)


def test_port_forward_propagates_half_close(cluster: Cluster, node: str) -> None:
    with (
        echo_server(reply_after_eof=True) as target,
        port_forward(cluster, node, "--remote-port", str(target)) as port,
    ):
        data = os.urandom(300_000)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # the destination sees EOF, then answers
            answer = b""
            while chunk := s.recv(1024):
                answer += chunk
        assert answer.decode() == hashlib.sha256(data).hexdigest()


def test_a_refused_destination_fails_that_connection_only(cluster: Cluster, node: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        dead = closed.getsockname()[1]
    with echo_server() as target:
        with port_forward(cluster, node, "--remote-port", str(dead)) as port:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"hello")
                with contextlib.suppress(ConnectionResetError):
                    assert s.recv(10) == b""  # closed (or reset) without data
            # the session lives on: a second connection is refused the same way, not hung
            with (
                socket.create_connection(("127.0.0.1", port), timeout=30) as s,
                contextlib.suppress(ConnectionResetError),
            ):
                assert s.recv(10) == b""
        with port_forward(
            cluster, node, "--remote-port", str(target), "--remote-host", "127.0.0.1"
        ) as port:
            assert roundtrip(port, 100_000)


@contextmanager
def moody_server() -> Iterator[int]:
    """A TCP server whose connections do what their first byte says: ``S`` never read again
    (a stalled destination), ``F`` flood the client with data, anything else echo."""
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        mode = conn.recv(1)
        if mode == b"S":
            held.append(conn)  # keep it open, never read
            return
        with conn:
            if mode == b"F":
                chunk = os.urandom(1 << 16)
                with contextlib.suppress(OSError):
                    while not stop.is_set():
                        conn.sendall(chunk)
                return
            conn.sendall(mode)
            while chunk := conn.recv(1 << 16):
                conn.sendall(chunk)

    try:
        with serving(serve, stop) as port:
            yield port
    finally:
        for conn in held:
            conn.close()


def test_a_stalled_connection_slows_only_its_own_stream(cluster: Cluster, node: str) -> None:
    """Per-stream credit (smux v2 between Hatchway's ends): a destination that stops reading,
    and a local client that stops reading, stall their own connection; another connection of
    the same session goes on. With smux v1 the first held the whole session's input."""
    with moody_server() as target, port_forward(cluster, node, "--remote-port", str(target)) as p:
        stalled = socket.create_connection(("127.0.0.1", p), timeout=60)
        flooded = socket.create_connection(("127.0.0.1", p), timeout=60)
        stalled.sendall(b"S")
        flooded.sendall(b"F")  # and never read: its data piles up towards us
        stop = threading.Event()

        def push() -> None:  # far more than every buffer on the way can hold
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    stalled.sendall(bytes(1 << 16))

        pusher = threading.Thread(target=push, daemon=True)
        pusher.start()
        try:
            flooded.recv(1)  # the flood has started
            for size in (1 << 20, 3 << 20):
                assert roundtrip_after(p, b"E", size)
        finally:
            stop.set()
            stalled.close()
            flooded.close()
            pusher.join(10)


def roundtrip_after(port: int, prefix: bytes, size: int) -> bool:
    """Like :func:`roundtrip`, after a first message that the echo sends back too."""
    data = prefix + os.urandom(size)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        got = bytearray()

        def read() -> None:
            while len(got) < len(data) and (chunk := s.recv(1 << 16)):
                got.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        s.sendall(data)
        reader.join(120)
    return hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_port_forward_reports_its_connections_on_the_session(cluster: Cluster, node: str) -> None:
    with echo_server() as target, port_forward(cluster, node, "--remote-port", str(target)) as p:
        assert roundtrip(p, 12345)
    mine = [
        s
        for s in cluster.sessions("History")
        if s["DocumentName"] == "AWS-StartPortForwardingSession"
    ]
    assert mine
    detail = cluster.cli_json("sessions", "get", mine[0]["SessionId"])
    connections = detail["Sessions"][0]["Connections"]
    assert any(
        c["Destination"].endswith(f":{target}") and c["BytesOut"] == 12345 for c in connections
    ), connections


# ---- SSH through a session ----------------------------------------------------------------


def test_openssh_through_ssh_proxy(cluster: Cluster, node: str, tmp_path: Path) -> None:
    with openssh_server(tmp_path / "sshd") as sshd:
        proxy = shlex.join([HATCHWAY, "ssh-proxy", "--target", "%h", "--port", str(sshd.port)])
        result = subprocess.run(
            ["ssh", *sshd.options(), "-o", f"ProxyCommand={proxy}", f"{sshd.user}@{node}",
             "echo ssh-$((6*7)); head -c 2000000 /dev/zero | sha256sum"],
            capture_output=True, env=cluster.env(), timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert b"ssh-42" in result.stdout
        zeros = hashlib.sha256(bytes(2_000_000)).hexdigest().encode()
        assert zeros in result.stdout
        # scp of a random file both ways through the same tunnel
        src = tmp_path / "up.bin"
        src.write_bytes(os.urandom(1 << 20))
        back = tmp_path / "down.bin"
        scp = ["scp", *sshd.options(), "-o", f"ProxyCommand={proxy}"]
        up = subprocess.run(
            [*scp, str(src), f"{sshd.user}@{node}:{tmp_path / 'remote.bin'}"],
            capture_output=True, env=cluster.env(), timeout=120,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        down = subprocess.run(
            [*scp, f"{sshd.user}@{node}:{tmp_path / 'remote.bin'}", str(back)],
            capture_output=True, env=cluster.env(), timeout=120,
        )  # fmt: skip
        assert down.returncode == 0, down.stderr
        assert back.read_bytes() == src.read_bytes()
