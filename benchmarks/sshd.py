"""A private OpenSSH server on a free loopback port: the anchor every benchmark compares to.

    with openssh_server() as sshd:
        subprocess.run([*sshd.ssh_command(), "true"])

Keys (ed25519) and config live in a temporary directory removed on exit; the server runs in
the foreground (``sshd -D -e``) and is stopped when the block ends. No ControlMaster: every
``ssh`` run is a full connection, as every ``hatchway`` run is.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common import free_port, port_open, stop_process, tail, wait_for

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class SshServer:
    port: int
    key: Path
    user: str
    log: Path

    def ssh_options(self) -> list[str]:
        return [
            "-i",
            str(self.key),
            "-p",
            str(self.port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-l",
            self.user,
        ]

    def ssh_command(self, *ssh_flags: str) -> list[str]:
        """``ssh [flags] <options> 127.0.0.1``; append the remote command, if any."""
        return [require("ssh"), *ssh_flags, *self.ssh_options(), HOST]


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.stderr.write(
            f"benchmarks: `{tool}` not found; install OpenSSH (apt-get install openssh-server)\n"
        )
        raise SystemExit(2)
    return path


def ensure_sshd() -> None:
    """Exit 2 with advice when OpenSSH's server is not installed."""
    if not os.access(SSHD, os.X_OK):
        sys.stderr.write(
            f"benchmarks: {SSHD} is missing; the benchmarks compare against OpenSSH on this\n"
            "machine. Install it with:  apt-get install openssh-server\n"
        )
        raise SystemExit(2)
    require("ssh")
    require("ssh-keygen")


def _keygen(path: Path) -> None:
    subprocess.run(
        [require("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


@contextmanager
def openssh_server() -> Iterator[SshServer]:
    ensure_sshd()
    tmp = Path(tempfile.mkdtemp(prefix="hatchway-bench-sshd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        host_key = tmp / "host_ed25519"
        client_key = tmp / "client_ed25519"
        _keygen(host_key)
        _keygen(client_key)
        authorized = tmp / "authorized_keys"
        authorized.write_bytes(client_key.with_suffix(".pub").read_bytes())
        authorized.chmod(0o600)
        port = free_port()
        config = tmp / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {HOST}",
                    f"Port {port}",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {tmp / 'sshd.pid'}",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "UseDNS no",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privsep directory
        log = tmp / "sshd.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

        def ready() -> bool:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"sshd exited {proc.returncode}:\n{tail(log)}")
            return port_open(port)

        wait_for(ready, 15, "sshd to listen")
        server = SshServer(port=port, key=client_key, user=getpass.getuser(), log=log)
        check = subprocess.run(
            [*server.ssh_command(), "true"], capture_output=True, timeout=30, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(
                f"ssh to the private sshd failed ({check.returncode}): "
                f"{check.stderr.decode(errors='replace')}\n{tail(log)}"
            )
        yield server
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    with openssh_server() as sshd:
        print(f"sshd answered on 127.0.0.1:{sshd.port}; stopped again")
