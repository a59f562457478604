"""The interactive shell through the real CLI in a pseudo-terminal: window size, resize,
Ctrl-C, UTF-8, exit status, termination and resume after the client's connection drops."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.cluster import HATCHWAY, RUN_AS, Cluster, reap, run_in_pty, wait_for
from tests.integration.proxy import CuttableProxy


class Terminal:
    """The local side of ``hatchway start-session`` running in a PTY."""

    def __init__(
        self,
        cluster: Cluster,
        node: str,
        rows: int = 30,
        cols: int = 100,
        env: dict[str, str] | None = None,
    ) -> None:
        self.pid, self.fd = run_in_pty(
            [HATCHWAY, "start-session", "--target", node], env or cluster.env(), rows, cols
        )
        self.buf = b""
        self.status: int | None = None

    def pump(self, timeout: float = 0.1) -> None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            with contextlib.suppress(OSError):
                self.buf += os.read(self.fd, 65536)

    def expect(self, pattern: bytes, timeout: float = 20.0) -> re.Match[bytes]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = re.search(pattern, self.buf)
            if m:
                return m
            self.pump()
        raise AssertionError(f"{pattern!r} not seen; got {self.buf[-400:]!r}")

    def type(self, text: str | bytes) -> None:
        os.write(self.fd, text.encode() if isinstance(text, str) else text)

    def resize(self, rows: int, cols: int) -> None:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.kill(self.pid, signal.SIGWINCH)

    def wait(self, timeout: float = 20.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.status = os.waitstatus_to_exitcode(status)
                for _ in range(20):  # what it wrote just before exiting
                    self.pump(0.05)
                return self.status
            self.pump()
        raise AssertionError(f"start-session did not exit; screen ends {self.buf[-300:]!r}")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


@pytest.fixture
def term(cluster: Cluster, node: str):
    t = Terminal(cluster, node)
    try:
        yield t
    finally:
        t.close()


def test_window_size_resize_utf8_and_exit_status(term: Terminal) -> None:
    term.expect(rb"\$ ")
    term.type("echo size-$(stty size | tr ' ' x)\r")
    term.expect(rb"size-30x100")
    term.resize(40, 120)
    # the resize is sent asynchronously; poll the remote view of it
    for _ in range(50):
        term.type("echo now-$(stty size | tr ' ' x)\r")
        try:
            term.expect(rb"now-40x120", timeout=0.5)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("resize never reached the remote terminal")
    term.type("printf 'u-%s\\n' 'h\u00e9llo-\u4e16\u754c'\r")
    term.expect("u-h\u00e9llo-\u4e16\u754c".encode())
    term.type("exit 5\r")
    assert term.wait() == 5


def test_ctrl_c_and_ctrl_z_go_to_the_remote_shell(term: Terminal) -> None:
    term.expect(rb"\$ ")
    term.type("sleep 1000\r")
    term.expect(rb"sleep 1000")
    time.sleep(0.3)  # let the remote sleep start before interrupting it
    term.type(b"\x03")
    term.expect(rb"\^C")
    term.type("echo after-sleep-$?\r")
    term.expect(rb"after-sleep-130")  # the remote sleep got SIGINT; the client lives on
    term.type("sleep 1000\r")
    time.sleep(0.3)
    term.type(b"\x1a")
    term.expect(rb"Stopped")
    term.type("fg\r")  # the stopped job comes back and takes another Ctrl-C
    term.expect(rb"fg\r\n.*sleep 1000\r\n")
    time.sleep(0.3)
    term.type(b"\x03")
    term.type("exit 0\r")
    assert term.wait() == 0


def test_login_environment_and_unprivileged_user(term: Terminal) -> None:
    term.expect(rb"\$ ")
    term.type("echo who:$(id -un):$TERM:$HOME:; sudo -n true 2>/dev/null; echo sudo-$?\r")
    m = term.expect(rb"who:([^:\s]+):([^:\s]+):([^:\s]+):")
    if os.geteuid() == 0:
        assert m.group(1) == RUN_AS.encode()  # the agent's --run-as-default
        assert m.group(3) == f"/home/{RUN_AS}".encode()
        term.expect(rb"sudo-[1-9]")
    assert m.group(2) == b"xterm-256color"
    term.type("exit\r")
    assert term.wait() == 0


def _active_session(cluster: Cluster, node: str) -> str:
    def find() -> str | None:
        for s in cluster.sessions("Active"):
            if s["Target"] == node and s["Status"] == "Connected":
                return str(s["SessionId"])
        return None

    return wait_for(find, 20, what="an active session")


def test_terminate_session_closes_both_ends(cluster: Cluster, node: str, term: Terminal) -> None:
    term.expect(rb"\$ ")
    term.type("echo pid-$$\r")
    shell_pid = int(term.expect(rb"pid-(\d+)").group(1))
    session_id = _active_session(cluster, node)
    cluster.cli("terminate-session", session_id)
    assert term.wait() == 255
    assert b"terminated" in term.buf.lower()
    history = {s["SessionId"]: s for s in cluster.sessions("History")}
    assert history[session_id]["Status"] == "Terminated"
    assert "EndDate" in history[session_id]
    # the node's side ended too: the session's shell is gone
    wait_for(lambda: not Path(f"/proc/{shell_pid}").exists(), 10, what="remote shell to end")


def test_client_connection_cut_mid_session_resumes_without_loss(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    proxy = CuttableProxy(cluster.port)
    profile = tmp_path / "via-proxy.toml"
    text = cluster.profile.read_text().replace(
        f"127.0.0.1:{cluster.port}", f"127.0.0.1:{proxy.port}"
    )
    profile.write_text(text)
    env = cluster.env() | {"HATCHWAY_CONFIG": str(profile)}
    proc = subprocess.Popen(
        [HATCHWAY, "start-session", "--target", node],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    out = b""

    def read_until(needle: bytes, timeout: float = 30) -> None:
        nonlocal out
        end = time.monotonic() + timeout
        while needle not in out and time.monotonic() < end:
            r, _, _ = select.select([proc.stdout], [], [], 0.1)
            if r:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
        assert needle in out, out[-300:]

    try:
        proc.stdin.write(b"for i in $(seq 1 400); do echo line-$i; sleep 0.005; done\n")
        proc.stdin.flush()
        read_until(b"line-50\r\n")
        connections_before = proxy.accepted
        proxy.cut()  # the client's WebSocket dies mid-stream
        read_until(b"line-400\r\n")
        assert proxy.accepted > connections_before  # it reconnected (ResumeSession + re-dial)
        proc.stdin.write(b"echo after-$((2+3))\n")
        proc.stdin.flush()
        read_until(b"after-5")
        proc.stdin.write(b"exit 4\n")
        proc.stdin.close()
        assert proc.wait(30) == 4
    finally:
        reap(proc)
        proxy.close()
    lines = re.findall(rb"line-(\d+)\r\n", out)
    assert [int(x) for x in lines] == list(range(1, 401))  # nothing lost, nothing doubled


def test_sessions_listing_shapes(cluster: Cluster, node: str) -> None:
    cluster.cli("start-session", "--target", node, "--reason", "audit me", input=b"exit\n")
    data = json.loads(cluster.cli("sessions", "--state", "History", "--output", "json").stdout)
    mine = [s for s in data["Sessions"] if s.get("Reason") == "audit me"]
    assert mine and mine[0]["Status"] == "Terminated"
    assert re.match(r"^admin-[0-9a-f]{17}$", mine[0]["SessionId"])
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$", mine[0]["StartDate"])
    table = cluster.cli("sessions", "--state", "History").stdout.decode()
    assert "SESSION ID" in table and mine[0]["SessionId"] in table
