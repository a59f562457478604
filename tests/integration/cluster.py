"""Real processes on loopback: a server, agents and the CLI, started the way a user would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
HATCHWAY = str(BIN / "hatchway") if (BIN / "hatchway").exists() else shutil.which("hatchway")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    def start_server(self, *extra: str) -> None:
        self.port = self.port or free_port()
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
        log = open(self.root / "server.log", "ab")
        self.server_proc = subprocess.Popen(args, stdout=log, stderr=log, env=self.env())
        self.procs.append(self.server_proc)
        wait_for(self._healthy, 30, what="server /healthz")

    def _healthy(self) -> bool:
        if self.server_proc is not None and self.server_proc.poll() is not None:
            raise AssertionError("server exited: " + (self.root / "server.log").read_text())
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
        log = open(state.parent / f"{state.name}.log", "ab")
        proc = subprocess.Popen(
            [HATCHWAY, "agent", "run", "--state-dir", str(state)],
            stdout=log,
            stderr=log,
            env=self.env(),
        )
        self.procs.append(proc)
        wait_for(lambda: self.node_status(node) == "Online", 30, what=f"{node} Online")
        return proc

    def node_status(self, node: str) -> str | None:
        data = self.cli_json("nodes")
        for n in data["InstanceInformationList"]:
            if n["InstanceId"] == node:
                return n["PingStatus"]
        return None

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
