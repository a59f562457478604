"""Real processes on loopback: a server, agents and the CLI, started the way a user would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hatchway.auth.sigv4 import Credentials
from hatchway.client.config import load_profile
from hatchway.transport.apiclient import ApiClient

BIN = Path(sys.executable).parent
HATCHWAY = str(BIN / "hatchway") if (BIN / "hatchway").exists() else shutil.which("hatchway")

# The user every agent the tests start runs sessions as (``--run-as-default``) when the tests
# run as root: a name of this test run's own, which the session fixture in conftest.py removes
# at the end, so the suite leaves no system user behind (the agent's default, hatchway-user,
# would stay on the machine for good).
RUN_AS = f"hwtest-{secrets.token_hex(4)}"

# What ``hatchway server`` prints on stderr once it listens (hatchway.server.app.print_banner).
LISTENING = re.compile(rb"hatchway server listening on (https?)://127\.0\.0\.1:(\d+)\n")


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nobody listens on while the block runs: connecting to it is refused.

    The port stays bound (without ``listen``) by this socket, so no other process can take it
    meanwhile, unlike a port that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Cluster:
    """A running server plus the agents a test starts; everything is stopped in ``close``."""

    root: Path
    port: int = 0
    tls: bool = True
    server_extra: tuple[str, ...] = ()
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server_proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "server"

    @property
    def profile(self) -> Path:
        return self.data_dir / "admin-profile.toml"

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca.pem"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HATCHWAY_CONFIG"] = str(self.profile)
        env.pop("HATCHWAY_PROFILE", None)
        return env

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    def start_server(self, *extra: str) -> None:
        """Start the server and wait until it serves.

        The first start listens on port 0 and learns the port the kernel chose from the
        server's banner (no race for a port that was free a moment ago); a restart listens on
        that same port again, since clients and agents re-dial the URL they know.
        """
        args = [
            HATCHWAY,
            "server",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            *extra,
        ]
        if not self.tls:
            args.append("--no-tls")
        self.server_extra = extra
        with open(self.server_log, "ab") as log:  # the child keeps its own copy of the fd
            start = log.tell()  # appended to across restarts: read only this run's part
            self.server_proc = subprocess.Popen(args, stdout=log, stderr=log, env=self.env())
        self.procs.append(self.server_proc)
        port = int(wait_for(lambda: self._listening_port(start), 30, what="server banner"))
        assert self.port in (0, port), f"restarted on port {port}, not {self.port}"
        self.port = port
        wait_for(self._healthy, 30, what="server /healthz")

    def _listening_port(self, offset: int) -> int | None:
        """The port in this run's banner, once the server printed it."""
        self._check_server_alive()
        with open(self.server_log, "rb") as f:
            f.seek(offset)
            m = LISTENING.search(f.read())
        if m is None:
            return None
        assert m.group(1).decode() == ("https" if self.tls else "http"), m.group(0)
        return int(m.group(2))

    def _check_server_alive(self) -> None:
        if self.server_proc is not None and self.server_proc.poll() is not None:
            raise AssertionError("server exited: " + self.server_log.read_text())

    def ensure_server(self) -> None:
        """Restart the server (same port, same options) if it is no longer running."""
        if self.server_proc is not None and self.server_proc.poll() is not None:
            self.start_server(*self.server_extra)

    def _healthy(self) -> bool:
        self._check_server_alive()
        if not self.profile.exists():
            return False
        ctx = ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else None
        try:
            with urllib.request.urlopen(self.endpoint + "/healthz", context=ctx, timeout=2) as r:
                return json.load(r) == {"status": "ok"}
        except OSError:
            return False

    def stop_server(self) -> None:
        if self.server_proc is not None:
            self.server_proc.send_signal(signal.SIGTERM)
            self.server_proc.wait(15)

    def cli(
        self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [HATCHWAY, *args], capture_output=True, env=self.env(), input=input, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"hatchway {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}"
            )
        return result

    def cli_json(self, *args: str) -> dict:
        return json.loads(self.cli(*args, "--output", "json").stdout)

    def activation(self, *extra: str) -> tuple[str, str]:
        act = self.cli_json("activation", "create", *extra)
        return act["ActivationId"], act["ActivationCode"]

    def register(self, name: str, *extra: str) -> tuple[str, Path]:
        aid, code = self.activation(*extra)
        state = self.root / f"agent-{name}"
        result = self.cli(
            "agent",
            "register",
            "--endpoint",
            self.endpoint,
            *(["--ca-file", str(self.ca_file)] if self.tls else []),
            "--activation-id",
            aid,
            "--activation-code",
            code,
            "--state-dir",
            str(state),
        )
        return result.stdout.decode().strip(), state

    def start_agent(self, state: Path, node: str) -> subprocess.Popen[bytes]:
        with open(state.parent / f"{state.name}.log", "ab") as log:
            proc = subprocess.Popen(
                [HATCHWAY, "agent", "run", "--state-dir", str(state), "--run-as-default", RUN_AS],
                stdout=log,
                stderr=log,
                env=self.env(),
            )
        self.procs.append(proc)
        wait_for(lambda: self.ping_status(node) == "Online", 30, what=f"{node} Online")
        return proc

    def node_status(self, node: str) -> str | None:
        data = self.cli_json("nodes")
        for n in data["InstanceInformationList"]:
            if n["InstanceId"] == node:
                return n["PingStatus"]
        return None

    def api(self) -> ApiClient:
        """The CLI's own API client, signed with the admin profile (in-process: no start-up)."""
        p = load_profile(str(self.profile), "default")
        return ApiClient(
            p.endpoint,
            region=p.region,
            credentials=Credentials(p.access_key_id, p.secret_access_key),
            ca_file=p.ca_file,
        )

    def ping_status(self, node: str) -> str | None:
        """The node's PingStatus, asked in-process (cheaper than ``node_status``'s CLI run)."""
        found = self.api().call(
            "DescribeInstanceInformation",
            {"Filters": [{"Key": "InstanceIds", "Values": [node]}]},
        )["InstanceInformationList"]
        return str(found[0]["PingStatus"]) if found else None

    def sessions(self, state: str = "Active") -> list[dict]:
        return self.cli_json("sessions", "--state", state)["Sessions"]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process if it still runs, wait for it, and close the pipes to it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):  # e.g. unwritten input to a dead process
                pipe.close()


@dataclass
class SharedAgent:
    """An agent that several tests use in turn: each checks it is up before relying on it."""

    cluster: Cluster
    node_id: str
    state: Path
    proc: subprocess.Popen[bytes]

    def ensure_online(self) -> None:
        """Restart the agent unless it is running and Online, so that a test that killed or
        broke it fails alone instead of failing every test after it."""
        if self.proc.poll() is None and self.cluster.ping_status(self.node_id) == "Online":
            return
        print(f"shared agent {self.node_id} was not Online: restarting it", file=sys.stderr)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = self.cluster.start_agent(self.state, self.node_id)


def run_in_pty(args: Sequence[str], env: dict[str, str], rows: int = 24, cols: int = 80):
    """Start a command with a new pseudo-terminal as its controlling terminal."""
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # child
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.execvpe(args[0], list(args), env)
    return pid, fd
