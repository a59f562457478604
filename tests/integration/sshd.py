"""A real OpenSSH server (Debian's ``openssh-server``) on a free loopback port, for tests that
tunnel SSH through a session: its own host key, client key and config in a temporary
directory, run in the foreground (``sshd -D -e``) and stopped when the block ends."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    port: int
    key: Path
    user: str

    def options(self) -> list[str]:
        """``ssh`` options that trust nothing global and log in with the test key."""
        return [
            "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-F", "/dev/null",
        ]  # fmt: skip


def require_openssh() -> None:
    """Skip (with the reason) where OpenSSH is not installed; CI installs it."""
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        if os.environ.get("HATCHWAY_TEST_SSHD") == "require":
            raise AssertionError(f"{SSHD} or ssh is missing: apt-get install openssh-server")
        pytest.skip(f"OpenSSH is not installed ({SSHD}, ssh): apt-get install openssh-server")


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def openssh_server(root: Path) -> Iterator[Sshd]:
    """sshd on 127.0.0.1, accepting the current user with a fresh key."""
    require_openssh()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    _keygen(root / "host_key")
    _keygen(root / "client_key")
    authorized = root / "authorized_keys"
    authorized.write_text((root / "client_key.pub").read_text())
    os.chmod(authorized, 0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        f"PidFile {root / 'sshd.pid'}\nStrictModes no\nSubsystem sftp internal-sftp\n"
    )
    log = open(root / "sshd.log", "wb")  # closed below, after the process
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "sshd did not start: " + (root / "sshd.log").read_text()
                    ) from None
                time.sleep(0.05)
        yield Sshd(port, root / "client_key", getpass.getuser())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
